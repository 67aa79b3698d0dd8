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
      .writer.lease          a lease object instead: alphatune.storage.writer)

``RunDir`` says where the run is (``root``, through ``alphatune.storage``) and where the driver keeps its own files
while it works (``work``): the run directory itself when it is local (nothing is copied), a local copy when it is
in object storage (``alphatune.storage.Mirror``), which ``push`` puts into the bucket (after every ended trial and
at every stop: the study as a consistent snapshot first) and ``pull`` brings back, unless the bucket confirms the
copy as it is; a copy the bucket does not confirm is set aside, never used. The trials write their
``trials/<trial>/`` (and the confirmation its ``confirm/``) files to the root from whichever node they run on. The
layout is the same on every backend.

Every write of a run's files goes through ``alphatune.storage`` (atomic files, the ledger's whole lines, one
writer per run); ``fault_guard`` turns a fault of the environment into one line that says how to go on.
"""

from __future__ import annotations

import _thread
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from alphatune import spaces
from alphatune.storage import (Location, Mirror, StorageError, cache_dir, disk_full, environment_fault, error_chain,
                               writer)
from alphatune.search.folds import FoldPlan
from alphatune.search.ledger import LEDGER, read_ledger
from alphatune.search.options import SearchOptions, space_origin

MANIFEST = "search.yaml"
TRIALS_DIR = "trials"
CONFIRM_DIR = "confirm"
TENSORBOARD_DIR = "tensorboard"


class RunDirError(ValueError):
    """A path is not a run directory (or a search directory holding some), or its manifest is damaged."""


DRIVER_STUDY = "optuna.db"


@dataclass(frozen=True)
class RunDir:
    """One model's run directory (see the module doc): ``root`` where it is, ``work`` where the driver's files are."""

    root: Location
    work: Path
    reading: bool = False  # a reader's own copy (``reader``): it is never pushed

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
        """The models (``<trial>/model.pt``, ``<trial>/fold<k>/model.pt``) the driver can read below ``trials/``,
        from one listing."""
        return {name for name in (self.root / TRIALS_DIR).files() if name.endswith("/model.pt")}

    @property
    def mirror(self) -> Mirror:
        """The driver's working copy of a run in object storage (``alphatune.storage.Mirror``: the bucket is the
        truth). The trials' folders are not part of it: the trials write them straight into the bucket."""
        return Mirror(self.root, self.work, skip=(TRIALS_DIR, CONFIRM_DIR), sqlite=(DRIVER_STUDY,), appended=(LEDGER,))

    @contextmanager
    def reader(self) -> Iterator["RunDir"]:
        """This run as a process that only reads it (``search export``) sees it. A run in object storage gets its
        reader's own local copy (``$ALPHATUNE_CACHE/exports/``), never the driver's working copy, which a search on
        this machine may be writing this moment (a reader pulling into it could set it aside under the search);
        two readers of one run on one machine take turns (the second is refused in one line while the first
        reads). A reader's copy is never pushed: what a reader writes goes to the root, or elsewhere. A local run is
        itself."""
        if self.is_local:
            yield self
            return
        copies = cache_dir() / "exports"
        copies.mkdir(parents=True, exist_ok=True)
        lock = writer.LocalLock(copies, f".{self.work.name}.lock")
        try:
            lock.acquire(f"the local copy {copies / self.work.name}")
        except StorageError as error:
            raise RunDirError(str(error)) from None
        try:
            yield replace(self, work=copies / self.work.name, reading=True)
        finally:
            lock.release()

    def fresh(self) -> str | None:
        """Before a new search here: set aside any local copy of a run in object storage (nothing of an earlier run
        of the same name may decide anything); a note when one was. Nothing for a local run."""
        return None if self.is_local else self.mirror.fresh()

    def pull(self) -> str | None:
        """Bring the driver's files of a run in object storage into ``work``, unless the bucket confirms the local
        copy as it is; a copy it does not confirm is set aside (the note says where). Nothing for a local run."""
        return None if self.is_local else self.mirror.pull()

    def push(self, complete: bool = True, touched: Iterable[str] | None = None) -> None:
        """Put the driver's changed files of ``work`` into a run in object storage (``Mirror.push``: the ledger's
        new lines as a part; the study as a consistent snapshot first when ``complete``, as at every stop, else
        only once it has doubled; ``touched``: the folders written since, when known); nothing for a local run. The lease is renewed first: a process whose lease was
        taken over pushes nothing, the run is someone else's now (``RunDirError``)."""
        if self.is_local:
            return
        if self.reading:
            raise RunDirError(f"{self}: a reader's copy is never pushed (write to the root instead)")
        taken = writer.confirm(self.root)
        if taken is not None:
            raise RunDirError(f"{taken}; this process stopped writing it")
        self.mirror.push(complete, touched)


