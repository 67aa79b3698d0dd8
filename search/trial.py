"""The trial function: the one place where a model, the shared dataset and Ray Tune meet.

``train_run`` is the search's one training path: a Tune trial (``train_trial``) and a confirmation run
(``search.confirm``) both train through it, into a directory of the run (``trials/<id>/``, ``confirm/<id>/``).
A trial trains one configuration with the shared trainer, whose ``metric`` is the search objective's
(``search.objective``): the trainer's early stopping, best epoch and restored weights follow the same metric that
ASHA and Optuna judge. After every epoch the trial

1. when the epoch is the best so far, writes the model to ``RUN/trials/<trial id>/model.pt`` (``Trainer.save``:
   what ``best.yaml`` points to and ``models.load_checkpoint`` reads) and that epoch's IC on every validation day
   to ``valid_ic.json`` (``write_daily_ic``: what the overfitting report reads), and hands the trainer's whole training
   state to a writer thread (``StateWriter``) that saves it as ``state.pt`` while training goes on (atomically:
   a kill leaves the previous state whole; a trial's last state is written before its last report). Both go
   through the storage layer (``alphatune.storage``): to a local or shared path, or straight into object
   storage, from whichever node the trial runs on; a node that cannot see the run directory refuses to train
   (``check_visible``), so no result is written where the driver cannot read it;
2. reports to Tune (``tune.report``): ``epoch``, ``train_loss``, ``valid_loss``, ``valid_ic``, ``seconds`` (the
   epoch's training and validation time), the kept epoch and its numbers (``best_epoch``, ``best_valid_loss``,
   ``best_valid_ic``), ``final`` (no epoch follows by the trial's own budget or early stopping, so a trial that
   ends without ``final`` was stopped by ASHA), ``precision`` (what the trainer really trains in: ``float32``,
   or ``bfloat16``/``float16`` under amp where the device has it), ``started_at`` and ``reported_at`` (Unix times
   of the trial function's start and of the report, to the microsecond) and, for GATs/HIST/IGMTF, ``pretrained``.

A trial that takes over the Optuna trial of one interrupted before Tune recorded it (``continues`` in its config,
``search.searcher``) starts from that trial's saved state. A trial started again under the same id (its worker died and Tune retries it, or an interrupted search resumes)
reports its saved epoch again (its report may have died with the old process) and continues from its
``state.pt`` exactly where it was (same weights, optimizer moments and random draws); one whose state is already
final only reports. Nothing goes through Tune's checkpoints.

GATs, HIST and IGMTF start from the search's pretrained base (``search.pretrained``) when the trial's
``base_model`` and sizes match it, else from random weights; ``pretrained`` says which (the base file, ``none``,
or ``none (shape mismatch: ...)``).

A non-finite value of the searched metric stops the trial at once (the callback returns ``True``); the report
carries it, so the driver records the trial as failed. It is not raised as an error, so Tune does not retry it.

**Whose fault** (``reporting_failures``): the trial function never raises. A failure of the trial's own (its model
raised, a bad value) is one report, ``error`` (the exception's last line) with ``traceback`` (where its traceback
was written, ``error.txt`` in the trial's directory): the driver records the trial as failed, and Tune does not
retry what would fail again. A fault of the environment (``alphatune.storage.environment_fault``: the run's
storage full, unwritable, unreachable, Ray's object lost) is one report, ``fault`` (with ``full`` and the
``node``): the driver stops the search within seconds with one line, and nothing is recorded against the trial,
which resumes from its last saved epoch. A Tune error is then always the environment's too (the worker or its
node died): Tune retries it (``--max-failures``), and beyond that the trial is left unfinished, not failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import torch
from ray import tune

from alphatune import models
from alphatune.search.folds import fold_dir
from alphatune.search.objective import finite, objective
from alphatune.models.bases import bases_from_dicts, choose
from alphatune.models.fitting import initial_network
from alphatune.search.rundir import MANIFEST, RunDir
from alphatune.search.scheduler import CONTINUES
from alphatune.storage import Location, StorageError, disk_full, environment_fault, save_tensors
from alphatune.spaces import Space

MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"
DAILY_IC_FILE = "valid_ic.json"
ERROR_FILE = "error.txt"
REPORTED = ("epoch", "train_loss", "valid_loss", "valid_ic", "seconds", "best_epoch", "best_valid_loss",
            "best_valid_ic", "final")
# What the run's ledger keeps of a report: the epoch's numbers and how the trial runs.
FOLD_KEYS = ("fold", "folds", "fold_epoch", "fold_final", "fold_best_valid_ic", "fold_best_valid_loss",
             "fold_best_epoch")  # a walk-forward fold's place in a report (fold_report)
KEPT = (*REPORTED, *FOLD_KEYS, "pretrained", "precision", "started_at", "reported_at", "pid", "node_ip", "node_id")
ERROR, FAULT = "error", "fault"  # a report's keys for a failure of the trial's own, and a fault of the environment


def report_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a trial's report (as Tune hands it on) that the run's ledger keeps."""
    return {key: result[key] for key in KEPT if key in result}


