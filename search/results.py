"""A run's trials as the summary and the export see them, read from the run's own ledger, and the best one.

Only the project's own JSON records are read (``search.ledger``; for a run directory of an earlier version, the
plain-JSON files Tune wrote, ``search.tune_state``): Ray's pickled experiment state is never loaded here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alphatune.search import tune_state
from alphatune.search.ledger import LEDGER, LedgerTrial, RunRecords
from alphatune.search.objective import Objective, finite, objective
from alphatune.search.folds import fold_dir
from alphatune.search.rundir import TRIALS_DIR, Manifest, RunDir, RunDirError, as_run_dir
from alphatune.search.trial import MODEL_FILE, fold_row, trial_hyperparameters
from alphatune.storage import Location

OUTCOMES = ("running", "finished", "pruned", "failed")


def outcome(status: str | None, last_result: dict[str, Any], metric: str) -> str:
    """How a trial ended (or stands): running, finished, pruned or failed.

    failed: it failed by itself (``ERROR``, or its last report carries an ``error``), its last report has a
    non-finite ``metric``, or it ended without reporting.
    finished: it ended by its own budget or early stopping (its last report says ``final``). pruned: ASHA stopped
    it before that. running: it has not ended (after an interrupted search: it will continue on resume).
    """
    if status == "ERROR" or last_result.get("error"):
        return "failed"
    if metric in last_result and not finite(last_result[metric]):
        return "failed"
    if status is None:
        return "running"
    if not last_result:
        return "failed"
    return "finished" if last_result.get("final") else "pruned"


@dataclass
class TrialRecord:
    """One trial as the summary and the export see it."""

    trial_id: str
    outcome: str
    hyperparameters: dict[str, Any]  # the full flat dict the trial trained with ({} if it never got a config)
    epochs: int
    best_epoch: int
    best_valid_ic: float
    best_valid_loss: float
    checkpoint: Location | None  # its best model, where the driver can read it (None: it has none there)
    pretrained: str | None = None  # the base file the trial started from, "none (...)", or None (not reported)
    optuna_trial: int | None = None
    precision: str | None = None   # what it trained in (float32, bfloat16, float16); None: not reported
    folds: list[dict[str, Any]] = field(default_factory=list)  # walk-forward folds it ended: fold, valid_ic,
    fold_count: int = 1                                            # valid_loss, best_epoch, epochs (of all)
    fault: str | None = None       # the fault of the environment that interrupted it (it is unfinished)

    @property
    def complete(self) -> bool:
        """Whether it was judged on every fold (always, with one fold)."""
        return self.fold_count == 1 or len(self.folds) == self.fold_count

    def best(self, metric: str) -> float:
        """The trial's value of the objective ``metric`` (``valid_ic``/``valid_loss``) at its kept epoch."""
        return self.best_valid_ic if metric == "valid_ic" else self.best_valid_loss


def _record(manifest: Manifest, trial: LedgerTrial, checkpoint: Location | None) -> TrialRecord:
    metric = manifest.options.metric
    result = trial.last_result
    rows = [row for _, row in sorted(trial.epochs().items())]
    folds = [fold_row(row) for row in rows if row.get("fold_final")]
    try:
        hyperparameters = trial_hyperparameters(manifest.space, trial.config, metric,
                                                manifest.options.max_epochs).to_dict()
    except (KeyError, ValueError):  # a trial Tune created but never configured
        hyperparameters = {}
    return TrialRecord(
        trial_id=trial.trial_id, outcome=outcome(trial.status, result, metric), hyperparameters=hyperparameters,
        epochs=len(rows) if manifest.fold_count > 1 else int(result.get("epoch", 0)),
        best_epoch=int(result.get("best_epoch", 0)),
        best_valid_ic=float(result.get("best_valid_ic", math.nan)),
        best_valid_loss=float(result.get("best_valid_loss", math.nan)), checkpoint=checkpoint,
        pretrained=result.get("pretrained"), optuna_trial=trial.optuna_trial, precision=result.get("precision"),
        folds=folds, fold_count=manifest.fold_count, fault=trial.fault if trial.status is None else None)


def read_trials(run_dir: RunDir | Location | Path, manifest: Manifest) -> list[TrialRecord]:
    """Every trial of the run, in the order they started, with its checkpoint where the driver can read it (the
    run's ``RunRecords``: each trial's record is made once per record of it). Raises ``RunDirError`` when the run
    has no record of its trials yet."""
    run_dir = as_run_dir(run_dir)
    ledger = RunRecords.of(run_dir.work)
    if ledger.exists:
        readable = run_dir.checkpoints()
        trials_root = str(run_dir.root / TRIALS_DIR) + "/"
        kind = ("trial record", manifest.fold_count, manifest.options.metric, manifest.options.max_epochs,
                manifest.space.source)
        out = []
        for trial in ledger.trials():
            record = ledger.derived(kind, trial, lambda trial: _record(manifest, trial, None))
            model = kept_model(run_dir.trial(trial.trial_id), manifest.fold_count)
            out.append(replace(record, checkpoint=model if str(model).removeprefix(trials_root) in readable else None))
        return out
    older = tune_state.read_tune_trials(run_dir.work)
    if older is None:
        raise RunDirError(f"{run_dir}: no record of any trial yet ({run_dir / LEDGER} does not exist)")
    return [_record(manifest, trial, Location.of(checkpoint) if checkpoint else None) for trial, checkpoint in older]