def as_run_dir(where: "RunDir | Location | Path | str") -> RunDir:
    """``where`` as a ``RunDir`` (a path or location is taken as the run directory's root)."""
    return where if isinstance(where, RunDir) else RunDir.at(where)


@dataclass
class Manifest:
    """What a run directory was started with: the model, options and space, the data (``DataSpec.to_dict``) and
    the windows its trials are judged on (``search.folds.FoldPlan``)."""

    model: str
    options: SearchOptions
    space: spaces.Space
    data: dict[str, Any]
    folds: FoldPlan | None = None  # None: one fold, the data's own train and valid segments

    @property
    def fold_count(self) -> int:
        return 1 if self.folds is None else self.folds.count

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "space_file": space_origin(self.space.source), "space": self.space.to_dict(),
                "data": self.data, **({"folds": self.folds.to_dict()} if self.folds is not None else {}),
                "options": self.options.to_dict()}


def dump_yaml(data: Any, where: Path | Location, header: str = "") -> None:
    """Write ``data`` as block-style YAML (keys in order) that PyYAML and ruamel both read back the same, after
    ``header`` (comment lines), to a path or URI; atomically (``Location.write_text``): a reader sees the old file
    or the new one, never half of one."""
    Location.of(where).write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                                                          allow_unicode=True))


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RunDirError(f"{path}: invalid YAML: {exc}") from None


def write_manifest(run_dir: "RunDir | Location | Path", manifest: Manifest) -> None:
    run_dir = as_run_dir(run_dir)
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
        folds = FoldPlan.from_dict(data["folds"]) if data.get("folds") else None
    except (ValueError, TypeError, KeyError) as error:
        raise RunDirError(f"{path}: damaged manifest: {error}") from None
    return Manifest(model=data["model"], options=options, space=space, data=data["data"], folds=folds)


def recorded_address(run_dir: RunDir) -> str | None:
    """The ``--address`` the run's manifest records (read as plain YAML, before anything heavy loads); ``None``
    when it records none or cannot be read (``read_manifest`` says why, later)."""
    try:
        options = (yaml.safe_load((run_dir.root / MANIFEST).read_text()) or {}).get("options") or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return None
    return options.get("address") if isinstance(options, dict) else None


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


def acquire_writer(run_dir: RunDir | Path | str) -> None:
    """Make this process the run directory's one writer, for as long as it lives (or until ``release_writer``):
    ``alphatune.storage.writer`` (a kernel lock on a path, a lease in object storage). A second writer gets
    ``RunDirError`` naming the holder. A process whose lease is taken over is interrupted (``Ctrl-C``'s way out:
    its trials stop where they are) and says so (``lost_writer``). Taking a lock this process already holds is a
    no-op."""
    run_dir = as_run_dir(run_dir)
    try:
        writer.hold(run_dir.root, on_lost=lambda why: _thread.interrupt_main())
    except StorageError as error:
        raise RunDirError(str(error)) from None


def lost_writer() -> str | None:
    """Why this process stopped being the writer of a run it held (its lease was taken over), if it did."""
    return next((why for why in map(writer.lost, writer.held()) if why), None)


def check_not_held(run_dir: RunDir | Path | str) -> None:
    """``RunDirError`` naming the holder when another process holds ``run_dir``'s writer lock; creates nothing."""
    try:
        writer.check_free(as_run_dir(run_dir).root)
    except StorageError as error:
        raise RunDirError(str(error)) from None


