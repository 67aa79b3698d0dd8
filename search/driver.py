"""Run, resume and export searches: Ray Tune with Optuna proposing, ASHA pruning, the dataset shared once.

``run(options)`` prepares the data once, puts it into the object store once (``ray.put``; every trial reads
it zero-copy with ``ray.get``), then searches each model in its own study over its own space, one model after
the other, and exports each model's best configuration. ``resume(path)`` continues interrupted runs from
their Tune experiment and Optuna study. ``export(path)`` rewrites the exports of any run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import ray
import torch
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler

import spaces
from search import export as exporting
from search import results
from search.pretrained import Base, base_kinds, prepare_bases, read_bases, write_bases
from search.callbacks import NonFiniteStopper, ProgressPrinter, TensorBoardLogger
from search.data import check_concepts, describe, open_dataset
from search.options import OptionError, SearchOptions
from search.rundir import TENSORBOARD_DIR, TUNE_DIR, Manifest, RunDirError, find_run_dirs, read_manifest, write_manifest
from search.searcher import StudySearch, make_sampler, storage_url
from search.trial import train_trial

LOCALHOST = "127.0.0.1"


def start_ray(address: str | None = None, dashboard: bool = False, num_cpus: int | None = None) -> None:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``, as under ``ray job submit``), else start a
    local one whose dashboard, when asked for, binds 127.0.0.1. Ray's token authentication stays as Ray sets it:
    on by default for a new local cluster (a token is created in ~/.ray/auth_token when there is none); Ray's
    own gRPC services listen on all interfaces, which is what the token protects. No-op when Ray is already
    initialised in this process."""
    if ray.is_initialized():
        return
    common: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], **common)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host=LOCALHOST, **common)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _trainable(dataset_ref: ray.ObjectRef, space: spaces.Space, options: SearchOptions,
               bases: dict[str, Base] | None = None) -> Any:
    """The trial function bound to the shared dataset, this model's space and its pretrained bases, with its
    resources."""
    device = "cuda" if options.gpus_per_trial > 0 else "cpu"
    bound = tune.with_parameters(_run_trial, dataset_ref=[dataset_ref], space=space, max_epochs=options.max_epochs,
                                 metric=options.metric, threads=max(1, int(options.cpus_per_trial)), device=device,
                                 bases={kind: base.to_dict() for kind, base in (bases or {}).items()})
    return tune.with_resources(bound, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})


def _run_trial(config: dict[str, Any], *, dataset_ref: list[ray.ObjectRef], **kwargs: Any) -> None:
    """Fetch the shared dataset (zero-copy: its arrays are views of the object store) and train one trial.

    The reference travels inside a list so that ``tune.with_parameters`` stores the reference, not a second
    copy of the dataset."""
    train_trial(config, dataset=ray.get(dataset_ref[0]), **kwargs)


# Tune settings read from the environment while a Tuner runs in this process:
# - no automatic TensorBoardX logger (TensorBoard files come from ``TensorBoardLogger``, in one place); the CSV
#   and JSON loggers that Tune's result reading needs are passed explicitly;
# - no warning each time a checkpoint forces an experiment snapshot (with ``num_to_keep=1`` that is by design:
#   the snapshot is what makes a resumed search see every finished trial).
_TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
                     "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


def concurrent_slots(options: SearchOptions) -> int:
    """How many trials run at once: ``--max-concurrent`` when given, else how many trials' CPUs (and GPUs) the
    connected cluster has when the search starts (at least 1; a cluster that grows later needs
    ``--max-concurrent`` to use the new nodes).

    Tune is always given this cap. Besides bounding what TPE proposes ahead of results, it is what lets Tune
    keep one trial pending per slot: with a search algorithm and no cap, Tune keeps a single trial pending,
    so it starts the first trials' actors one after the other and each slot waits seconds for the actor
    before it (a process importing torch); capped, the first actors all start together."""
    if options.max_concurrent:
        return options.max_concurrent
    resources = ray.cluster_resources()
    fits = resources.get("CPU", 0.0) / options.cpus_per_trial
    if options.gpus_per_trial > 0:
        fits = min(fits, resources.get("GPU", 0.0) / options.gpus_per_trial)
    return max(1, int(fits + 1e-9))


def _is_local(options: SearchOptions) -> bool:
    """Whether the search runs on a Ray node of this machine started here (no ``--address``/``$RAY_ADDRESS``)."""
    return not (options.address or os.environ.get("RAY_ADDRESS"))


