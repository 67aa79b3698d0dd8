"""One model's search as a Ray Tune run: the trial function bound to the shared dataset, the searcher and the
scheduler built from the run's own records, the callbacks, and Tune's settings.

``search_model`` runs a new search and goes on with an interrupted one alike: ``search.resume.reconcile`` brings
the ledger and the study to one truth and says which trials to continue; the searcher hands those out first,
then new points; ASHA's rungs hold every result recorded before. Each call is a fresh Tune run. Tune's own
experiment state is written where Tune likes, in a scratch directory removed afterwards: nothing of it is ever
read back, and nothing of it lands in the run directory (on a full disk, its syncer's errors would be Tune's
tracebacks, not our one line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import ray
from ray import tune
from ray.tune import Callback

from alphatune import interrupts, spaces
from alphatune.search.callbacks import TensorBoardLogger, TrialStopper, WorkerEvents, tensorboard_run
from alphatune.search.progress import SearchProgress
from alphatune.search.cluster import Slots
from alphatune.search import confirm
from alphatune.search.ledger import RunRecords
from alphatune.search.objective import objective
from alphatune.search.options import SearchOptions
from alphatune.search.pretrained import Base
from alphatune.search.resume import close_abandoned, open_study, reconcile
from alphatune.search.results import outcome
from alphatune.search.rundir import TENSORBOARD_DIR, RunDir, as_run_dir, fault_in, read_manifest
from alphatune.search.scheduler import SuccessiveHalving
from alphatune.search.searcher import StudySearcher
from alphatune.search.study import StudyPlace, make_sampler
from alphatune.search.trial import train_trial
from alphatune.storage import Location


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def trainable(fold_refs: list[ray.ObjectRef], space: spaces.Space, options: SearchOptions, run_dir: RunDir,
              bases: dict[str, Base] | None = None) -> Any:
    """The trial function bound to the shared datasets (one per fold), this model's space, run directory and
    pretrained bases, with its resources."""
    device = "cuda" if options.gpus_per_trial > 0 else "cpu"
    bound = tune.with_parameters(_run_trial, fold_refs=list(fold_refs), space=space, run_dir=str(run_dir.root),
                                 max_epochs=options.max_epochs, metric=options.metric,
                                 threads=max(1, int(options.cpus_per_trial)), device=device,
                                 speed=options.speed(device),
                                 bases={kind: base.to_dict() for kind, base in (bases or {}).items()})
    return tune.with_resources(bound, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})


def _run_trial(config: dict[str, Any], *, fold_refs: list[ray.ObjectRef], **kwargs: Any) -> None:
    """Train one trial on the shared datasets, one per fold, fetched inside the trial (zero-copy: their arrays are
    views of the object store; a lost object is a fault of the environment, reported as one).

    The references travel inside a list so that ``tune.with_parameters`` stores the references, not a second
    copy of the data."""
    train_trial(config, datasets=lambda: [ray.get(reference) for reference in fold_refs], **kwargs)


# Tune and Ray settings read from the environment while a Tuner runs in this process:
# - no automatic loggers (TensorBoard files come from ``TensorBoardLogger``, the per-epoch record is the ledger);
# - Tune's own console output off (its legacy reporter, silent at verbose=0: the new one prints every trial error
#   and its result table whatever the verbosity), and no traceback per failed trial task: ``SearchProgress`` says
#   in one line which trial failed or is retried, why, and where the traceback is;
# - no check that every report carries the objective: a trial's failure or fault is a report without one
#   (``search.trial``), which the stopper handles before anything reads a metric.
_TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                     "TUNE_PRINT_ALL_TRIAL_ERRORS": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
# What Tune says at the end of an interrupted or finished fit that is not ours to say: how to resume it with
# Tune's own API (``alphatune search resume`` is the way, and the driver says so), and that it could not read
# per-trial result files (no loggers write them).
PENDING = "TUNE_MAX_PENDING_TRIALS_PG"  # trials Tune keeps pending at once (read when its run starts)
_TUNE_WORDS = {"ray.tune.tune": ("Experiment has been interrupted", "Training has been interrupted"),
               "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics",)}


class _NotOurWords(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


@contextlib.contextmanager
def _tune_environment(pending: int | None = None) -> Iterator[None]:
    """Set ``_TUNE_ENVIRONMENT`` and silence ``_TUNE_WORDS`` for the duration of a search, then restore what was
    there. ``pending``: how many trials Tune may keep pending at once, for elastic slots (``search.cluster.Slots``:
    the searcher holds trials back beyond the slots; without a cap Tune would keep one pending)."""
    settings = {**_TUNE_ENVIRONMENT, **({PENDING: str(max(1, pending))} if pending else {})}
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    filters = {name: _NotOurWords(starts) for name, starts in _TUNE_WORDS.items()}
    for name, quiet in filters.items():
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        for name, quiet in filters.items():
            logging.getLogger(name).removeFilter(quiet)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RunSync(Callback):
    """Puts the driver's files of a run in object storage into the bucket (``RunDir.push``: the ledger's new lines
    as a part, the ended trials' TensorBoard files, then the marker): within ``least`` seconds of a trial's end, at
    most every ``seconds`` while trials run, and completely (the study's snapshot too) when the search stops. What a
    push puts is what changed since the last one, so its bytes per ended trial do not grow with the search. Not
    used for a local run, where the driver writes in place."""

    def __init__(self, run_dir: RunDir, seconds: float = 10.0, least: float = 1.0) -> None:
        self.run_dir, self.seconds, self.least = run_dir, seconds, least
        self.last = time.monotonic()
        self.ended = False  # a trial ended since the last push
        self.touched: set[str] = set()  # the TensorBoard folders written since the last push

    def _push(self, complete: bool = False) -> None:
        self.run_dir.push(complete, touched=sorted(self.touched))
        self.last, self.ended = time.monotonic(), False
        self.touched.clear()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.touched.add(f"{TENSORBOARD_DIR}/{tensorboard_run(trial)}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        waited = time.monotonic() - self.last
        if waited >= self.seconds or (self.ended and waited >= self.least):
            self._push()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended = True
        self.touched.add(f"{TENSORBOARD_DIR}/{tensorboard_run(trial)}")  # its session
        self.on_step_end(iteration, trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended = True
        self.on_step_end(iteration, trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._push(complete=True)


def search_model(run_dir: RunDir | Location | Path, space: spaces.Space, options: SearchOptions,
                 fold_refs: list[ray.ObjectRef], stream: TextIO | None = None, bases: dict[str, Base] | None = None
                 ) -> None:
    """Run, or go on with, one model's search in ``run_dir`` (which holds its manifest), until every sample has
    ended or the search is interrupted (Ctrl-C: the trials stop where they are, to be continued by the next call).

    ``fold_refs`` are what every trial passes to ``ray.get``, one per fold (``search.folds``): normally the
    prepared datasets put once into the object store; anything whose ``ray.get`` gives an object with the dataset's
    interface works (the memory benchmark passes one that loads the data inside the trial). ``bases`` are the pretrained bases from
    ``search.pretrained.prepare_bases`` (``None``: random start). No summary or export: see ``driver.report``."""
    run_dir = as_run_dir(run_dir)
    goal = objective(options.metric)
    ledger = RunRecords.of(run_dir.work)
    study, note = open_study(run_dir.work, space, goal,
                             StudyPlace.of_run(run_dir.work, space.model, options.study_storage, options.name),
                             make_sampler(options.sampler, options.seed, options.samples,
                                          asked=sum(trial.optuna_trial is not None for trial in ledger.trials())))
    if note:
        (stream or sys.stdout).write(f"[{space.model}] note: {note}\n")
    plan = reconcile(run_dir.work, study, ledger)
    slots = Slots(options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent, options.address)
    searcher = StudySearcher(study, ledger, run_dir.root, options.samples, options.seed, plan.continuations,
                             slots=slots if slots.elastic else None)
    folds = len(fold_refs)
    scheduler = SuccessiveHalving(goal, options.max_epochs, options.grace_epochs, options.reduction_factor) \
        if folds == 1 else SuccessiveHalving(goal, folds, 1, options.reduction_factor, resource="fold")
    scheduler.replay(plan.results)
    ended_before = [(outcome(trial.status, trial.last_result, goal.name), len(trial.epochs()))
                    for trial in ledger.trials() if trial.status is not None]
    callbacks = [WorkerEvents(ledger), SearchProgress(space.model, goal, options.samples, options.max_epochs,
                                                      len(fold_refs), slots.running, options.progress_seconds, stream,
                                                      done=sum(len(rows) for rows in plan.results.values()),
                                                      ended_before=ended_before),
                 TensorBoardLogger(run_dir.work / TENSORBOARD_DIR, space, goal)]
    if not run_dir.is_local:
        callbacks.append(RunSync(run_dir))
    if options.confirm > 0 and ledger.plan is None:  # idle slots at the end: confirm early
        runs = confirm.RUNS.setdefault(run_dir.root.uri, confirm.Runs(
            run_dir, read_manifest(run_dir), fold_refs, {kind: base.to_dict() for kind, base in (bases or {}).items()}))
        callbacks.append(confirm.EarlyStart(runs, searcher, slots))
    try:
        # Tune sets its SIGINT handler (a graceful stop) and leaves it after the search: put the command's back
        with interrupts.kept(), _tune_environment(options.samples if slots.elastic else None), \
                tempfile.TemporaryDirectory(prefix="alphatune-tune-") as scratch:
            tuner = tune.Tuner(
                trainable(fold_refs, space, options, run_dir, bases),
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=options.samples,
                                            max_concurrent_trials=None if slots.elastic else slots.now(),
                                            reuse_actors=options.reuse_actors,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name="tune", storage_path=scratch, stop=TrialStopper(goal.name),
                                          callbacks=callbacks, verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=options.max_failures)))
            tuner.fit()
    except Exception as error:
        fault = fault_in(error)
        if fault is None:
            raise
        # A worker's storage failed: every trial stops where it is, none is charged (fault_guard says the line).
        with contextlib.suppress(Exception):  # best effort: the storage may be what failed
            if fault.trial_id is not None:  # a trial's, not an early confirmation run's
                ledger.interrupted(fault.trial_id, fault.text)
            ledger.close()
            run_dir.push()
        raise
    if searcher.all_handed_out() and not searcher.live():
        close_abandoned(run_dir.work, study, ledger)
    ledger.close()
    run_dir.push()
