"""Read a run's trials back from its Tune experiment (finished or interrupted) and pick the best one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import ExperimentAnalysis

import models

from search.callbacks import finite, outcome
from search.rundir import TUNE_DIR, Manifest, RunDirError
from search.trial import MODEL_FILE


@dataclass
class TrialRecord:
    """One trial as the summary and the export see it."""

    trial_id: str
    outcome: str
    hyperparameters: dict[str, Any]  # the full flat dict: Qlib's defaults, the space's fixed and searched values
    epochs: int
    best_epoch: int
    best_score: float
    best_valid_ic: float
    best_valid_loss: float
    checkpoint: Path | None
    pretrained: str | None = None  # the base file the trial started from, "none (...)", or None (not reported)

    def best(self, metric: str) -> float:
        return self.best_valid_ic if metric == "valid_ic" else self.best_score


def read_trials(run_dir: Path, manifest: Manifest) -> list[TrialRecord]:
    """Every trial of the run's Tune experiment, in creation order. Raises ``RunDirError`` when the experiment
    has not written its state yet."""
    tune_dir = Path(run_dir) / TUNE_DIR
    try:
        analysis = ExperimentAnalysis(str(tune_dir))
    except (ValueError, FileNotFoundError) as exc:
        raise RunDirError(f"{run_dir}: no Tune experiment state to read ({exc})") from None
    metric = manifest.options.metric
    spec = models.get_spec(manifest.model)
    records = []
    for trial in analysis.trials:
        result = trial.last_result or {}
        checkpoint = None
        if trial.checkpoint is not None and (Path(trial.checkpoint.path) / MODEL_FILE).is_file():
            checkpoint = Path(trial.checkpoint.path) / MODEL_FILE
        try:
            hyperparameters = models.registry.validate(spec, manifest.space.hyperparameters(trial.config))
        except KeyError:  # a trial Tune created but never configured
            hyperparameters = {}
        records.append(TrialRecord(
            trial_id=trial.trial_id, outcome=outcome(trial.status, result, metric), hyperparameters=hyperparameters,
            epochs=int(result.get("epoch", 0)), best_epoch=int(result.get("best_epoch", 0)),
            best_score=float(result.get("best_score", math.nan)),
            best_valid_ic=float(result.get("best_valid_ic", math.nan)),
            best_valid_loss=float(result.get("best_valid_loss", math.nan)), checkpoint=checkpoint,
            pretrained=result.get("pretrained")))
    return records


def best_trial(records: list[TrialRecord], metric: str) -> TrialRecord | None:
    """The trial with the highest searched metric at its checkpointed epoch, among those that did not fail and
    have a checkpoint (a pruned trial qualifies: its best epoch is as real as anyone's); ``None`` if none."""
    eligible = [r for r in records if r.outcome != "failed" and r.checkpoint is not None and finite(r.best(metric))]
    return max(eligible, key=lambda r: r.best(metric)) if eligible else None


def summary_table(records: list[TrialRecord], space_params: list[str], metric: str) -> str:
    """A plain-text table of every trial, best first (failed and unscored last)."""
    def key(record: TrialRecord) -> tuple[int, float]:
        value = record.best(metric)
        return (0, -value) if finite(value) else (1, 0.0)

    starts = any(record.pretrained is not None for record in records)  # GATs/HIST/IGMTF: base or random start
    header = ["trial", "outcome", "epochs", "best ep", "best valid_ic", "best valid_loss", *space_params,
              *(["start"] if starts else [])]
    rows = []
    for record in sorted(records, key=key):
        rows.append([record.trial_id, record.outcome, str(record.epochs), str(record.best_epoch),
                     _number(record.best_valid_ic), _number(record.best_valid_loss),
                     *(_number(record.hyperparameters.get(name)) for name in space_params),
                     *([_start(record.pretrained)] if starts else [])])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _start(pretrained: str | None) -> str:
    """``base`` for a trial that started from the pretrained base, else its ``none ...`` note (``-``: unknown)."""
    if pretrained is None:
        return "-"
    return pretrained if pretrained.startswith("none") else "base"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)
