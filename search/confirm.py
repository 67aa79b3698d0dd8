"""Confirmation: after a search, its top configurations and Qlib's default are trained again on new seeds.

A search tries each configuration once, on one seed, and the highest number it sees is partly luck. With
``--confirm K --confirm-seeds S`` the driver, once every trial has ended, takes the K best configurations by the
search's objective (one per distinct configuration) and Qlib's published config (the space's ``default``, the
search's first point) and trains each again on the same S new seeds, at the search's epoch budget, with the trials'
resources, as Ray tasks spread over the cluster. Runs the plan will hold whatever the last trials do start earlier,
in the slots those trials leave idle (``EarlyStart``); the plan takes them over. The winner is the best mean over the seeds; the winner and the
default, trained on the same seeds, are compared pair by pair (``evaluation.overfitting.paired``).

Every run goes through the search's one training path (``search.trial.train_run``) into ``RUN/confirm/<run>/``
(``<trial>-seed<S>``: ``model.pt``, ``state.pt``, ``valid_ic.json``), through the same storage layer. The plan
(candidates and seeds) is written to the run's ledger once, before the first run starts, and each run's end as it
ends (``search.ledger``): a search interrupted during its confirmation resumes it from there, without training a
finished run again, and a run cut short goes on from its last epoch (its ``state.pt``).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np
import ray
from ray.tune import Callback
from ray.util.queue import Queue

from alphatune import models
from alphatune.progress import Progress
from alphatune.evaluation.best import Confirmation, ConfirmedConfig, ConfirmedRun
from alphatune.search.cluster import Slots
from alphatune.search.ledger import RunRecords, read_confirmation, read_ledger
from alphatune.search.objective import finite, objective
from alphatune.evaluation.overfitting import paired
from alphatune.search import results
from alphatune.search.results import TrialRecord, best_trial, kept_model
from alphatune.search.rundir import CONFIRM_DIR, EnvironmentFault, Manifest, RunDir
from alphatune.search.trial import (ERROR, FAULT, check_visible, fold_row, reporting_failures, report_fields,
                                   train_folds, trial_hyperparameters)
from alphatune.storage import Location

DEFAULT = "default"  # the default's name when no trial of the search tried it
FOLD_RESULTS = "fold_results"  # a confirmation run's folds in its ledger entry: fold, valid_ic, valid_loss, ...
_SEED_STREAM = 0x636F6E66    # "conf": keeps confirmation seeds apart from the trials' (search.study.trial_seed)


@dataclass(frozen=True)
class Candidate:
    """A configuration to confirm: the search trial that tried it (or ``default``), its searched values, whether it
    is Qlib's published config, and its single-seed value in the search (``None``: none)."""

    trial: str
    config: dict[str, Any]
    default: bool
    search_value: float | None


def confirmation_seeds(search_seed: int | None, count: int) -> list[int]:
    """``count`` training seeds for the confirmation: derived from the search's ``--seed`` (the same search
    confirms on the same seeds), or drawn from the operating system's entropy without one. None of them is a
    trial's seed unless by a 1-in-2³¹ coincidence."""
    if search_seed is None:
        return [int.from_bytes(os.urandom(4), "little") >> 1 for _ in range(count)]
    return [int(np.random.SeedSequence([search_seed, _SEED_STREAM, i]).generate_state(1)[0] >> 1)
            for i in range(count)]


def plan_seeds(run_dir: RunDir, options: Any) -> list[int]:
    """The seeds the confirmation's plan will hold, known before the plan is written (runs start early): with
    ``--seed``, ``confirmation_seeds``'; without one, the seeds of runs the ledger already records (started early
    by an earlier process of this search), then new draws, ``--confirm-seeds`` in all."""
    if options.seed is not None:
        return confirmation_seeds(options.seed, options.confirm_seeds)
    _, done = read_confirmation(run_dir.work)
    recorded = [int(entry["seed"]) for entry in done.values() if isinstance(entry.get("seed"), int)]
    return list(dict.fromkeys(recorded + confirmation_seeds(None, options.confirm_seeds)))[:options.confirm_seeds]


