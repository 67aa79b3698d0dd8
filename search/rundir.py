"""The layout of a run directory and its manifest (``search.yaml``), which resume and export read back.

One model's run directory::

    RUN/                     = <storage path>/<search name>/<model>
      search.yaml            the manifest: model, options, the space as searched, the data
      optuna.db              the Optuna study (``optuna-dashboard sqlite:///RUN/optuna.db``)
      tune/                  the Ray Tune experiment (trial results, checkpoints, searcher state)
      tensorboard/<trial>/   per-epoch scalars and HParams (``tensorboard --logdir RUN``)
      best.yaml              the best configuration (docs/design.md)
      best_qlib.yaml         the same as a Qlib workflow config for ``qrun``
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import spaces
from search.options import SearchOptions

MANIFEST = "search.yaml"
TUNE_DIR = "tune"
TENSORBOARD_DIR = "tensorboard"


class RunDirError(ValueError):
    """A path is not a run directory (or a search directory holding some), or its manifest is damaged."""


@dataclass
class Manifest:
    """What a run directory was started with."""

    model: str
    options: SearchOptions
    space: spaces.Space
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "space_file": self.space.source, "space": self.space.to_dict(),
                "data": self.data, "options": self.options.to_dict()}


def dump_yaml(data: Any, path: Path, header: str = "") -> None:
    """Write ``data`` as block-style YAML (keys in order) that PyYAML and ruamel both read back the same, after
    ``header`` (comment lines); atomically: a reader sees the old file or the new one, never half of one."""
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RunDirError(f"{path}: invalid YAML: {exc}") from None


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(manifest.to_dict(), run_dir / MANIFEST)


def read_manifest(run_dir: Path) -> Manifest:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {MANIFEST})")
    data = read_yaml(path)
    if not isinstance(data, dict) or not {"model", "space", "data", "options"} <= set(data):
        raise RunDirError(f"{path}: a manifest needs model, space, data and options")
    space_data = data["space"]
    if isinstance(space_data, dict) and isinstance(space_data.get("fixed"), dict):  # earlier versions kept it there
        space_data = {**space_data, "fixed": {k: v for k, v in space_data["fixed"].items() if k != "metric"}}
    try:
        space = spaces.load_dict(space_data, source=str(data.get("space_file") or path))
        options = SearchOptions.from_dict(data["options"], model=data["model"])
    except (ValueError, TypeError) as error:
        raise RunDirError(f"{path}: damaged manifest: {error}") from None
    return Manifest(model=data["model"], options=options, space=space, data=data["data"])


def find_run_dirs(path: str | Path) -> list[Path]:
    """``path`` itself when it is a run directory, else the run directories directly inside it (a search with
    several models). Raises ``RunDirError`` when there is none."""
    path = Path(path).expanduser().resolve()
    if (path / MANIFEST).is_file():
        return [path]
    found = sorted(child for child in path.iterdir() if (child / MANIFEST).is_file()) if path.is_dir() else []
    if not found:
        raise RunDirError(f"{path}: no run directory here (a run directory holds {MANIFEST})")
    return found