def unfinished_trials(manifest: Manifest, records: list[TrialRecord]) -> int:
    """How many of the run's trials (``records``) have not ended: running when the search stopped, or never
    created."""
    return sum(record.outcome == "running" for record in records) + max(0, manifest.options.samples - len(records))


def kept_model(directory: Location, folds: int) -> Location:
    """The model a trial (or a confirmation run) keeps in its ``directory``: its kept epoch's, or with walk-forward
    folds the last fold's (trained on the most recent window), which best.yaml points to."""
    return fold_dir(directory, folds, folds) / MODEL_FILE


def best_trial(records: list[TrialRecord], metric: str) -> TrialRecord | None:
    """The trial with the best objective value at its kept epoch, among those that did not fail and have a
    checkpoint (a pruned trial qualifies: its best epoch is as real as anyone's; with walk-forward folds, only a
    trial judged on every fold, whose value is the mean over all of them); ``None`` if none."""
    goal = objective(metric)
    eligible = [r for r in records if r.outcome != "failed" and r.checkpoint is not None and finite(r.best(metric))
                and r.complete]
    return min(eligible, key=lambda r: goal.sort_key(r.best(metric))) if eligible else None


def unreadable_better(records: list[TrialRecord], best: TrialRecord | None, metric: str, run_dir: RunDir
                      ) -> list[str]:
    """What an export must say of trials it passes over: a trial with a better value than the winner (or any scored
    trial, when there is no winner) whose best model the driver cannot read (written where the driver does not see:
    a node without the run directory)."""
    goal = objective(metric)
    notes = []
    for record in records:
        value = record.best(metric)
        if record.checkpoint is None and record.outcome != "failed" and record.complete and finite(value) and (
                best is None or goal.better(value, best.best(metric))):
            notes.append(f"trial {record.trial_id} ({metric} {value:.4f}"
                         + (f", better than the winner's {best.best(metric):.4f}" if best is not None else "")
                         + f") is passed over: its model {run_dir.trial(record.trial_id) / MODEL_FILE} cannot be read "
                           f"(written on a node that does not see the run directory?)")
    return notes


TABLE_FILE = "trials.txt"  # the whole summary table, beside best.yaml
SHOWN = 20  # the rows a printed summary shows: the best ones (the whole table is in TABLE_FILE)


def summary_table(records: list[TrialRecord], space_params: list[str], metric: str, limit: int | None = None) -> str:
    """A plain-text table of every trial (or of the first ``limit``, then one line saying how many are left out and
    how they stand): scored trials best first, then running ones, then failed ones."""
    goal: Objective = objective(metric)
    rank = {"finished": 0, "pruned": 0, "running": 1, "failed": 2}

    def key(record: TrialRecord) -> tuple[int, float]:
        return rank.get(record.outcome, 1), goal.sort_key(record.best(metric))

    starts = any(record.pretrained is not None for record in records)  # GATs/HIST/IGMTF: base or random start
    folded = any(record.fold_count > 1 for record in records)  # walk-forward: values are means over the folds
    kept = "(mean over folds)" if folded else "(kept)"
    header = ["trial", "optuna", "outcome", *(["folds"] if folded else []), "epochs",
              "kept epochs" if folded else "kept epoch", f"{metric} {kept}",
              f"{goal.other} {kept}", *space_params,
              *(["start"] if starts else [])]
    other = goal.other
    shown = sorted(records, key=key)
    left_out, shown = (shown[limit:], shown[:limit]) if limit is not None else ([], shown)
    rows = []
    for record in shown:
        kept_epochs = ",".join(str(fold["best_epoch"]) for fold in record.folds) if folded else str(record.best_epoch)
        rows.append([record.trial_id, _number(record.optuna_trial), record.outcome,
                     *([f"{len(record.folds)}/{record.fold_count}"] if folded else []), str(record.epochs),
                     kept_epochs or "-", _number(record.best(metric)), _number(record.best(other)),
                     *(_number(record.hyperparameters.get(name)) for name in space_params),
                     *([_start(record.pretrained)] if starts else [])])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if left_out:
        counts = {outcome: sum(record.outcome == outcome for record in left_out) for outcome in OUTCOMES}
        lines.append(f"... and {len(left_out)} more trials ("
                     + ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count) + ")")
    return "\n".join(lines)


def _start(pretrained: str | None) -> str:
    """``base`` for a trial that started from the pretrained base, else its ``none ...`` note (``-``: unknown)."""
    if pretrained is None:
        return "-"
    return pretrained if pretrained.startswith("none") else "base"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)