class StateWriter:
    """Writes a trial's training states on a thread of its own, in order, so that an epoch's report does not wait
    for the disk. A state is a snapshot (``Trainer.training_state``); ``flush`` waits until every state handed in
    is on disk. At most one state waits behind the one being written (``submit`` blocks while one waits), so a slow
    disk slows training instead of filling memory with snapshots. A process killed meanwhile leaves the previous
    state whole (each write is atomic), from which a restarted trial trains the lost epoch again exactly as before:
    the state on disk is at most one epoch behind the last report."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[dict[str, Any], Location] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="alphatune-state-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is not None and self._error is None:
                    state, where = job
                    save_tensors(state, where)
            except BaseException as error:  # a full disk: raised in the training thread at the next submit or flush
                self._error = error
            finally:
                self._jobs.task_done()
            if job is None:
                return

    def submit(self, state: dict[str, Any], where: Location) -> None:
        self._raise()
        self._jobs.put((state, where))

    def flush(self) -> None:
        """Wait until every submitted state is written; raise the writer's error, if any."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def check_visible(run: RunDir) -> None:
    """Refuse to train on a node that cannot see the run directory (its manifest is what the driver wrote first):
    its results would be lost to the driver. ``StorageError`` (a fault of the environment) naming the node and the
    run."""
    if not (run.root / MANIFEST).is_file():
        raise StorageError(f"node {node_address()} cannot see the run directory {run}: a local --storage-path must be "
                          f"storage every node mounts (NFS), or use object storage (s3://...)")


def node_address() -> str:
    """This node's address as Ray knows it (the host name outside Ray)."""
    try:
        import ray
        return ray.util.get_node_ip_address()
    except Exception:  # not inside Ray
        return socket.gethostname()


def node_id() -> str | None:
    """This node's Ray id (two nodes on one machine share an address, never an id); ``None`` outside Ray."""
    try:
        import ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def failure_report(error: BaseException, directory: Location | None) -> dict[str, Any]:
    """What a run reports instead of raising ``error`` (see the module doc): ``fault`` for the environment's,
    ``error`` for its own (its traceback written to ``directory/error.txt`` when it can be)."""
    fault = environment_fault(error)
    where = {"node": node_address(), "node_id": node_id()}
    if fault is not None:
        return {FAULT: fault, "full": disk_full(error), **where}
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[-1][:500]}" if text else type(error).__name__
    report: dict[str, Any] = {ERROR: line, **where}
    if directory is not None:
        try:
            (directory / ERROR_FILE).write_text("".join(traceback.format_exception(error)))
            report["traceback"] = str(directory / ERROR_FILE)
        except Exception:  # the traceback is a courtesy; the error line is what counts
            pass
    return report


@contextlib.contextmanager
def reporting_failures(report: Callable[[dict[str, Any]], None], directory: Location | None) -> Iterator[None]:
    """Run the body; an exception it raises becomes one ``failure_report`` handed to ``report`` (see the module
    doc). ``SystemExit`` and ``KeyboardInterrupt`` (how Ray stops a trial) pass through."""
    try:
        yield
    except Exception as error:
        report(failure_report(error, directory))


def trial_hyperparameters(space: Space, config: dict[str, Any], metric: str, max_epochs: int
                          ) -> models.Hyperparameters:
    """The hyperparameters a trial trains with, checked once: the space's fixed and searched values, the seed the
    searcher drew for it (``config["seed"]``, when the space leaves the seed open), the trainer's ``metric`` set by
    the search objective, ``n_epochs`` capped at ``max_epochs``, Qlib's defaults for the rest."""
    drawn = {"seed": config["seed"]} if "seed" in config and "seed" not in space.params else {}
    hp = models.get_spec(space.model).hyperparameters({**space.hyperparameters(config), **drawn,
                                                       "metric": objective(metric).trainer_metric})
    return hp.replace(n_epochs=min(hp.n_epochs, max_epochs))