def check_gpus(options: SearchOptions) -> None:
    """Refuse ``--gpus-per-trial`` > 0 on a local node when torch has no CUDA or Ray's node has no GPU: its trials
    would fail on ``cuda`` or wait forever. A cluster named by ``--address``/``$RAY_ADDRESS`` may add GPU nodes
    later (autoscaling), so a cluster without a GPU is only warned about. Call before or after ``start_ray``:
    before, only torch is asked."""
    if options.gpus_per_trial <= 0:
        return
    if _is_local(options):
        if not torch.cuda.is_available():
            raise OptionError(f"--gpus-per-trial {options.gpus_per_trial:g}: torch sees no CUDA GPU on this "
                              f"machine (torch {torch.__version__}); use 0 for CPU trials")
        if ray.is_initialized() and ray.cluster_resources().get("GPU", 0.0) <= 0:
            raise OptionError(f"--gpus-per-trial {options.gpus_per_trial:g}: this machine's Ray node has no GPU "
                              f"resource; start Ray with --num-gpus or use 0")
    elif ray.is_initialized() and ray.cluster_resources().get("GPU", 0.0) <= 0:
        logging.getLogger(__name__).warning("--gpus-per-trial %g: the cluster has no GPU now; trials wait until "
                                            "a GPU node joins", options.gpus_per_trial)


@contextlib.contextmanager
def _tune_environment() -> Iterator[None]:
    """Set ``_TUNE_ENVIRONMENT`` for the duration of a search, then restore what was there."""
    previous = {key: os.environ.get(key) for key in _TUNE_ENVIRONMENT}
    os.environ.update(_TUNE_ENVIRONMENT)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _tuner(run_dir: Path, space: spaces.Space, options: SearchOptions, dataset_ref: ray.ObjectRef,
           stream: TextIO | None, bases: dict[str, Base]) -> tune.Tuner:
    searcher = StudySearch(space, options.metric, run_dir, make_sampler(options.sampler, options.seed, options.samples))
    scheduler = ASHAScheduler(time_attr="epoch", metric=options.metric, mode="max", max_t=options.max_epochs,
                              grace_period=options.grace_epochs, reduction_factor=options.reduction_factor)
    callbacks = [ProgressPrinter(space.model, options.metric, options.progress_seconds, stream),
                 TensorBoardLogger(run_dir / TENSORBOARD_DIR, space, options.metric),
                 CSVLoggerCallback(), JsonLoggerCallback()]
    return tune.Tuner(
        _trainable(dataset_ref, space, options, bases),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=options.samples,
                                    max_concurrent_trials=concurrent_slots(options), reuse_actors=options.reuse_actors,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(run_dir), stop=NonFiniteStopper(options.metric), callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=0),
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


def run(options: SearchOptions, stream: TextIO | None = None) -> list[Path]:
    """Search every model of ``options``; returns the run directories. The options, the data (HIST's concepts)
    and, on a local node, the GPUs asked for are checked before any trial starts.

    GATs, HIST and IGMTF get their pretrained bases first (``search.pretrained``: each base kind trained once
    per search, in the driver, before that model's trials), recorded in the run directory's ``bases.yaml``."""
    out = stream or sys.stdout
    model_spaces = options.validate()
    for model, space in model_spaces.items():
        if (options.run_dir(model) / TUNE_DIR).exists():
            raise RunDirError(f"{options.run_dir(model)} already holds a search; resume it (--resume / resume) or "
                              f"pick --name")
    if options.pretrained is not None and not any(base_kinds(space) for space in model_spaces.values()):
        out.write(f"note: --pretrained {options.pretrained} is ignored: no searched model ({', '.join(model_spaces)}) "
                  f"starts from an LSTM/GRU base (only GATs, HIST and IGMTF do)\n")
    check_gpus(options)
    ds = open_dataset(options.data, options.effective_segments(), options.market, options.benchmark,
                      options.concepts)
    check_concepts(ds, list(model_spaces))
    data = describe(ds, options.concepts)
    start_ray(options.address, options.dashboard)
    check_gpus(options)
    dataset_ref = ray.put(ds)
    base_device = "cuda" if options.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    trained: dict[str, Base] = {}
    model_bases = {}
    for model, space in model_spaces.items():
        run_dir = options.run_dir(model)
        write_manifest(run_dir, Manifest(model=model, options=options, space=space, data=data))
        model_bases[model] = prepare_bases(run_dir, space, options.pretrained, ds, options.max_epochs, options.seed,
                                           base_device, trained, out)
        write_bases(run_dir, model_bases[model])
    del ds
    run_dirs = []
    for model, space in model_spaces.items():
        run_dir, bases = options.run_dir(model), model_bases[model]
        out.write(f"[{model}] searching {options.samples} trials of at most {options.max_epochs} epochs in {run_dir}\n"
                  f"{space.describe()}\n")
        out.flush()
        search_model(run_dir, space, options, dataset_ref, stream, bases)
        report(run_dir, out)
        run_dirs.append(run_dir)
        if _interrupted(run_dir, out):
            break
    return run_dirs


