"""Run, resume and export searches: Ray Tune with Optuna proposing, ASHA pruning, the dataset shared once.

``run(options)`` checks everything it can before loading anything heavy, prepares the data once (each
walk-forward fold's too), puts it into the object store once (``ray.put``, one object per fold; every trial reads
them zero-copy with ``ray.get``), then searches each model
in its own study over its own space, one model after the other, and exports each model's best configuration.
``resume(path)`` continues interrupted runs. ``export(path)`` rewrites the exports of any run from the run's own
records.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import TextIO

import ray
import torch

from alphatune.search import confirm, odds, preflight, results
from alphatune.search import export as exporting
from alphatune.search.callbacks import write_experiment
from alphatune.search.cluster import check_gpus, check_named_address, slot_plan, start_ray
from alphatune.datasets import DataSpec
from alphatune.search.objective import objective
from alphatune.search.preflight import Checked
from alphatune.search.options import SearchOptions
from alphatune.search.pretrained import Base, base_kinds, prepare_bases, read_bases, write_bases
from alphatune.search.folds import open_folds
from alphatune.search.ledger import read_ledger
from alphatune.search.resume import open_study
from alphatune.search.rundir import (MANIFEST, TENSORBOARD_DIR, Manifest, RunDir, RunDirError, as_run_dir,
                                     check_resumable, check_writable, fault_guard, find_run_dirs, read_manifest,
                                     write_manifest, writing)
from alphatune.search.nodes import check_nodes
from alphatune.search.study import StudyPlace, unopenable
from alphatune.search.tuning import search_model
from alphatune.spaces import Space
from alphatune.storage import Location, writer


def run(options: SearchOptions, stream: TextIO | None = None, checked: Checked | None = None) -> list[RunDir]:
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
    _, slot_lines = slot_plan(options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent,
                              options.address)
    out.write("".join(f"{line}\n" for line in slot_lines))
    fold_refs = [ray.put(fold) for fold in checked.fold_datasets]  # each fold's arrays once, shared zero-copy
    base_device = "cuda" if options.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    _say_amp(options, base_device, out)
    run_dirs = {model: RunDir.at(options.run_dir(model)) for model in model_spaces}
    with writing(list(run_dirs.values())):
        for run_dir in run_dirs.values():  # again, holding the lock: another search may have started meanwhile
            if (run_dir.root / MANIFEST).exists():
                raise RunDirError(f"{run_dir} already holds a search; resume it (--resume / resume) or pick --name")
        check_nodes(options.search_dir, options.address)
        trained: dict[str, Base] = {}
        model_bases = {}
        for model, space in model_spaces.items():
            run_dir = run_dirs[model]
            note = run_dir.fresh()
            if note:
                out.write(f"[{model}] note: {note}\n")
            write_manifest(run_dir, Manifest(model=model, options=options, space=space, data=data,
                                             folds=checked.folds))
            write_experiment(run_dir.work / TENSORBOARD_DIR, model_spaces, objective(options.metric),
                             checked.folds.count)
            model_bases[model] = prepare_bases(run_dir, space, options.pretrained, checked.fold_datasets[0],
                                               options.max_epochs, options.seed, base_device, trained, out,
                                               options.speed(base_device))
            write_bases(run_dir, model_bases[model])
            run_dir.push()
        plan = checked.folds
        del ds, checked
        searched = []
        for model, space in model_spaces.items():
            run_dir, bases = run_dirs[model], model_bases[model]
            over = (f" per fold, over {plan.count} walk-forward folds ({plan.train} train windows); objective: the "
                    f"mean over its folds of the best {options.metric}" if plan.count > 1 else
                    f"; objective: best {options.metric}")
            out.write(f"[{model}] searching {options.samples} trials of at most {options.max_epochs} epochs{over} "
                      f"({objective(options.metric).mode}) in {run_dir}\n" + (plan.describe() + "\n" if plan.count > 1
                                                                             else "") + f"{space.describe()}\n")
            out.flush()
            with fault_guard(run_dir, f"continue with: alphatune search resume {run_dir.parent}"):
                lost_runs = _search_and_confirm(run_dir, space, options, fold_refs, bases, out)
                report(run_dir, out, writer="search run")
            searched.append(run_dir)
            if _interrupted(run_dir, out, lost_runs):
                break
        if len(searched) > 1:
            out.write(f"every model's trials in one TensorBoard: {tensorboard_command(searched)}\n")
        return searched


def tensorboard_command(run_dirs: list[RunDir]) -> str:
    """The command that shows the trials of every run in ``run_dirs`` in one TensorBoard (their HParams tables
    together): the search's directory, or, for runs in a bucket (whose TensorBoard files are in local copies), each
    model's copy by name."""
    if all(run_dir.is_local for run_dir in run_dirs):
        return f"tensorboard --logdir {run_dirs[0].parent} --host 127.0.0.1"
    return ("tensorboard --logdir_spec " + ",".join(f"{run_dir.name}:{run_dir.work}" for run_dir in run_dirs)
            + " --host 127.0.0.1")