def run_id(trial: str, seed: int) -> str:
    return f"{trial}-seed{seed}"


def run_location(run_dir: RunDir, trial: str, seed: int) -> Location:
    """Where the confirmation run of ``trial`` on ``seed`` keeps its files."""
    return run_dir.root / CONFIRM_DIR / run_id(trial, seed)


def candidates(records: list[TrialRecord], configs: dict[str, dict[str, Any]], manifest: Manifest,
               top: int) -> list[Candidate]:
    """The ``top`` best distinct configurations of the search by its objective (trials that did not fail, with a
    finite value; with walk-forward folds, those judged on every fold first), then Qlib's default when it is not
    among them. ``configs``: each trial's searched values."""
    space, goal = manifest.space, objective(manifest.options.metric)
    default = {name: space.default[name] for name in space.params}
    searched = lambda trial_id: {name: configs.get(trial_id, {}).get(name) for name in space.params}  # noqa: E731
    scored = sorted((r for r in records if r.outcome != "failed" and finite(r.best(goal.name))
                     and r.trial_id in configs), key=lambda r: (not r.complete, goal.sort_key(r.best(goal.name))))
    chosen: list[Candidate] = []
    seen: list[dict[str, Any]] = []
    for record in scored:
        config = searched(record.trial_id)
        if config in seen:
            continue
        seen.append(config)
        if len(chosen) < top:
            chosen.append(Candidate(record.trial_id, config, config == default, record.best(goal.name)))
    if not any(candidate.default for candidate in chosen):
        tried = [r for r in scored if searched(r.trial_id) == default] or \
                [r for r in records if r.trial_id in configs and searched(r.trial_id) == default]
        if tried:
            value = tried[0].best(goal.name)
            chosen.append(Candidate(tried[0].trial_id, default, True, value if finite(value) else None))
        else:
            chosen.append(Candidate(DEFAULT, default, True, None))
    return chosen


def _confirm_run(fold_refs: list[Any], hyperparameters: models.Hyperparameters, run_dir: str, directory: str,
                 progress: Any = None, name: str = "", **kwargs: Any) -> dict[str, Any]:
    """A Ray task: one confirmation run over every fold, through the search's training path; returns its last
    report (with walk-forward folds, ``fold_results``: each fold's kept numbers), or the report of its failure
    (``search.trial.reporting_failures``: ``error`` its own, ``fault`` the environment's). Each epoch is also put on
    ``progress`` (a ``ray.util.queue.Queue``, as ``(name, epoch)``) for the driver's display."""
    last: dict[str, Any] = {}
    folds: dict[int, dict[str, Any]] = {}

    def keep(result: dict[str, Any]) -> None:
        last.update(result)
        if progress is not None:
            try:
                progress.put_nowait((name, int(result["epoch"])))
            except Exception:  # a display that cannot be told is no reason to stop training
                pass
        if result.get("fold_final"):
            folds[int(result["fold"])] = fold_row(result)

    with reporting_failures(lambda failure: last.update(failure), Location.of(directory)):
        check_visible(RunDir.at(run_dir))
        last.update(train_folds(hyperparameters, Location.of(directory),
                                datasets=[ray.get(reference) for reference in fold_refs], report=keep, **kwargs))
    return {**last, **({FOLD_RESULTS: [folds[fold] for fold in sorted(folds)]} if folds else {})}


