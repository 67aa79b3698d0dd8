"""Run, resume and export searches: Ray Tune with Optuna proposing, ASHA pruning, the dataset shared once.

``run(options)`` checks everything it can before loading anything heavy, prepares the data once, puts it into
the object store once (``ray.put``; every trial reads it zero-copy with ``ray.get``), then searches each model
in its own study over its own space, one model after the other, and exports each model's best configuration.
``resume(path)`` continues interrupted runs. ``export(path)`` rewrites the exports of any run from the run's own
records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import ray
import torch
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from alphatune import spaces
from alphatune.search import export as exporting
from alphatune.search import preflight, results
from alphatune.search.callbacks import NonFiniteStopper, ProgressPrinter, TensorBoardLogger, write_experiment
from alphatune.search.cluster import check_gpus, check_named_address, concurrent_slots, slot_plan, start_ray
from alphatune.datasets import DataSpec
from alphatune.search.ledger import TrialLedger, close_ledger, reconcile_with_tune
from alphatune.search.objective import objective
from alphatune.search.preflight import Checked
from alphatune.search.options import SearchOptions
from alphatune.search.pretrained import Base, base_kinds, prepare_bases, read_bases, write_bases
from alphatune.search.scheduler import ResumableASHA
from alphatune.search.rundir import (MANIFEST, TENSORBOARD_DIR, TUNE_DIR, Manifest, RunDirError, disk_guard,
                           find_run_dirs, read_manifest, write_manifest, writing)
from alphatune.search.searcher import StudySearch, close_abandoned, make_sampler, storage_url, study_states
from alphatune.search.tune_state import experiment_trials
from alphatune.search.trial import train_trial


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _trainable(dataset_ref: ray.ObjectRef, space: spaces.Space, options: SearchOptions, run_dir: Path,
               bases: dict[str, Base] | None = None) -> Any:
    """The trial function bound to the shared dataset, this model's space, run directory and pretrained bases,
    with its resources."""
    device = "cuda" if options.gpus_per_trial > 0 else "cpu"
    bound = tune.with_parameters(_run_trial, dataset_ref=[dataset_ref], space=space, run_dir=str(run_dir),
                                 max_epochs=options.max_epochs, metric=options.metric,
                                 threads=max(1, int(options.cpus_per_trial)), device=device,
                                 speed=options.speed(device),
                                 bases={kind: base.to_dict() for kind, base in (bases or {}).items()})
    return tune.with_resources(bound, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})


def _run_trial(config: dict[str, Any], *, dataset_ref: list[ray.ObjectRef], **kwargs: Any) -> None:
    """Fetch the shared dataset (zero-copy: its arrays are views of the object store) and train one trial.

    The reference travels inside a list so that ``tune.with_parameters`` stores the reference, not a second
    copy of the dataset."""
    train_trial(config, dataset=ray.get(dataset_ref[0]), **kwargs)


# Tune and Ray settings read from the environment while a Tuner runs in this process:
# - no automatic TensorBoardX logger (TensorBoard files come from ``TensorBoardLogger``, in one place); the CSV and
#   JSON loggers are passed explicitly (Tune's own per-trial result files, kept for people who read them);
# - Tune's own console output off (its legacy reporter, silent at verbose=0: the new one prints every trial error
#   and its result table whatever the verbosity), and no traceback per failed trial task: ``ProgressPrinter`` says
#   in one line which trial failed or is retried, why, and where the traceback is.
_TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                     "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}


# What Tune says at the end of an interrupted or finished fit that is not ours to say: how to resume it with
# Tune's own API (``alphatune search resume`` is the way, and the driver says so), and that it could not read the
# per-trial result files of trials that never started.
_TUNE_WORDS = {"ray.tune.tune": ("Experiment has been interrupted", "Training has been interrupted"),
               "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics",)}


class _NotOurWords(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


@contextlib.contextmanager
def _tune_environment() -> Iterator[None]:
    """Set ``_TUNE_ENVIRONMENT`` and silence ``_TUNE_WORDS`` for the duration of a search, then restore what was
    there."""
    previous = {key: os.environ.get(key) for key in _TUNE_ENVIRONMENT}
    os.environ.update(_TUNE_ENVIRONMENT)
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


def _callbacks(run_dir: Path, space: spaces.Space, options: SearchOptions, stream: TextIO | None) -> list[Any]:
    goal = objective(options.metric)
    return [TrialLedger(run_dir), ProgressPrinter(space.model, goal, options.progress_seconds, stream),
            TensorBoardLogger(run_dir / TENSORBOARD_DIR, space, goal), CSVLoggerCallback(), JsonLoggerCallback()]


def _tuner(run_dir: Path, space: spaces.Space, options: SearchOptions, dataset_ref: ray.ObjectRef,
           stream: TextIO | None, bases: dict[str, Base]) -> tune.Tuner:
    goal = objective(options.metric)
    searcher = StudySearch(space, goal, run_dir, make_sampler(options.sampler, options.seed, options.samples),
                           options.samples, options.seed)
    scheduler = ResumableASHA(run_dir, time_attr="epoch", metric=goal.best, mode=goal.mode, max_t=options.max_epochs,
                              grace_period=options.grace_epochs, reduction_factor=options.reduction_factor)
    slots = concurrent_slots(options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent)
    return tune.Tuner(
        _trainable(dataset_ref, space, options, run_dir, bases),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=options.samples,
                                    max_concurrent_trials=slots, reuse_actors=options.reuse_actors,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(run_dir), stop=NonFiniteStopper(goal.name),
            callbacks=_callbacks(run_dir, space, options, stream),
            failure_config=tune.FailureConfig(max_failures=options.max_failures), verbose=0),
    )


def search_model(run_dir: Path, space: spaces.Space, options: SearchOptions, dataset_ref: ray.ObjectRef,
                 stream: TextIO | None = None, bases: dict[str, Base] | None = None) -> tune.ResultGrid:
    """Run one model's Tune search in ``run_dir`` (which must exist) and return Tune's results.

    ``dataset_ref`` is what every trial passes to ``ray.get``: normally the prepared dataset put once into the
    object store; anything whose ``ray.get`` gives an object with the dataset's interface works (the memory
    benchmark passes one that loads the data inside the trial). ``bases`` are the pretrained bases from
    ``search.pretrained.prepare_bases`` (``None``: random start). No summary or export: see ``report``."""
    with _tune_environment():
        return _tuner(run_dir, space, options, dataset_ref, stream, bases or {}).fit()


def run(options: SearchOptions, stream: TextIO | None = None, checked: Checked | None = None) -> list[Path]:
    """Search every model of ``options``; returns the run directories.

    Everything bad input can fail is checked first (``search.preflight``, unless ``checked`` is its result), then
    the base file and the GPUs asked for; only then is Ray started and are the run directories created (nothing
    is left behind by a refused search). GATs, HIST and IGMTF get their pretrained bases before their trials
    (``search.pretrained``: each base kind trained once per search, in the driver), recorded in the run
    directory's ``bases.yaml``."""
    out = stream or sys.stdout
    checked = checked or preflight.check(options)
    model_spaces, ds = checked.spaces, checked.dataset
    if options.pretrained is not None and not any(base_kinds(space) for space in model_spaces.values()):
        out.write(f"note: --pretrained {options.pretrained} is ignored: no searched model ({', '.join(model_spaces)}) "
                  f"starts from an LSTM/GRU base (only GATs, HIST and IGMTF do)\n")
    check_gpus(options.gpus_per_trial, options.address)
    data = DataSpec.of(ds, options.concepts).to_dict()
    start_ray(options.address, options.dashboard)
    check_gpus(options.gpus_per_trial, options.address)
    _, slot_lines = slot_plan(options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent)
    out.write("".join(f"{line}\n" for line in slot_lines))
    dataset_ref = ray.put(ds)
    base_device = "cuda" if options.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    _say_amp(options, base_device, out)
    with writing([options.run_dir(model) for model in model_spaces]):
        for model in model_spaces:  # again, holding the lock: another search may have started meanwhile
            if (options.run_dir(model) / MANIFEST).exists():
                raise RunDirError(f"{options.run_dir(model)} already holds a search; resume it (--resume / resume) "
                                  f"or pick --name")
        trained: dict[str, Base] = {}
        model_bases = {}
        for model, space in model_spaces.items():
            run_dir = options.run_dir(model)
            write_manifest(run_dir, Manifest(model=model, options=options, space=space, data=data))
            write_experiment(run_dir / TENSORBOARD_DIR, model_spaces, objective(options.metric))
            model_bases[model] = prepare_bases(run_dir, space, options.pretrained, ds, options.max_epochs,
                                               options.seed, base_device, trained, out, options.speed(base_device))
            write_bases(run_dir, model_bases[model])
        del ds, checked
        run_dirs = []
        for model, space in model_spaces.items():
            run_dir, bases = options.run_dir(model), model_bases[model]
            out.write(f"[{model}] searching {options.samples} trials of at most {options.max_epochs} epochs in "
                      f"{run_dir}; objective: best {options.metric} ({objective(options.metric).mode})\n"
                      f"{space.describe()}\n")
            out.flush()
            with disk_guard(run_dir, f"continue with: alphatune search resume {run_dir.parent}"):
                search_model(run_dir, space, options, dataset_ref, stream, bases)
                _close(run_dir, model)
                report(run_dir, out, writer="search run")
            run_dirs.append(run_dir)
            if _interrupted(run_dir, out):
                break
        return run_dirs