def _say_amp(options: SearchOptions, device: str, out: TextIO) -> None:
    """Say once, before any training, that ``--amp`` cannot run on this machine's ``device`` (the trials and bases
    then train in float32, and each trial reports the precision it really trained in)."""
    from alphatune.models.precision import amp_unavailable
    reason = amp_unavailable(device) if options.amp else None
    if reason is not None:
        out.write(f"note: --amp: {reason}: trials on this machine train in float32 (best.yaml records what ran)\n")
        warnings.filterwarnings("ignore", message="amp asked for")  # said here, once


def unfinished(run_dir: RunDir | Location | Path) -> int:
    """How much of the run has not ended: its trials running when the search stopped or never created, and its
    confirmation runs (``confirm.unfinished_runs``)."""
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    return (results.unfinished_trials(manifest, records)
            + confirm.unfinished_runs(as_run_dir(run_dir), manifest, records))


def has_winner(run_dir: RunDir | Location | Path) -> bool:
    """Whether some trial of the run has a finite objective value and a checkpoint (what an export needs)."""
    manifest = read_manifest(run_dir)
    return results.best_trial(results.read_trials(run_dir, manifest), manifest.options.metric) is not None


def _search_and_confirm(run_dir: RunDir, space: Space, options: SearchOptions,
                        fold_refs: list[ray.ObjectRef], bases: dict[str, Base] | None, out: TextIO) -> list[str]:
    """The search of one model, then its confirmation; returns the confirmation runs whose workers were lost. A
    Ctrl-C that lands outside Ray Tune's graceful stop and the confirmation's (between the two, or while either
    starts) says how to go on before it ends the command; whatever ends it, no confirmation run is left training."""
    try:
        search_model(run_dir, space, options, fold_refs, out, bases)
        return _confirm(run_dir, fold_refs, bases, out)
    except KeyboardInterrupt:
        out.write(f"[{run_dir.name}] interrupted; continue with:\n  alphatune search resume {run_dir.parent}\n")
        out.flush()
        raise
    finally:
        confirm.stop_runs(run_dir)  # runs started early that nothing took over


def _confirm(run_dir: RunDir, fold_refs: list[ray.ObjectRef], bases: dict[str, Base] | None,
             out: TextIO) -> list[str]:
    """The confirmation of a search whose trials have all ended (``search.confirm``); nothing while some have not.
    Returns the confirmation runs whose workers were lost (``confirm.confirm``)."""
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    if results.unfinished_trials(manifest, records) == 0:
        return confirm.confirm(run_dir, manifest, fold_refs,
                               {kind: base.to_dict() for kind, base in (bases or {}).items()}, records, out)
    confirm.stop_runs(run_dir)  # interrupted: runs the search started early stop where they are, resumed with the rest
    return []


def _interrupted(run_dir: RunDir, out: TextIO, lost_runs: list[str]) -> bool:
    """Whether the search of ``run_dir`` stopped with trials or confirmation runs unfinished (Ctrl-C); says how to
    resume it. Trials or confirmation runs (``lost_runs``) that a fault of the environment interrupted (their
    workers lost beyond ``--max-failures``) end the command with one line (``RunDirError``): they are not failed,
    and resume continues them."""
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    left, runs = results.unfinished_trials(manifest, records), confirm.unfinished_runs(run_dir, manifest, records)
    faults = [trial.fault for trial in read_ledger(run_dir.work) or [] if trial.status is None and trial.fault]
    if faults:
        raise RunDirError(f"{run_dir}: {len(faults)} trial{'s' * (len(faults) != 1)} interrupted by a fault of the "
                          f"environment (the last: {faults[-1]}); they are not failed and continue from their last "
                          f"saved epoch: alphatune search resume {run_dir.parent}")
    if lost_runs:
        raise RunDirError(f"{run_dir}: {len(lost_runs)} confirmation run{'s' * (len(lost_runs) != 1)} interrupted by a "
                          f"fault of the environment, {'their workers' if len(lost_runs) != 1 else 'its worker'} lost "
                          f"beyond --max-failures (the last: {lost_runs[-1]}); not failed, resume trains "
                          f"{'them' if len(lost_runs) != 1 else 'it'} again from the last saved epoch: "
                          f"alphatune search resume {run_dir.parent}")
    if left or runs:
        what = f"{left} trials" if left else f"{runs} confirmation runs"
        out.write(f"[{run_dir.name}] interrupted with {what} unfinished; continue with:\n"
                  f"  alphatune search resume {run_dir.parent}\n")
        out.flush()
    return bool(left or runs)