class Runs:
    """The confirmation runs of one run directory in flight: Ray tasks with the trials' resources, each over every
    fold, each epoch put on a queue for the display (``Progress``), each end written to the ledger as it comes
    (``record``). Started by ``confirm`` once the plan is made, or earlier by the search (``EarlyStart``) while its
    last trials still train; ``RUNS`` keeps them between the two."""

    def __init__(self, run_dir: RunDir, manifest: Manifest, fold_refs: list[Any], bases: dict[str, Any] | None) -> None:
        options = manifest.options
        self.run_dir, self.manifest, self.fold_refs = run_dir, manifest, list(fold_refs)
        device = "cuda" if options.gpus_per_trial > 0 else "cpu"
        self.task = ray.remote(_confirm_run).options(
            num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial,
            max_retries=-1 if options.max_failures < 0 else options.max_failures, retry_exceptions=False)
        self.common = {"metric": options.metric, "threads": max(1, int(options.cpus_per_trial)), "device": device,
                       "speed": options.speed(device), "bases": bases, "run_dir": str(run_dir.root)}
        self.seeds = plan_seeds(run_dir, options)  # drawn once: the early runs' seeds are the plan's
        self.pending: dict[Any, tuple[Candidate, int]] = {}
        self.epochs: dict[str, set[int]] = {}
        self.queue = Queue()
        self.ledger = RunRecords.of(run_dir.work)
        self.budget = options.max_epochs * len(fold_refs)

    def names(self) -> set[str]:
        return {run_id(candidate.trial, seed) for candidate, seed in self.pending.values()}

    def start(self, candidate: Candidate, seed: int) -> None:
        options, space = self.manifest.options, self.manifest.space
        hyperparameters = trial_hyperparameters(space, {**candidate.config, "seed": seed}, options.metric,
                                                options.max_epochs)
        reference = self.task.remote(self.fold_refs, hyperparameters,
                                     directory=str(run_location(self.run_dir, candidate.trial, seed)),
                                     progress=self.queue, name=run_id(candidate.trial, seed), **self.common)
        self.pending[reference] = (candidate, seed)

    def poll(self, timeout: float) -> list[tuple[Candidate, int, Any]]:
        """The runs that ended within ``timeout`` seconds: (candidate, seed, its report or the error it raised);
        the epochs reported meanwhile are counted (``epochs``)."""
        ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=timeout) \
            if self.pending else ([], [])
        while not self.queue.empty():
            name, epoch = self.queue.get_nowait()
            self.epochs.setdefault(name, set()).add(epoch)
        ended = []
        for reference in ready:
            candidate, seed = self.pending.pop(reference)
            try:
                ended.append((candidate, seed, ray.get(reference)))
            except Exception as error:  # its worker or node lost beyond the retries: the environment's fault
                ended.append((candidate, seed, error))
        return ended

    def record(self, candidate: Candidate, seed: int, result: Any) -> str | None:
        """Write an ended run to the ledger; what to say of it (``None``: its worker was lost, nothing written, it
        is trained again on resume). ``EnvironmentFault`` when its storage failed."""
        goal = objective(self.manifest.options.metric)
        name = run_id(candidate.trial, seed)
        if isinstance(result, BaseException):
            return None
        if result.get(FAULT):  # its storage failed: stop here, every run stays as it is
            raise EnvironmentFault(str(result[FAULT]), confirmation_run=name, node=result.get("node"),
                                   full=bool(result.get("full")))
        if result.get(ERROR):
            self.ledger.confirmed_run(name, trial=candidate.trial, seed=seed, error=result[ERROR])
            return f"failed: {result[ERROR]}"
        self.ledger.confirmed_run(name, trial=candidate.trial, seed=seed, **report_fields(result),
                              **({FOLD_RESULTS: result[FOLD_RESULTS]} if FOLD_RESULTS in result else {}))
        self.run_dir.push(complete=False)
        if FOLD_RESULTS in result:
            return (f"{goal.name} {result.get(goal.best, math.nan):.4f}, the mean over its folds ("
                    + ", ".join(f"{fold[goal.name]:.4f}" for fold in result[FOLD_RESULTS]) + ")")
        return (f"{goal.name} {result.get(goal.best, math.nan):.4f} at its kept epoch {result.get('best_epoch')} of "
                f"{result.get('epoch')}")

    def stop(self) -> None:
        """Cancel the runs still training (each goes on from its last epoch when resumed); save the records."""
        for reference in self.pending:
            ray.cancel(reference, force=True)
        self.pending.clear()
        ray.kill(self.queue.actor)
        self.ledger.close()
        with contextlib.suppress(Exception):  # best effort: the storage may be what failed
            self.run_dir.push()