def _say_amp(options: SearchOptions, device: str, out: TextIO) -> None:
    """Say once, before any training, that ``--amp`` cannot run on this machine's ``device`` (the trials and bases
    then train in float32, and each trial reports the precision it really trained in)."""
    from alphatune.models.precision import amp_unavailable
    reason = amp_unavailable(device) if options.amp else None
    if reason is not None:
        out.write(f"note: --amp: {reason}: trials on this machine train in float32 (best.yaml records what ran)\n")
        warnings.filterwarnings("ignore", message="amp asked for")  # said here, once


def _close(run_dir: Path, model: str) -> None:
    """After ``fit``: when every trial Tune holds has ended (the search was not interrupted), make the run's records
    agree: each trial the ledger still holds unended (its end, or its whole run, was lost with an earlier driver)
    gets its end from the study, and no study trial stays RUNNING (``close_abandoned``)."""
    known = experiment_trials(run_dir)
    if known is None or any(status not in ("TERMINATED", "ERROR") for _, status in known):
        return
    close_ledger(run_dir, study_states(run_dir, model))
    close_abandoned(run_dir, model)


def unfinished(run_dir: Path) -> int:
    """How many of the run's trials have not ended: running when the search stopped, or never created."""
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    return sum(record.outcome == "running" for record in records) + max(0, manifest.options.samples - len(records))