def check_resumable(run_dirs: list[RunDir]) -> None:
    """``RunDirError`` (one line) for a run directory this process cannot write (read-only: it can still be exported
    elsewhere and evaluated) or that another process is writing, ``LedgerError`` for a local one whose ledger is
    damaged (a bucket's is read once it is brought down); creates nothing."""
    for run_dir in run_dirs:
        reason = run_dir.root.unwritable()
        if reason is not None:
            raise RunDirError(f"{run_dir}: cannot resume a search there ({reason}); a read-only run can still be "
                              f"exported (search export --out DIR) and evaluated")
        check_not_held(run_dir)
        if run_dir.is_local:
            read_ledger(run_dir.work)


def release_writer(run_dir: RunDir | Path | str) -> None:
    """Give up this process's lock on ``run_dir`` (no-op when it holds none)."""
    writer.let_go(as_run_dir(run_dir).root)


@contextmanager
def writing(run_dirs: list[RunDir]) -> Iterator[None]:
    """Hold the writer lock of every run directory in ``run_dirs`` (those this process did not hold already are
    released at the end)."""
    taken = [run_dir for run_dir in run_dirs if not writer.holds(run_dir.root)]
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


class EnvironmentFault(Exception):
    """A fault of the environment met by a worker (its storage failing, Ray's object lost), reported to the driver,
    which stops the search: ``text`` is the fault's one line; ``trial_id`` the search trial that met it, or
    ``confirmation_run`` the confirmation run (``<trial>-seed<S>``) that did (at most one of them); ``node`` where
    it happened, ``full`` whether a disk is full."""

    def __init__(self, text: str, trial_id: str | None = None, node: str | None = None, full: bool = False,
                 confirmation_run: str | None = None) -> None:
        super().__init__(text)
        self.text, self.trial_id, self.node, self.full = text, trial_id, node, full
        self.confirmation_run = confirmation_run

    @property
    def seen_by(self) -> str | None:
        """``trial X`` or ``confirmation run X-seedS``: who met it (``None``: not known)."""
        if self.trial_id:
            return f"trial {self.trial_id}"
        return f"confirmation run {self.confirmation_run}" if self.confirmation_run else None


@contextmanager
def fault_guard(run_dir: RunDir | Location | Path, resume_hint: str) -> Iterator[None]:
    """Turn a fault of the environment met while working on ``run_dir`` (the driver's own, or one a worker reported:
    ``EnvironmentFault``) into one ``RunDirError`` line that says what failed and how to go on: a full disk ("the
    disk holding RUN is full; free space, then <resume_hint>"), any other storage or cluster fault ("RUN: <what
    failed>; once that is fixed, <resume_hint>"). The trials stay as they were (unfinished ones resume). A writer
    thread that dies of it (TensorBoard's) stays quiet too: the main thread meets the same error and reports it."""
    where = as_run_dir(run_dir) if not isinstance(run_dir, Path) else run_dir
    default_hook = threading.excepthook

    def quiet_when_faulty(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or environment_fault(args.exc_value) is None:
            default_hook(args)

    def no_fault_traceback(record: logging.LogRecord) -> bool:  # Tune logs one when it cannot stop a trial
        return not (record.exc_info and record.exc_info[1] is not None
                    and environment_fault(record.exc_info[1]) is not None)

    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    threading.excepthook = quiet_when_faulty
    tune_logger.addFilter(no_fault_traceback)
    try:
        yield
    except Exception as error:
        fault = fault_in(error)
        if fault is not None:
            on = f" (seen by {fault.seen_by} on node {fault.node})" if fault.seen_by and fault.node else ""
            if fault.full:
                raise RunDirError(f"the disk holding {where} is full{on}; free space, then {resume_hint}") from None
            raise RunDirError(f"{where}: {fault.text}{on}; once that is fixed, {resume_hint}") from None
        if disk_full(error):
            disk = f"{where.work} (the local copy of {where})" if isinstance(where, RunDir) and not where.is_local \
                else where
            raise RunDirError(f"the disk holding {disk} is full; free space, then {resume_hint}") from None
        text = environment_fault(error)
        if text is not None:
            raise RunDirError(f"{where}: {text}; once that is fixed, {resume_hint}") from None
        raise
    finally:
        threading.excepthook = default_hook
        tune_logger.removeFilter(no_fault_traceback)


def fault_in(error: BaseException | None) -> EnvironmentFault | None:
    """The ``EnvironmentFault`` ``error`` is or was raised from (Tune may wrap what its stopper raised), if any."""
    return next((link for link in error_chain(error) if isinstance(link, EnvironmentFault)), None)