RUNS: dict[str, Runs] = {}  # run root → its confirmation runs in flight (started early, taken over by confirm)


def stop_runs(run_dir: RunDir) -> None:
    """Cancel the confirmation runs of ``run_dir`` still in flight (an interrupted search); nothing when none."""
    runs = RUNS.pop(run_dir.root.uri, None)
    if runs is not None:
        runs.stop()


def early_candidates(records: list[TrialRecord], configs: dict[str, dict[str, Any]], manifest: Manifest,
                     running: list[dict[str, Any]]) -> list[Candidate]:
    """The candidates the plan will hold whatever the trials still ``running`` (their searched values) do: with r
    of them running, the top K - r of the ended ones (each running trial can push at most one out), and Qlib's
    default; none whose configuration a running trial shares (it could take that candidate's place)."""
    space = manifest.space
    ended = [record for record in records if record.outcome != "running"]
    sure = candidates(ended, configs, manifest, max(0, manifest.options.confirm - len(running)))
    shared = [{name: config.get(name) for name in space.params} for config in running]
    return [candidate for candidate in sure if candidate.config not in shared]


class EarlyStart(Callback):
    """In the search: once every trial has been handed out and slots fall idle (the last trials still training),
    start the confirmation runs of the candidates the plan will hold anyway (``early_candidates``) in them, longest
    first. Nothing of the plan is written yet: each run's end is recorded as it comes, and ``confirm`` picks them up."""

    def __init__(self, runs: Runs, searcher: Any, slots: Slots) -> None:
        self.runs, self.searcher, self.slots = runs, searcher, slots
        self.ended = -1
        self.queue: list[tuple[Candidate, int]] = []

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.searcher.all_handed_out():
            return
        live = [trial for trial in trials if trial.status in ("RUNNING", "PENDING")]
        ended = len(trials) - len(live)
        if ended != self.ended:  # a trial ended: what is sure may have grown
            self.ended = ended
            run_dir, manifest = self.runs.run_dir, self.runs.manifest
            records = results.read_trials(run_dir, manifest)
            configs = {trial.trial_id: trial.config for trial in read_ledger(run_dir.work) or []}
            _, done = read_confirmation(run_dir.work)
            started = self.runs.names() | set(done)
            cost = epoch_seconds(run_dir)
            self.queue = sorted(((candidate, seed) for candidate in early_candidates(
                records, configs, manifest, [trial.config for trial in live]) for seed in self.runs.seeds
                if run_id(candidate.trial, seed) not in started), key=lambda item: -cost.get(item[0].trial, 0.0))
        for candidate, seed, result in self.runs.poll(0):
            self.runs.record(candidate, seed, result)
        while self.queue and len(live) + len(self.runs.pending) < self.slots.running():
            self.runs.start(*self.queue.pop(0))