def _interrupted(run_dir: Path, out: TextIO) -> bool:
    """Whether the search of ``run_dir`` stopped with trials unfinished (Ctrl+C); says how to resume it."""
    records = results.read_trials(run_dir, read_manifest(run_dir))
    unfinished = [r for r in records if r.outcome in ("running", "pending")]
    if unfinished:
        out.write(f"[{run_dir.name}] interrupted with {len(unfinished)} trials unfinished; continue with:\n"
                  f"  python -m search resume {run_dir.parent}\n")
        out.flush()
    return bool(unfinished)


def resume(path: str | Path, stream: TextIO | None = None) -> list[Path]:
    """Continue every run directory under ``path`` whose search is unfinished: finished trials are kept, the
    interrupted ones continue from their checkpoints, the Optuna study goes on. Then export each."""
    out = stream or sys.stdout
    run_dirs = find_run_dirs(path)
    manifests = {run_dir: read_manifest(run_dir) for run_dir in run_dirs}
    first = next(iter(manifests.values()))
    dataset_ref = None
    for run_dir, manifest in manifests.items():
        tune_dir = run_dir / TUNE_DIR
        if not tune.Tuner.can_restore(str(tune_dir)):
            raise RunDirError(f"{run_dir}: no Tune experiment state to resume from")
        if dataset_ref is None:
            check_gpus(first.options)
            ds = _reopen(manifest)
            check_concepts(ds, [m.model for m in manifests.values()])
            start_ray(first.options.address, first.options.dashboard)
            check_gpus(first.options)
            dataset_ref = ray.put(ds)
            del ds
        out.write(f"[{manifest.model}] resuming {run_dir}\n")
        out.flush()
        with _tune_environment():
            trainable = _trainable(dataset_ref, manifest.space, manifest.options, read_bases(run_dir))
            tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False)
            tuner.fit()
        report(run_dir, out)
        if _interrupted(run_dir, out):
            break
    return run_dirs


def _reopen(manifest: Manifest) -> Any:
    """The run's dataset again: its prepared directory when still there, else prepared from its source."""
    data = manifest.data
    if data.get("path") and Path(data["path"]).is_dir():
        return open_dataset(data["path"], dict.fromkeys(data["segments"]), data["market"], data["benchmark"])
    source = None if data["source"] == "embedded" else data["source"]
    segments = {name: tuple(span) for name, span in data["segments"].items()}
    return open_dataset(source, segments, data["market"], data["benchmark"], data.get("concepts"))


def report(run_dir: Path, stream: TextIO | None = None) -> Path | None:
    """Print the run's summary table and write its exports; returns ``best.yaml`` (``None`` when no trial has
    a usable checkpoint yet)."""
    out = stream or sys.stdout
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    metric = manifest.options.metric
    counts = Counter(record.outcome for record in records)
    out.write(f"\n[{manifest.model}] {len(records)} trials: " + ", ".join(
        f"{counts.get(key, 0)} {key}" for key in ("finished", "pruned", "failed", "running", "pending")) + "\n")
    out.write(results.summary_table(records, list(manifest.space.params), metric) + "\n")
    best = results.best_trial(records, metric)
    if best is None:
        out.write(f"[{manifest.model}] no trial has a finite {metric} and a checkpoint: nothing to export\n")
        out.flush()
        return None
    best_path, qlib_path = exporting.write_exports(run_dir, manifest, best, dict(counts))
    out.write(f"[{manifest.model}] best trial {best.trial_id}: {metric} {best.best(metric):.4f} at epoch "
              f"{best.best_epoch}\n  {best_path}\n  {qlib_path}\n"
              f"  tensorboard --logdir {run_dir}\n  optuna-dashboard {storage_url(run_dir)}\n")
    out.flush()
    return best_path


def export(path: str | Path, stream: TextIO | None = None) -> list[Path]:
    """Rewrite ``best.yaml`` and ``best_qlib.yaml`` of every run directory under ``path`` (finished or not)."""
    written = []
    for run_dir in find_run_dirs(path):
        best = report(run_dir, stream)
        if best is not None:
            written.append(best)
    return written
