"""What a search is asked to do: one validated dataclass, filled from the command line or from code.

Everything is checked here, before Ray starts: model names, space files, sampler availability, budgets and
resources. A bad value raises ``OptionError`` with one line naming the option and the value.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import models
import spaces
from datasets.storage import META

SAMPLERS = ("tpe", "random", "cmaes", "qmc")
# Set by Ray in the environment of a driver started with `ray job submit`.
RAY_JOB_ENVIRONMENT = "RAY_JOB_CONFIG_JSON_ENV_VAR"
METRICS = ("valid_ic", "score")
# A bare ``python -m search run`` is a short real search: embedded data with a three-month training window.
QUICK_SEGMENTS = {"train": ("2018-10-01", "2018-12-31"), "valid": ("2019-01-01", "2019-02-28"),
                  "test": ("2019-03-01", "2019-11-28")}


class OptionError(ValueError):
    """A search option is invalid; the message names the option and the value."""


@dataclass
class SearchOptions:
    """A search: which models, over which spaces, on which data, with what budget, where the results go.

    ``spaces_by_model`` maps a model to its space file (default: the shipped one). ``data`` is a prepared
    dataset directory or a source to prepare (``None``: the embedded data); ``segments`` overrides the date
    ranges (``None`` per segment: the source's default; all ``None`` with ``data=None``: ``QUICK_SEGMENTS``).
    ``max_epochs`` caps every trial (the space's ``n_epochs`` still applies when smaller); ASHA stops trials at
    rungs ``grace_epochs · reduction_factor^k``. ``storage_path/name/<model>`` is each model's run directory.
    ``pretrained`` is where GATs, HIST and IGMTF trials start (``search.pretrained``): ``"pretrain"`` (what
    ``None``, the default, means), ``"none"`` or a base file; the row models ignore it.
    """

    models: list[str] = field(default_factory=lambda: ["lstm"])
    space_files: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    segments: dict[str, tuple[str, str] | None] = field(default_factory=lambda: dict.fromkeys(QUICK_SEGMENTS))
    market: str = "csi300"
    benchmark: str = "SH000300"
    concepts: str | None = None
    samples: int = 8
    max_epochs: int = 6
    grace_epochs: int = 1
    reduction_factor: float = 2.0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    sampler: str = "tpe"
    seed: int | None = 0
    metric: str = "valid_ic"
    storage_path: str = "runs"
    name: str = ""
    max_failures: int = 2
    reuse_actors: bool = True
    address: str | None = None
    dashboard: bool = False
    progress_seconds: float = 10.0
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = "search-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")

    def validate(self) -> dict[str, spaces.Space]:
        """Check every option; returns each model's loaded, validated space. Raises ``OptionError``/``SpaceError``."""
        if not self.models:
            raise OptionError("--model: name at least one model")
        for name in self.models:
            if name not in models.REGISTRY:
                raise OptionError(f"--model: unknown model {name!r}; known: {', '.join(models.REGISTRY)}, or all")
        if len(set(self.models)) != len(self.models):
            raise OptionError(f"--model: a model is named twice in {','.join(self.models)}")
        stray = set(self.space_files) - set(self.models)
        if stray:
            raise OptionError(f"--space: given for {sorted(stray)}, which are not searched ({','.join(self.models)})")
        _positive_int("--samples", self.samples)
        _positive_int("--max-epochs", self.max_epochs)
        _positive_int("--grace-epochs", self.grace_epochs)
        if self.grace_epochs > self.max_epochs:
            raise OptionError(f"--grace-epochs {self.grace_epochs} exceeds --max-epochs {self.max_epochs}")
        if not (isinstance(self.reduction_factor, (int, float)) and math.isfinite(self.reduction_factor)
                and self.reduction_factor > 1):
            raise OptionError(f"--reduction-factor must be a number > 1; got {self.reduction_factor!r}")
        if not self.cpus_per_trial > 0:
            raise OptionError(f"--cpus-per-trial must be > 0; got {self.cpus_per_trial!r}")
        if not self.gpus_per_trial >= 0:
            raise OptionError(f"--gpus-per-trial must be ≥ 0 (fractions share a GPU); got {self.gpus_per_trial!r}")
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise OptionError(f"--gpus-per-trial above 1 must be a whole number; got {self.gpus_per_trial!r}")
        if self.max_concurrent is not None:
            _positive_int("--max-concurrent", self.max_concurrent)
        if RAY_JOB_ENVIRONMENT in os.environ and not Path(self.storage_path).expanduser().is_absolute():
            raise OptionError(f"--storage-path {self.storage_path} is relative, but this search runs as a Ray job, "
                              f"whose working directory is Ray's temporary copy of the project: results would "
                              f"vanish with the cluster; give an absolute path (on several nodes: one they share)")
        if self.max_failures < -1:
            raise OptionError(f"--max-failures must be ≥ 0 (or -1 for unlimited); got {self.max_failures}")
        if self.sampler not in SAMPLERS:
            raise OptionError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.metric not in METRICS:
            raise OptionError(f"--metric must be one of {', '.join(METRICS)}; got {self.metric!r}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise OptionError(f"--name must be a plain directory name; got {self.name!r}")
        if self.data is not None and not Path(self.data).expanduser().exists():
            raise OptionError(f"--data: {self.data} does not exist")
        if self.concepts is not None and not Path(self.concepts).expanduser().is_file():
            raise OptionError(f"--concepts: {self.concepts} is not a file")
        needs_concepts = [name for name in self.models if models.REGISTRY[name].uses_concepts]
        if (needs_concepts and self.concepts is None and self.data is not None
                and not (Path(self.data).expanduser() / META).is_file()):
            raise OptionError(f"--model {needs_concepts[0]} needs a stock→concept table and {self.data} has none: "
                              f"pass --concepts FILE (CSV or Parquet with symbol and concept columns)")
        for segment, span in self.segments.items():
            if span is not None and (len(span) != 2 or not all(isinstance(x, str) and x for x in span)):
                raise OptionError(f"--{segment}: expected START:END dates; got {span!r}")
        if self.pretrained is not None and not (isinstance(self.pretrained, str) and self.pretrained):
            raise OptionError(f"--pretrained must be pretrain, none or a file; got {self.pretrained!r}")
        if self.uses_base_file and any(models.REGISTRY[name].pretrained_base for name in self.models):
            from search.pretrained import read_base
            try:
                read_base(self.pretrained)
            except (FileNotFoundError, ValueError) as error:
                raise OptionError(f"--pretrained: {error}") from None
        return {name: spaces.load(self.space_files.get(name, name), model=name) for name in self.models}

    @property
    def uses_base_file(self) -> bool:
        """Whether ``pretrained`` names a base file (not ``pretrain``/``none``/unset)."""
        return self.pretrained not in (None, "pretrain", "none")

    @property
    def search_dir(self) -> Path:
        """``storage_path/name``: one run directory per model inside it."""
        return Path(self.storage_path).expanduser().resolve() / self.name

    def run_dir(self, model: str) -> Path:
        return self.search_dir / model

    def effective_segments(self) -> dict[str, tuple[str, str] | None]:
        """The segments to prepare: the quick default windows for a bare run on the embedded data."""
        if self.data is None and all(span is None for span in self.segments.values()):
            return dict(QUICK_SEGMENTS)
        return dict(self.segments)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["segments"] = {k: list(v) if v is not None else None for k, v in self.segments.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchOptions":
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptionError(f"unknown search options {unknown} in the run's manifest")
        known["segments"] = {k: tuple(v) if v is not None else None for k, v in known.get("segments", {}).items()}
        return cls(**known)


def _positive_int(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{option} must be a positive integer; got {value!r}")