def confirm(run_dir: RunDir, manifest: Manifest, fold_refs: list[Any], bases: dict[str, Any] | None,
            records: list[TrialRecord], out: TextIO) -> list[str]:
    """Run (or go on with) the confirmation of a search whose trials have all ended, each run over every fold
    (``fold_refs``: the folds' datasets in the object store), taking over the runs the search started early.
    Returns the runs whose workers were lost beyond ``--max-failures`` (a fault of the environment: not failed,
    resume trains them again from their last epoch), each as ``<run>: <why>``; empty when the confirmation is
    complete, or was interrupted (Ctrl-C: ``unfinished_runs`` counts what is left). Nothing to do with
    ``--confirm 0``. Whatever ends it, no run is left training."""
    options, space = manifest.options, manifest.space
    if options.confirm == 0:
        return []
    runs = RUNS.pop(run_dir.root.uri, None) or Runs(run_dir, manifest, fold_refs, bases)
    plan, done = read_confirmation(run_dir.work)
    if plan is None:
        plan = {"seeds": runs.seeds, "top": options.confirm,
                "candidates": [asdict(candidate) for candidate in planned(run_dir, manifest, records)]}
        runs.ledger.confirmation(plan)
        run_dir.push()
    chosen = [Candidate(**candidate) for candidate in plan["candidates"]]
    seeds = [int(seed) for seed in plan["seeds"]]
    # Longest first (by the seconds each candidate's search trial took per epoch), so that no long run is left
    # alone at the end while the other slots idle.
    cost = epoch_seconds(run_dir)
    early = runs.names()
    todo = sorted(((candidate, seed) for candidate in chosen for seed in seeds
                   if run_id(candidate.trial, seed) not in done and run_id(candidate.trial, seed) not in early),
                  key=lambda item: -cost.get(item[0].trial, statistics.fmean(cost.values()) if cost else 0.0))
    total = len(chosen) * len(seeds)
    names = ", ".join(candidate.trial + (" (Qlib's default)" if candidate.default else "") for candidate in chosen)
    out.write(f"[{space.model}] confirming {len(chosen)} configurations ({names}) on {len(seeds)} new seeds each: "
              f"{len(todo) + len(early)} of {total} runs to train"
              + (f" ({len(early)} started while the search's last trials trained)" if early else "")
              + f", at most {options.max_epochs} epochs each"
              + (f" on each of {len(fold_refs)} folds" if len(fold_refs) > 1 else "") + "\n")
    out.flush()
    slots = Slots(options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent, options.address)
    finished, lost = total - len(todo) - len(early), []
    shown = Progress((len(todo) + len(early)) * runs.budget, f"{space.model} confirmation", "epoch", out,
                     options.progress_seconds)
    counted = sum(len(epochs) for epochs in runs.epochs.values())
    shown.update(counted)
    began = time.monotonic()
    try:
        while todo or runs.pending:
            while todo and len(runs.pending) < slots.running():
                runs.start(*todo.pop(0))
            ended = runs.poll(1.0)
            now = sum(len(epochs) for epochs in runs.epochs.values())
            shown.update(now - counted)
            left = (time.monotonic() - began) / (now - counted) * (shown.total - now) if now > counted else None
            running = ", ".join(f"{candidate.trial[:4]} seed {str(seed)[:4]}… "
                                f"{len(runs.epochs.get(run_id(candidate.trial, seed), ()))}/{runs.budget}"
                                for candidate, seed in runs.pending.values())
            shown.status((f"running: {running} · " if running else "") + f"{finished} of {total} runs done", left)
            counted = now
            for candidate, seed, result in ended:
                line = runs.record(candidate, seed, result)
                if line is None:
                    lost.append(f"{run_id(candidate.trial, seed)}: {_last_line(result)}")
                    shown.event(f"[{space.model}] confirm {candidate.trial} seed {seed}: interrupted, its worker was "
                                f"lost ({_last_line(result)}); not failed: resume trains it again from its last epoch")
                    continue
                finished += 1
                shown.event(f"[{space.model}] confirm {candidate.trial} seed {seed}: {line} [{finished}/{total}]")
    except KeyboardInterrupt:  # the driver says how to go on (unfinished_runs)
        runs.stop()
        return []
    except BaseException:  # a fault (fault_guard says what failed and how to go on) or a bug: nothing left running
        runs.stop()
        raise
    finally:
        shown.close()
    runs.stop()
    return lost