def resume(path: str | Path | Location, stream: TextIO | None = None,
           within: str | Path | None = None) -> list[RunDir]:
    """Continue every run directory under ``path`` whose search is unfinished: finished trials are kept, the
    interrupted ones continue from their last epoch, the Optuna study goes on. Then export each. ``within``: a
    directory ``path`` must lie in (``--storage-path`` with ``--resume --name``)."""
    out = stream or sys.stdout
    run_dirs = find_run_dirs(path)
    if within is not None:
        root = str(Location.of(within)).rstrip("/") + "/"
        outside = [run_dir for run_dir in run_dirs if not str(run_dir).startswith(root)]
        if outside:
            raise RunDirError(f"{outside[0]} is not inside --storage-path {within}")
    check_resumable(run_dirs)
    with writing(run_dirs):
        for run_dir in run_dirs:
            note = run_dir.pull()
            if note:
                out.write(f"[{run_dir.name}] note: {note}\n")
        return _resume(run_dirs, out)


def _resume(run_dirs: list[RunDir], out: TextIO) -> list[RunDir]:
    manifests = {run_dir: read_manifest(run_dir) for run_dir in run_dirs}
    for run_dir, manifest in manifests.items():  # a study that cannot be opened: rebuilt, or one line, before Ray
        options = manifest.options
        _, note = open_study(run_dir.work, manifest.space, objective(options.metric),
                             StudyPlace.of_run(run_dir.work, manifest.model, options.study_storage, options.name))
        if note:
            out.write(f"[{manifest.model}] note: {note}\n")
    first = next(iter(manifests.values()))
    fold_refs = None
    for run_dir, manifest in manifests.items():
        if fold_refs is None:
            check_gpus(first.options.gpus_per_trial, first.options.address)
            check_named_address(first.options.address)
            spec = DataSpec.from_dict(manifest.data, f"{run_dir / MANIFEST}: data")
            ds = spec.open()
            check_nodes(run_dir.parent, first.options.address)
            preflight.check_dataset(ds, [m.model for m in manifests.values()])
            fold_datasets = open_folds(spec, manifest.folds, ds)
            start_ray(first.options.address, first.options.dashboard)
            check_gpus(first.options.gpus_per_trial, first.options.address)
            _, slot_lines = slot_plan(first.options.cpus_per_trial, first.options.gpus_per_trial,
                                      first.options.max_concurrent, first.options.address)
            out.write("".join(f"{line}\n" for line in slot_lines))
            fold_refs = [ray.put(fold) for fold in fold_datasets]
            del ds, fold_datasets
        with fault_guard(run_dir, f"continue with: alphatune search resume {run_dir.parent}"):
            out.write(f"[{manifest.model}] resuming {run_dir} from its ledger and study\n")
            out.flush()
            bases = read_bases(run_dir)
            lost_runs = _search_and_confirm(run_dir, manifest.space, manifest.options, fold_refs, bases, out)
            report(run_dir, out, writer="search resume")
        if _interrupted(run_dir, out, lost_runs):
            break
    return run_dirs


