"""The layout of a run directory and its manifest (``search.yaml``), which resume and export read back.

One model's run directory::

    RUN/                     = <storage path>/<search name>/<model>
      search.yaml            the manifest: model, options, the space as searched, the data
      trials.jsonl           the run's ledger: every trial's start, per-epoch results and end (search.ledger)
      trials/<trial>/        state.pt (the trial's training state after its last epoch), model.pt (its best model)
      optuna.db              the Optuna study (``optuna-dashboard sqlite:///RUN/optuna.db``)
      tensorboard/           the search's HParams experiment; <trial>/: per-epoch scalars and the trial's session
      bases.yaml, base_*     GATs/HIST/IGMTF: the pretrained bases (search.pretrained)
      best.yaml              the best configuration (docs/design.md)
      best_qlib.yaml         the same as a Qlib workflow config for ``qrun``
      .writer.lock           held by the one process running or resuming the search (``acquire_writer``)
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from alphatune import spaces
from alphatune.storage import unwritable
from alphatune.search.options import SearchOptions, space_origin

MANIFEST = "search.yaml"
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
        return {"model": self.model, "space_file": space_origin(self.space.source), "space": self.space.to_dict(),
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


LOCK_FILE = ".writer.lock"
_held: dict[Path, Any] = {}  # run directory → the open lock file this process holds


def _holder(path: Path) -> str:
    """Who holds a lock, as its file says (``pid ... on host ..., `command`, since ...``)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']} (`{info['command']}`, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire_writer(run_dir: Path) -> None:
    """Make this process the run directory's one writer, for as long as it lives (or until ``release_writer``).

    The lock is the kernel's (``flock`` on ``RUN/.writer.lock``): a driver that dies, however it dies, leaves no
    lock behind. A second writer gets ``RunDirError`` naming the holder. Taking a lock this process already holds
    is a no-op. On network storage, ``flock`` must reach the server (NFSv4 does)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirError(f"{run_dir} is being written by {_holder(path)}; wait for it to end or stop it") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                             "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}))
    handle.flush()
    _held[run_dir] = handle


def check_not_held(run_dir: Path) -> None:
    """``RunDirError`` naming the holder when another process holds ``run_dir``'s writer lock; creates nothing."""
    path = Path(run_dir) / LOCK_FILE
    if Path(run_dir).resolve() in _held or not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{Path(run_dir).resolve()} is being written by {_holder(path)}; wait for it to end or "
                              f"stop it") from None


def check_resumable(run_dirs: list[Path]) -> None:
    """``RunDirError`` (one line) for a run directory this process cannot write (read-only: it can still be exported
    elsewhere and evaluated) or that another process is writing; creates nothing."""
    for run_dir in run_dirs:
        reason = unwritable(run_dir)
        if reason is not None:
            raise RunDirError(f"{run_dir}: cannot resume a search there ({reason}); a read-only run can still be "
                              f"exported (search export --out DIR) and evaluated")
        check_not_held(run_dir)


def release_writer(run_dir: Path) -> None:
    """Give up this process's lock on ``run_dir`` (no-op when it holds none)."""
    handle = _held.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        handle.close()


@contextmanager
def writing(run_dirs: list[Path]) -> Iterator[None]:
    """Hold the writer lock of every run directory in ``run_dirs`` (those this process did not hold already are
    released at the end)."""
    taken = [Path(run_dir).resolve() for run_dir in run_dirs if Path(run_dir).resolve() not in _held]
    try:
        for run_dir in taken:
            acquire_writer(run_dir)
        yield
    finally:
        for run_dir in taken:
            release_writer(run_dir)


def check_writable(directory: Path, option: str) -> None:
    """Refuse (``RunDirError``, one line naming ``option``) a directory this process cannot write into, before any
    work and without creating anything (``unwritable``)."""
    reason = unwritable(directory)
    if reason is not None:
        raise RunDirError(f"{option} {directory}: cannot write there ({reason})")


_DISK_FULL = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) says the disk is full: ``ENOSPC``/``EDQUOT``, SQLite's
    "database or disk is full" (under Optuna's and SQLAlchemy's wrappers), or those words in a message."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(error) for words in _DISK_FULL):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def disk_guard(directory: Path, resume_hint: str) -> Iterator[None]:
    """Turn a full disk under ``directory`` into one ``RunDirError`` line that says how to go on. A writer thread
    that dies of it (TensorBoard's) stays quiet too: the main thread meets the same error and reports it."""
    default_hook = threading.excepthook

    def quiet_when_full(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or not disk_full(args.exc_value):
            default_hook(args)

    def no_full_disk_traceback(record: logging.LogRecord) -> bool:  # Tune logs one when it cannot stop a trial
        return not (record.exc_info and record.exc_info[1] is not None and disk_full(record.exc_info[1]))

    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    threading.excepthook = quiet_when_full
    tune_logger.addFilter(no_full_disk_traceback)
    try:
        yield
    except Exception as error:
        if disk_full(error):
            raise RunDirError(f"the disk holding {directory} is full; free space, then {resume_hint}") from None
        raise
    finally:
        threading.excepthook = default_hook
        tune_logger.removeFilter(no_full_disk_traceback)