def train_trial(config: dict[str, Any], *, datasets: Callable[[], list[Any]], space: Space, run_dir: str,
                max_epochs: int, metric: str,
                threads: int, device: str, speed: dict[str, Any] | None = None,
                bases: dict[str, dict[str, Any]] | None = None, trial_id: str | None = None) -> None:
    """Train one configuration of ``space.model`` on every fold ``datasets()`` gives and report every epoch to Tune.

    ``config`` is Tune's trial config (the searched values); ``datasets()`` fetches the datasets, one per fold,
    from the object store (their arrays are read-only and shared, never copied; a lost object is the
    environment's fault). ``max_epochs`` caps the space's ``n_epochs``. ``bases``
    are the search's pretrained bases (kind → ``Base.to_dict()``; empty or ``None``: random start). ``speed``:
    the trainer's ``amp``, ``graphs`` and ``tf32``. ``trial_id`` defaults to Tune's id of the running trial.
    """
    started_at = time.time()
    trial_id = trial_id or tune.get_context().get_trial_id()
    run = RunDir.at(run_dir)
    directory = run.trial(trial_id)
    last: dict[str, Any] = {}

    def report(result: dict[str, Any]) -> None:
        last.clear()
        last.update(result)
        tune.report(result)

    # A failure's report carries the last epoch's numbers (already recorded), so that it says where it stopped.
    with reporting_failures(lambda failure: tune.report({**last, **failure}), directory):
        check_visible(run)
        taken_over = run.trial(str(config.get(CONTINUES) or "-"))
        if config.get(CONTINUES) and not directory.files() and taken_over.files():
            for name in taken_over.files():  # a trial interrupted before: go on from its states (every fold's)
                (directory / name).write_bytes((taken_over / name).read_bytes())
        train_folds(trial_hyperparameters(space, config, metric, max_epochs), directory, datasets=datasets(),
                    metric=metric, threads=threads, device=device, speed=speed, bases=bases, report=report,
                    started_at=started_at)


def train_run(hyperparameters: models.Hyperparameters, directory: Location, *, dataset: Any, metric: str,
              threads: int, device: str, speed: dict[str, Any] | None = None,
              bases: dict[str, dict[str, Any]] | None = None, report: Callable[[dict[str, Any]], None],
              started_at: float | None = None) -> dict[str, Any]:
    """The one training path of a search, for its trials and its confirmation runs alike: train
    ``hyperparameters`` on ``dataset``, keep the run's files in ``directory`` (see the module doc) and hand every
    epoch's report to ``report`` (Tune's for a trial). A run whose ``state.pt`` is there goes on from it; one whose
    state is final only reports its last epoch again. Returns the last report."""
    started_at = time.time() if started_at is None else started_at
    torch.set_num_threads(max(1, threads))
    for name in ("ray.train", "ray.tune"):  # their INFO lines are noise in the driver's output
        logging.getLogger(name).setLevel(logging.WARNING)
    extra: dict[str, Any] = {}
    base_path = None
    if models.get_spec(hyperparameters.model).pretrained_base:
        base_path, extra["pretrained"] = choose(bases_from_dicts(bases), hyperparameters.to_dict())

    saved = models.read_training_state(str(directory / STATE_FILE), device) \
        if (directory / STATE_FILE).is_file() else None
    # A run going on from its saved state gets its weights from there, not from the base.
    net = initial_network(hyperparameters, pretrained=base_path if saved is None else None)
    with warnings.catch_warnings():  # a refused amp is said once by the driver; each trial reports its precision
        warnings.filterwarnings("ignore", message="amp asked for")
        trainer = models.Trainer(net, models.train_config(hyperparameters, device=device, **(speed or {})),
                                 hyperparameters)
    extra["precision"] = trainer.precision.dtype
    last: dict[str, Any] = {}

    def send(epoch: dict[str, Any]) -> None:
        last.clear()
        last.update(_report(epoch, extra, started_at, report))

    if saved is not None and saved["history"]:
        # The saved epoch's report may have been lost with the process that wrote the state: report it again (a
        # repeated report changes nothing downstream). A state already final means the run had ended.
        send(saved["history"][-1])
        if saved["history"][-1]["final"]:
            return dict(last)
    search_metric = objective(metric).name

    writer = StateWriter()

    def after_epoch(epoch: models.EpochMetrics, trainer: models.Trainer) -> bool:
        broken = not finite(getattr(epoch, search_metric))
        final = broken or epoch.final
        if not broken:  # the model first (on its own epochs, at once: the export may read it), then the state
            if epoch.best_epoch == epoch.epoch:
                trainer.save(str(directory / MODEL_FILE))
                write_daily_ic(trainer.daily_ic("valid"), epoch.epoch, directory / DAILY_IC_FILE)
            writer.submit(trainer.training_state(), directory / STATE_FILE)
        if final:  # the last state is on disk before Tune hears the trial ended
            writer.flush()
        send({**asdict(epoch), "final": final})
        return final

    try:
        trainer.fit(dataset, callback=after_epoch, resume=saved)
    finally:
        writer.close()
    return dict(last)