def epoch_seconds(run_dir: RunDir) -> dict[str, float]:
    """Each search trial's mean seconds per epoch (its reports' own timing), from the ledger."""
    out = {}
    for trial in read_ledger(run_dir.work) or []:
        seconds = [float(row["seconds"]) for row in trial.results if finite(row.get("seconds"))]
        if seconds:
            out[trial.trial_id] = statistics.fmean(seconds)
    return out


def _last_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1][:300] if text else type(error).__name__


def planned(run_dir: RunDir, manifest: Manifest, records: list[TrialRecord]) -> list[Candidate]:
    """The configurations the confirmation's plan holds once the search's trials (``records``) have all ended."""
    configs = {trial.trial_id: trial.config for trial in read_ledger(run_dir.work) or []}
    return candidates(records, configs, manifest, manifest.options.confirm)


def unfinished_runs(run_dir: RunDir, manifest: Manifest, records: list[TrialRecord]) -> int:
    """How many confirmation runs have not ended: 0 without ``--confirm`` or while some of the search's trials
    (``records``) have not; every run of the plan it will make when the search stopped after its last trial and
    before the plan was written."""
    if manifest.options.confirm == 0 or results.unfinished_trials(manifest, records):
        return 0
    plan, done = read_confirmation(run_dir.work)
    if plan is None:
        return len(planned(run_dir, manifest, records)) * manifest.options.confirm_seeds
    return sum(run_id(candidate["trial"], int(seed)) not in done
               for candidate in plan["candidates"] for seed in plan["seeds"])


def summary(run_dir: RunDir, manifest: Manifest, records: list[TrialRecord]) -> Confirmation | None:
    """The confirmation as best.yaml records it (``None`` when none was planned): every configuration's runs,
    mean and standard deviation (ddof 1), the winner (best mean; among configurations with every seed when any has
    them all), the search's single-seed winner, and the winner against the default on their common seeds."""
    plan, done = read_confirmation(run_dir.work)
    if plan is None:
        return None
    options, space = manifest.options, manifest.space
    goal = objective(options.metric)
    seeds = [int(seed) for seed in plan["seeds"]]
    configs = []
    for candidate in (Candidate(**entry) for entry in plan["candidates"]):
        runs = []
        for seed in seeds:
            entry = done.get(run_id(candidate.trial, seed))
            value = entry.get(goal.best) if entry is not None else None
            value = float(value) if finite(value) else None
            seconds = (entry["reported_at"] - entry["started_at"]) if entry and finite(entry.get("reported_at")) \
                and finite(entry.get("started_at")) else None
            folds = [float(fold[goal.name]) if finite(fold.get(goal.name)) else None
                     for fold in (entry or {}).get(FOLD_RESULTS) or []] or None
            runs.append(ConfirmedRun(
                seed=seed, value=value, best_epoch=entry.get("best_epoch") if entry else None,
                epochs=entry.get("epoch") if entry else None, seconds=round(seconds, 1) if seconds else None,
                checkpoint=str(kept_model(run_location(run_dir, candidate.trial, seed), manifest.fold_count))
                if value is not None else None, folds=folds,
                error=(entry.get("error") or (None if value is not None else f"non-finite {goal.name}"))
                if entry is not None else "not run yet"))
        values = [run.value for run in runs if run.value is not None]
        hyperparameters = trial_hyperparameters(space, {**candidate.config, "seed": seeds[0]}, options.metric,
                                                options.max_epochs).to_dict()
        hyperparameters.pop("seed", None)
        pretrained = next((done[run_id(candidate.trial, seed)].get("pretrained") for seed in seeds
                           if run_id(candidate.trial, seed) in done), None)
        configs.append(ConfirmedConfig(
            trial=candidate.trial, default=candidate.default, search_value=candidate.search_value,
            hyperparameters=hyperparameters, runs=runs, pretrained=pretrained,
            mean=statistics.fmean(values) if values else None,
            std=statistics.stdev(values) if len(values) > 1 else None))
    complete = all(run.error != "not run yet" for config in configs for run in config.runs)
    full = [config for config in configs if config.mean is not None and all(run.value is not None for run in config.runs)]
    eligible = full or [config for config in configs if config.mean is not None]
    winner = min(eligible, key=lambda config: goal.sort_key(config.mean)) if eligible else None
    search_best = best_trial(records, options.metric)
    return Confirmation(metric=goal.name, seeds=seeds, top=int(plan["top"]), configs=configs,
                        winner=winner.trial if winner else None,
                        search_winner=search_best.trial_id if search_best else None, complete=complete,
                        against_default=_against_default(winner, configs, goal))