def _interrupted(run_dir: Path, out: TextIO) -> bool:
    """Whether the search of ``run_dir`` stopped with trials unfinished (Ctrl-C); says how to resume it."""
    left = unfinished(run_dir)
    if left:
        out.write(f"[{run_dir.name}] interrupted with {left} trials unfinished; continue with:\n"
                  f"  alphatune search resume {run_dir.parent}\n")
        out.flush()
    return bool(left)


def resume(path: str | Path, stream: TextIO | None = None, within: str | Path | None = None) -> list[Path]:
    """Continue every run directory under ``path`` whose search is unfinished: finished trials are kept, the
    interrupted ones continue from their last epoch, the Optuna study goes on. Then export each. ``within``: a
    directory ``path`` must lie in (``--storage-path`` with ``--resume --name``)."""
    out = stream or sys.stdout
    run_dirs = find_run_dirs(path)
    if within is not None:
        root = Path(within).expanduser().resolve()
        outside = [run_dir for run_dir in run_dirs if not run_dir.is_relative_to(root)]
        if outside:
            raise RunDirError(f"{outside[0]} is not inside --storage-path {root}")
    with writing(run_dirs):
        return _resume(run_dirs, out)


def _resume(run_dirs: list[Path], out: TextIO) -> list[Path]:
    manifests = {run_dir: read_manifest(run_dir) for run_dir in run_dirs}
    first = next(iter(manifests.values()))
    dataset_ref = None
    for run_dir, manifest in manifests.items():
        tune_dir = run_dir / TUNE_DIR
        if dataset_ref is None:
            check_gpus(first.options.gpus_per_trial, first.options.address)
            check_named_address(first.options.address)
            ds = DataSpec.from_dict(manifest.data, f"{run_dir / MANIFEST}: data").open()
            preflight.check_dataset(ds, [m.model for m in manifests.values()])
            start_ray(first.options.address, first.options.dashboard)
            check_gpus(first.options.gpus_per_trial, first.options.address)
            _, slot_lines = slot_plan(first.options.cpus_per_trial, first.options.gpus_per_trial,
                                      first.options.max_concurrent)
            out.write("".join(f"{line}\n" for line in slot_lines))
            dataset_ref = ray.put(ds)
            del ds
        with disk_guard(run_dir, f"continue with: alphatune search resume {run_dir.parent}"):
            known = experiment_trials(run_dir)
            if known is not None:
                reconcile_with_tune(run_dir, known)
            if known is not None and tune.Tuner.can_restore(str(tune_dir)):
                out.write(f"[{manifest.model}] resuming {run_dir}\n")
                out.flush()
                with _tune_environment():
                    trainable = _trainable(dataset_ref, manifest.space, manifest.options, run_dir,
                                           read_bases(run_dir))
                    tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable,
                                               resume_unfinished=True, resume_errored=False)
                    tuner.fit()
            else:  # no readable Tune state (died before Tune saved one, or on a full disk): search again, keeping
                _set_aside(run_dir, out)  # the study and the ledger: what ran before counts and is taken over
                out.write(f"[{manifest.model}] {run_dir} has no Tune state to resume: searching on from its study "
                          f"and ledger\n")
                out.flush()
                search_model(run_dir, manifest.space, manifest.options, dataset_ref, out, read_bases(run_dir))
            _close(run_dir, manifest.model)
            report(run_dir, out, writer="search resume")
        if _interrupted(run_dir, out):
            break
    return run_dirs