def train_folds(hyperparameters: models.Hyperparameters, directory: Location, *, datasets: list[Any], metric: str,
                report: Callable[[dict[str, Any]], None], **settings: Any) -> dict[str, Any]:
    """Train ``hyperparameters`` on each fold's dataset in turn (``search.folds``), each fold a ``train_run`` into
    its own folder (``directory/fold<k>``; one fold: ``directory`` itself, the search as it always was), and hand
    every epoch's report to ``report`` with the fold's place in it (``fold_report``): a trial reports after each
    fold, its value the mean over its folds so far. A fold whose state is final only reports its last epoch again,
    so a trial interrupted in fold 3 goes on in fold 3. Returns the last report."""
    count = len(datasets)
    kept: dict[int, dict[str, Any]] = {}
    last: dict[str, Any] = {}
    for fold, dataset in enumerate(datasets, 1):
        def within(result: dict[str, Any], fold: int = fold) -> None:
            report(fold_report(result, fold, count, hyperparameters.n_epochs, kept))

        last = train_run(hyperparameters, fold_dir(directory, fold, count), dataset=dataset, metric=metric,
                         report=within if count > 1 else report, **settings)
        kept[fold] = last
    return fold_report(last, count, count, hyperparameters.n_epochs, kept) if count > 1 else last


def fold_report(result: dict[str, Any], fold: int, count: int, stride: int, kept: dict[int, dict[str, Any]]
                ) -> dict[str, Any]:
    """A fold's epoch report as the search sees it: ``epoch`` counts on over the folds (``(fold - 1) · stride +``
    the fold's own epoch, one step per epoch of the trial), ``fold``/``folds``/``fold_epoch`` say where it is,
    ``fold_final`` when the fold ended, ``final`` when the last fold did; ``best_valid_ic``/``best_valid_loss`` are
    the mean over the ended folds' kept values and this fold's best so far (the trial's value, what ASHA and Optuna
    judge), the fold's own in ``fold_best_*``. One fold: the report itself."""
    if count == 1:
        return result
    out = {**result, "fold": fold, "folds": count, "fold_epoch": result["epoch"],
           "epoch": (fold - 1) * stride + int(result["epoch"]), "fold_final": bool(result["final"]),
           "final": bool(result["final"]) and fold == count}
    for key in ("best_valid_ic", "best_valid_loss", "best_epoch"):
        out[f"fold_{key}"] = result[key]
    for key in ("best_valid_ic", "best_valid_loss"):
        values = [float(kept[earlier][key]) for earlier in sorted(kept) if earlier < fold] + [float(result[key])]
        out[key] = sum(values) / len(values) if all(map(math.isfinite, values)) else math.nan
    return out


def fold_row(report: dict[str, Any]) -> dict[str, Any]:
    """What a fold's last report says of that fold (``fold_report``: ``fold_final``), as a trial's summary and a
    confirmation run's ledger record keep it: ``fold``, its kept ``valid_ic`` and ``valid_loss`` (NaN when
    missing), its ``best_epoch``, and ``epochs``, the epochs it trained."""
    return {"fold": int(report["fold"]), "valid_ic": float(report.get("fold_best_valid_ic", math.nan)),
            "valid_loss": float(report.get("fold_best_valid_loss", math.nan)),
            "best_epoch": int(report.get("fold_best_epoch", 0)), "epochs": int(report.get("fold_epoch", 0))}


def write_daily_ic(daily: Any, epoch: int, where: Location) -> None:
    """Write a run's kept epoch's daily validation IC (``Trainer.daily_ic``: a date-indexed Series) to ``where``
    as JSON: ``epoch``, ``dates`` (ISO), ``ic`` (null on a day where it is undefined)."""
    where.write_text(json.dumps({"epoch": int(epoch), "dates": [str(day.date()) for day in daily.index],
                                 "ic": [float(v) if math.isfinite(v) else None for v in daily.to_numpy()]}))


def read_daily_ic(where: Location) -> dict[str, Any] | None:
    """What ``write_daily_ic`` wrote; ``None`` when there is none (no kept epoch yet) or it is unreadable."""
    try:
        data = json.loads(where.read_text())
    except (OSError, ValueError, StorageError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("dates"), list) or not isinstance(data.get("ic"), list) \
            or len(data["dates"]) != len(data["ic"]):
        return None
    return data


def _report(epoch: dict[str, Any], extra: dict[str, Any], started_at: float,
            report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    result = {key: epoch[key] for key in REPORTED}
    result = {key: float(value) if isinstance(value, float) else value for key, value in result.items()}
    result = {**result, **extra, "started_at": started_at, "reported_at": time.time(), "node_id": node_id()}
    report(result)
    return result

