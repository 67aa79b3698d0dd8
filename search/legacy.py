"""Trials of a run directory written before the run's own ledger existed, read from Tune's plain-JSON files only.

Tune's ``experiment_state-*.json`` gives the trials and their status (each trial's state is a JSON text; the
cloudpickled fields inside it are left untouched, never unpickled), ``trial_<id>/params.json`` the config,
``trial_<id>/result.json`` the reports, one JSON object per line, and ``trial_<id>/checkpoint_*/model.pt`` the
checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from search.ledger import LedgerTrial

TUNE_DIR = "tune"


def _json_lines(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append({key: (math.nan if value is None else value) for key, value in row.items()})
    return rows


def read_tune_trials(run_dir: Path) -> list[tuple[LedgerTrial, Path | None]] | None:
    """``(trial, its checkpoint's model.pt or None)`` for every trial of the run's Tune experiment, in Tune's
    order; ``None`` when the run has no experiment state."""
    tune_dir = Path(run_dir) / TUNE_DIR
    states = sorted(tune_dir.glob("experiment_state-*.json"))
    if not states:
        return None
    try:
        trial_data = json.loads(states[-1].read_text(encoding="utf-8"))["trial_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    out = []
    for entry in trial_data:
        try:
            state = json.loads(entry[0])
            trial_id, status = str(state["trial_id"]), str(state["status"])
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        directory = tune_dir / f"trial_{trial_id}"
        try:
            config = json.loads((directory / "params.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        checkpoints = sorted(directory.glob("checkpoint_*/model.pt"))
        trial = LedgerTrial(trial_id, config=config if isinstance(config, dict) else {},
                            results=_json_lines(directory / "result.json"),
                            status=status if status in ("TERMINATED", "ERROR") else None, starts=1)
        out.append((trial, checkpoints[-1] if checkpoints else None))
    return out