def _set_aside(run_dir: Path, out: TextIO) -> None:
    """Move a Tune directory that cannot be resumed out of the way (kept for inspection)."""
    if (run_dir / TUNE_DIR).exists():
        target = run_dir / f"{TUNE_DIR}.unresumable-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(run_dir / TUNE_DIR, target)
        out.write(f"note: kept Tune's unreadable state as {target.name}\n")


def report(run_dir: Path, stream: TextIO | None = None, qlib_data: str | None = None,
           schedule: str = "search", writer: str = "search export") -> Path | None:
    """Print the run's summary table and write its exports; returns ``best.yaml`` (``None`` when no trial has
    a usable checkpoint yet). ``qlib_data``, ``schedule`` and ``writer`` are ``search.export.write_exports``'s."""
    out = stream or sys.stdout
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    metric = manifest.options.metric
    counts = Counter(record.outcome for record in records)
    out.write(f"\n[{manifest.model}] {len(records)} trials: " + ", ".join(
        f"{counts.get(key, 0)} {key}" for key in results.OUTCOMES) + f"; objective: best {metric}\n")
    out.write(results.summary_table(records, list(manifest.space.params), metric) + "\n")
    best = results.best_trial(records, metric)
    if best is None:
        out.write(f"[{manifest.model}] no trial has a finite {metric} and a checkpoint: nothing to export\n")
        out.flush()
        return None
    exported = exporting.write_exports(run_dir, manifest, best, dict(counts), qlib_data=qlib_data, schedule=schedule,
                                       writer=writer)
    out.write(f"[{manifest.model}] best trial {best.trial_id} (Optuna trial {best.optuna_trial}): {metric} "
              f"{best.best(metric):.4f} at its kept epoch {best.best_epoch}\n  {exported.best}\n  {exported.qlib}\n")
    for note in exported.notes:
        out.write(f"  note: {note}\n")
    out.write(f"  tensorboard --logdir {run_dir} --host 127.0.0.1\n  optuna-dashboard {storage_url(run_dir)}\n")
    out.flush()
    return exported.best


def export(path: str | Path, stream: TextIO | None = None, qlib_data: str | None = None,
           schedule: str = "search") -> list[Path]:
    """Rewrite ``best.yaml`` and ``best_qlib.yaml`` of every run directory under ``path`` (finished or not)."""
    written = []
    run_dirs = find_run_dirs(path)
    with writing(run_dirs):
        for run_dir in run_dirs:
            with disk_guard(run_dir, "export again"):
                best = report(run_dir, stream, qlib_data=qlib_data, schedule=schedule)
            if best is not None:
                written.append(best)
    return written