def _against_default(winner: ConfirmedConfig | None, configs: list[ConfirmedConfig], goal: Any) -> dict[str, Any] | None:
    default = next((config for config in configs if config.default), None)
    if winner is None or default is None:
        return None
    if winner is default:
        return {"seeds": sum(run.value is not None for run in winner.runs), "mean_difference": 0.0,
                "standard_error": None, "ahead": 0, "beyond_noise": False,
                "verdict": "the winner is Qlib's default config itself: the search found nothing better on these seeds"}
    # Per seed; with walk-forward folds a run's value is the mean over its folds (a seed's folds share its draws:
    # they are not independent pairs).
    def values(config: ConfirmedConfig) -> dict[Any, float]:
        return {run.seed: run.value for run in config.runs if run.value is not None}

    comparison = paired(values(winner), values(default), maximize=goal.mode == "max")
    if comparison is None:
        return None
    return {"seeds": comparison.seeds, "mean_difference": comparison.mean,
            "standard_error": comparison.standard_error, "ahead": comparison.ahead,
            "beyond_noise": comparison.beyond_noise, "verdict": comparison.verdict(goal.name)}


def table(confirmation: Confirmation) -> str:
    """The printed summary: one row per configuration, its search value, every seed's value, mean ± std."""
    rows = [["config", "search", *(f"seed {seed}" for seed in confirmation.seeds), "mean ± std", ""]]
    for config in confirmation.configs:
        mean = "-" if config.mean is None else f"{config.mean:.4f}" + (f" ± {config.std:.4f}" if config.std else "")
        marks = [mark for mark, on in (("winner", config.trial == confirmation.winner),
                                       ("search's best", config.trial == confirmation.search_winner)) if on]
        rows.append([config.trial + (" (default)" if config.default else ""),
                     "-" if config.search_value is None else f"{config.search_value:.4f}",
                     *("-" if run.value is None else f"{run.value:.4f}" for run in config.runs), mean,
                     ", ".join(marks)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def winner_record(confirmation: Confirmation, records: list[TrialRecord], metric: str) -> TrialRecord | None:
    """The confirmed winner as the export writes it: its search trial (its kept epoch's numbers and model) when the
    driver can read that trial's model, else its first confirmation run that has one; ``None`` without a winner."""
    config = confirmation.config(confirmation.winner) if confirmation.winner else None
    if config is None:
        return None
    trial = next((record for record in records if record.trial_id == config.trial), None)
    if trial is not None and trial.checkpoint is not None:
        return trial
    run = next((run for run in config.runs if run.checkpoint is not None), None)
    if run is None:
        return None
    value = {"valid_ic": math.nan, "valid_loss": math.nan, metric: run.value}
    return TrialRecord(trial_id=run_id(config.trial, run.seed), outcome="finished",
                       hyperparameters={**config.hyperparameters, "seed": run.seed}, epochs=run.epochs or 0,
                       best_epoch=run.best_epoch or 0, best_valid_ic=value["valid_ic"],
                       best_valid_loss=value["valid_loss"], checkpoint=Location.of(run.checkpoint),
                       pretrained=config.pretrained)
