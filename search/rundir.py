"""One model's run directory: its layout, its manifest (``search.yaml``), where its files are and who writes it.

One model's run directory::

    RUN/                     = <storage path>/<search name>/<model>   (a local path, or s3://..., gs://...)
      search.yaml            the manifest: model, options, the space as searched, the data
      trials.jsonl           the run's ledger: every trial's creation, starts, per-epoch results, end (search.ledger)
      trials/<trial>/        state.pt (the trial's training state after its last epoch), model.pt (its best model)
      optuna.db              the Optuna study (``optuna-dashboard sqlite:///RUN/optuna.db``), unless --study-storage
      tensorboard/           the search's HParams experiment; <trial>/: per-epoch scalars and the trial's session
      bases.yaml, base_*     GATs/HIST/IGMTF: the pretrained bases (search.pretrained)
      best.yaml              the best configuration (evaluation.best)
      best_qlib.yaml         the same as a Qlib workflow config for ``qrun``
      .writer.lock           held by the one process running or resuming the search (``flock``; on object storage
      .writer.lease          a lease object instead, ``alphatune.storage.Lease``)

``RunDir`` says where the run is (``root``, through ``alphatune.storage``) and where the driver keeps its own files
while it works (``work``): the run directory itself when it is local (nothing is copied), a local copy when it is
in object storage, which ``push`` puts into the bucket (after every ended trial and at every stop: the study as a
consistent snapshot first, then the ledger, so the bucket's ledger is never behind its study) and ``pull`` brings
back. The trials write their ``trials/<trial>/`` files to the root from whichever node they run on. The layout is
the same on every backend.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from alphatune import spaces
from alphatune.storage import Lease, Location, StorageError, cache_dir
from alphatune.search.options import SearchOptions, space_origin

MANIFEST = "search.yaml"
TRIALS_DIR = "trials"
TENSORBOARD_DIR = "tensorboard"


class RunDirError(ValueError):
    """A path is not a run directory (or a search directory holding some), or its manifest is damaged."""


DRIVER_STUDY = "optuna.db"
LEDGER_FILE = "trials.jsonl"


@dataclass(frozen=True)
class RunDir:
    """One model's run directory (see the module doc): ``root`` where it is, ``work`` where the driver's files are."""

    root: Location
    work: Path

    @classmethod
    def at(cls, where: str | Path | Location) -> "RunDir":
        root = Location.of(where)
        if root.is_local:
            return cls(root, root.local)
        digest = hashlib.sha1(root.uri.encode()).hexdigest()[:16]
        return cls(root, cache_dir() / "runs" / f"{digest}-{root.name}")

    @property
    def name(self) -> str:
        """The model searched (the directory's name)."""
        return self.root.name

    @property
    def is_local(self) -> bool:
        return self.root.is_local

    def __str__(self) -> str:
        return self.root.uri

    def __truediv__(self, name: str) -> Location:
        return self.root / name

    def __fspath__(self) -> str:
        return str(self.root.local)

    @property
    def parent(self) -> Location:
        """The search directory holding this run (``alphatune search resume`` takes it)."""
        return self.root.parent

    def trial(self, trial_id: str) -> Location:
        """Where trial ``trial_id`` keeps its training state and best model."""
        return self.root / TRIALS_DIR / trial_id

    def checkpoints(self) -> set[str]:
        """The trials whose best model (``model.pt``) the driver can read, from one listing."""
        return {name.split("/")[0] for name in (self.root / TRIALS_DIR).files() if name.endswith("/model.pt")}

    def pull(self) -> None:
        """Bring the driver's files of a run in object storage into ``work`` (the run's files win over any local
        copy); nothing for a local run."""
        if self.is_local:
            return
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        for name in self.root.files():
            if name.startswith((f"{TRIALS_DIR}/", ".")) or "/." in name:
                continue
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((self.root / name).read_bytes())
        _pushed[self.root.uri] = _stamps(self.work)

    def push(self) -> None:
        """Put the driver's changed files of ``work`` into a run in object storage: the study as a consistent
        snapshot first, then the ledger, then the rest; nothing for a local run."""
        if self.is_local:
            return
        before = _pushed.setdefault(self.root.uri, {})
        stamps = _stamps(self.work)
        study = self.work / DRIVER_STUDY
        if study.is_file() and stamps.get(DRIVER_STUDY) != before.get(DRIVER_STUDY):
            (self.root / DRIVER_STUDY).write_bytes(_sqlite_snapshot(study))
        order = sorted(stamps, key=lambda name: (name != LEDGER_FILE, name))
        for name in order:
            if name != DRIVER_STUDY and stamps[name] != before.get(name):
                (self.root / name).write_bytes((self.work / name).read_bytes())
        before.update(stamps)


def as_run_dir(where: "RunDir | Location | Path | str") -> RunDir:
    """``where`` as a ``RunDir`` (a path or location is taken as the run directory's root)."""
    return where if isinstance(where, RunDir) else RunDir.at(where)


_pushed: dict[str, dict[str, tuple[int, int]]] = {}  # run root → (size, mtime) of each file as last pushed


def _stamps(directory: Path) -> dict[str, tuple[int, int]]:
    """Every driver file below ``directory`` (hidden ones and temporaries left out) → (size, mtime)."""
    out = {}
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            stat = path.stat()
            out[str(relative)] = (stat.st_size, stat.st_mtime_ns)
    return out


def _sqlite_snapshot(path: Path) -> bytes:
    """A consistent copy of a SQLite database that another connection may be writing (SQLite's backup API)."""
    with tempfile.TemporaryDirectory(prefix="alphatune-study-") as scratch:
        copy = Path(scratch) / "optuna.db"
        with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        return copy.read_bytes()


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


def write_manifest(run_dir: "RunDir | Location | Path", manifest: Manifest) -> None:
    run_dir = as_run_dir(run_dir)
    run_dir.work.mkdir(parents=True, exist_ok=True)
    dump_yaml(manifest.to_dict(), run_dir.work / MANIFEST)


def read_manifest(run_dir: "RunDir | Location | Path") -> Manifest:
    run_dir = as_run_dir(run_dir)
    path = run_dir.work / MANIFEST
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


def find_run_dirs(path: str | Path | Location) -> list[RunDir]:
    """``path`` itself when it is a run directory, else the run directories directly inside it (a search with
    several models), local or in object storage. Raises ``RunDirError`` when there is none."""
    location = Location.of(path)
    if (location / MANIFEST).is_file():
        return [RunDir.at(location)]
    found = [RunDir.at(child) for child in location.children() if (child / MANIFEST).is_file()]
    if not found:
        raise RunDirError(f"{location}: no run directory here (a run directory holds {MANIFEST})")
    return found


LOCK_FILE, LEASE_FILE = ".writer.lock", ".writer.lease"
_held: dict[str, Any] = {}  # run root → the open lock file (local) or the lease (object storage) this process holds


def _holder(path: Path) -> str:
    """Who holds a lock, as its file says (``pid ... on host ..., `command`, since ...``)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']} (`{info['command']}`, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire_writer(run_dir: RunDir | Path | str) -> None:
    """Make this process the run directory's one writer, for as long as it lives (or until ``release_writer``).

    Local: the kernel's lock (``flock`` on ``RUN/.writer.lock``): a driver that dies, however it dies, leaves no
    lock behind; on network storage ``flock`` must reach the server (NFSv4 does). In object storage: a lease object
    (``RUN/.writer.lease``, ``alphatune.storage.Lease``) renewed while this process lives, expiring a minute after
    it died. A second writer gets ``RunDirError`` naming the holder. Taking a lock this process already holds is a
    no-op."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    if run_dir.root.uri in _held:
        return
    if not run_dir.is_local:
        lease = Lease(run_dir.root / LEASE_FILE)
        try:
            lease.acquire(str(run_dir))
        except StorageError as error:
            raise RunDirError(str(error)) from None
        _held[run_dir.root.uri] = lease
        return
    run_dir.work.mkdir(parents=True, exist_ok=True)
    path = run_dir.work / LOCK_FILE
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
    _held[run_dir.root.uri] = handle


def check_not_held(run_dir: RunDir | Path | str) -> None:
    """``RunDirError`` naming the holder when another process holds ``run_dir``'s writer lock; creates nothing."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    if run_dir.root.uri in _held:
        return
    if not run_dir.is_local:
        held = Lease(run_dir.root / LEASE_FILE).holder()
        if held is not None and float(held.get("expires", 0)) > time.time():
            lease = Lease(run_dir.root / LEASE_FILE)
            raise RunDirError(f"{run_dir} is being written by pid {held.get('pid')} on {held.get('host')} "
                              f"(`{held.get('command')}`, since {held.get('since')}); wait for it to end or stop it "
                              f"(a holder that died lets go within {lease.ttl:g} s)")
        return
    path = run_dir.work / LOCK_FILE
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{run_dir} is being written by {_holder(path)}; wait for it to end or stop it") from None


def check_resumable(run_dirs: list[RunDir]) -> None:
    """``RunDirError`` (one line) for a run directory this process cannot write (read-only: it can still be exported
    elsewhere and evaluated) or that another process is writing; creates nothing."""
    for run_dir in run_dirs:
        reason = run_dir.root.unwritable()
        if reason is not None:
            raise RunDirError(f"{run_dir}: cannot resume a search there ({reason}); a read-only run can still be "
                              f"exported (search export --out DIR) and evaluated")
        check_not_held(run_dir)


def release_writer(run_dir: RunDir | Path | str) -> None:
    """Give up this process's lock on ``run_dir`` (no-op when it holds none)."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    held = _held.pop(run_dir.root.uri, None)
    if isinstance(held, Lease):
        held.release()
    elif held is not None:
        held.close()


@contextmanager
def writing(run_dirs: list[RunDir]) -> Iterator[None]:
    """Hold the writer lock of every run directory in ``run_dirs`` (those this process did not hold already are
    released at the end)."""
    taken = [run_dir for run_dir in run_dirs if run_dir.root.uri not in _held]
    try:
        for run_dir in taken:
            acquire_writer(run_dir)
        yield
    finally:
        for run_dir in taken:
            release_writer(run_dir)


def check_writable(directory: Path | Location, option: str) -> None:
    """Refuse (``RunDirError``, one line naming ``option``) a directory or location this process cannot write into,
    before any work and without creating anything locally (``alphatune.storage``)."""
    try:
        Location.of(directory).check(option)
    except StorageError as error:
        raise RunDirError(str(error)) from None


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