def report(run_dir: RunDir | Location | Path, stream: TextIO | None = None, qlib_data: str | None = None,
           schedule: str = "search", writer: str = "search export", out_dir: Location | None = None) -> Location | None:
    """Print the run's summary table and write its exports (into ``out_dir``, a path or URI; default the run directory); returns
    ``best.yaml`` (``None`` when no trial has a usable checkpoint yet). While trials are unfinished, best.yaml says
    it is provisional. ``qlib_data``, ``schedule`` and ``writer`` are ``search.export.write_exports``'s."""
    run_dir = as_run_dir(run_dir)
    out = stream or sys.stdout
    manifest = read_manifest(run_dir)
    records = results.read_trials(run_dir, manifest)
    metric = manifest.options.metric
    counts = Counter(record.outcome for record in records)
    out.write(f"\n[{manifest.model}] {len(records)} trials: " + ", ".join(
        f"{counts.get(key, 0)} {key}" for key in results.OUTCOMES) + f"; objective: best {metric}\n")
    target = out_dir if out_dir is not None else Location.of(run_dir.work)
    params = list(manifest.space.params)
    if len(records) > results.SHOWN:  # the best trials and the counts; every trial in a file
        (target / results.TABLE_FILE).write_text(results.summary_table(records, params, metric) + "\n")
        out.write(results.summary_table(records, params, metric, limit=results.SHOWN)
                  + f"; every trial: {(out_dir if out_dir is not None else run_dir.root) / results.TABLE_FILE}\n")
    else:
        out.write(results.summary_table(records, params, metric) + "\n")
    best = results.best_trial(records, metric)
    for note in results.unreadable_better(records, best, metric, run_dir):
        out.write(f"[{manifest.model}] note: {note}\n")
    if best is None:
        out.write(f"[{manifest.model}] no trial has a finite {metric} and a checkpoint: nothing to export\n")
        out.flush()
        return None
    overfitting = odds.overfitting(run_dir, records, metric, target)
    out.write(f"[{manifest.model}] " + odds.describe(overfitting, metric).replace("\n", f"\n[{manifest.model}] ") + "\n")
    confirmation = confirm.summary(run_dir, manifest, records)
    winner, line = best, (f"best trial {best.trial_id} (Optuna trial {best.optuna_trial}): {metric} "
                          f"{best.best(metric):.4f} at its kept epoch {best.best_epoch}")
    if confirmation is not None:
        out.write(f"[{manifest.model}] confirmation on {len(confirmation.seeds)} new seeds ({metric} at each run's "
                  f"kept epoch):\n{confirm.table(confirmation)}\n")
        chosen = confirm.winner_record(confirmation, records, metric) if confirmation.complete else None
        config = confirmation.config(confirmation.winner) if confirmation.winner else None
        if chosen is not None and config is not None:
            winner = chosen
            searched = "not tried" if config.search_value is None else f"{config.search_value:.4f}"
            line = (f"winner {config.trial}: best mean {metric} {config.mean:.4f} over {len(confirmation.seeds)} "
                    f"seeds (in the search, on one seed: {searched})")
            if confirmation.against_default is not None:
                line += f"\n  against Qlib's default: {confirmation.against_default['verdict']}"
        elif not confirmation.complete:
            line += " (single seed: the confirmation is unfinished)"
    left = results.unfinished_trials(manifest, records) + confirm.unfinished_runs(run_dir, manifest, records)
    exported = exporting.write_exports(run_dir, manifest, winner, dict(counts), qlib_data=qlib_data, schedule=schedule,
                                       writer=writer, unfinished=left, out_dir=out_dir, confirmation=confirmation,
                                       overfitting=overfitting)
    if out_dir is None:
        run_dir.push()
    out.write(f"[{manifest.model}] {line}\n  {exported.best}\n  {exported.qlib}\n")
    for note in exported.notes:
        out.write(f"  note: {note}\n")
    place = StudyPlace.of_run(run_dir.work, manifest.model, manifest.options.study_storage, manifest.options.name)
    damaged = unopenable(place)
    out.write(f"  tensorboard --logdir {run_dir.work} --host 127.0.0.1\n  optuna-dashboard {place.url}"
              + (f"   (study {place.name})" if place.name != manifest.model else "") + "\n")
    if damaged:
        out.write(f"  note: the study cannot be opened ({damaged}); `alphatune search resume {run_dir.parent}` "
                  f"rebuilds it from the ledger\n")
    out.flush()
    return exported.best


def export(path: str | Path | Location, stream: TextIO | None = None, qlib_data: str | None = None,
           schedule: str = "search", out_dir: str | Path | Location | None = None) -> list[Location]:
    """Rewrite ``best.yaml`` and ``best_qlib.yaml`` of every run directory under ``path`` (finished or not), into
    the run directory or, with ``out_dir`` (a path or URI), there (one folder per model when there are several).
    Reads the run's records only and takes no lock: a read-only run, or one a search is writing, can be exported
    elsewhere."""
    out = stream or sys.stdout
    written = []
    run_dirs = find_run_dirs(path)
    targets = {run_dir: (Location.of(out_dir) / run_dir.name if len(run_dirs) > 1 else Location.of(out_dir))
               if out_dir else None for run_dir in run_dirs}
    for run_dir, target in targets.items():
        if target is not None:
            check_writable(target, "--out")
        elif run_dir.root.unwritable():
            raise RunDirError(f"{run_dir}: cannot write best.yaml there ({run_dir.root.unwritable()}); export --out "
                              f"DIR writes the exports elsewhere")
    for run_dir, target in targets.items():
        if target is not None:
            target.makedirs()
        with run_dir.reader() as copy, fault_guard(target or run_dir, "export again"):
            for note in (copy.pull(), busy_note(run_dir)):
                if note:
                    out.write(f"[{run_dir.name}] note: {note}\n")
            best = report(copy, out, qlib_data=qlib_data, schedule=schedule,
                          out_dir=target if target is not None or run_dir.is_local else run_dir.root)
        if best is not None:
            written.append(best)
    return written


def busy_note(run_dir: RunDir) -> str | None:
    """A note when a search is writing ``run_dir`` right now: what is exported is what it has recorded so far."""
    holder = writer.holder(run_dir.root)
    return None if holder is None else (f"{run_dir} is being written by {holder}: exported as far as it has recorded "
                                        f"it" + ("" if run_dir.is_local else " in the bucket"))
