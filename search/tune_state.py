"""What Tune's own files say about a run's trials, read from their plain JSON only (nothing is unpickled).

Only for run directories of an earlier version, written before the ledger existed (a search never reads Tune's
files now: ``search.resume``). Tune's latest ``experiment_state-*.json`` gives the trials it knew and their status
(each trial's state is a JSON text; the cloudpickled fields inside it are left untouched), with
``trial_<id>/params.json`` (the config), ``trial_<id>/result.json`` (the reports, one JSON object per line) and
``trial_<id>/checkpoint_*/model.pt`` (the checkpoint) (``read_tune_trials``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from alphatune.search.ledger import LedgerTrial

TUNE_DIR = "tune"
ENDED = ("TERMINATED", "ERROR")


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


def experiment_trials(run_dir: Path) -> list[tuple[str, str]] | None:
    """``(trial id, Tune status)`` of every trial in the run's latest experiment state, in Tune's order; ``None``
    when there is none (or it cannot be read)."""
    states = sorted((Path(run_dir) / TUNE_DIR).glob("experiment_state-*.json"))
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
            out.append((str(state["trial_id"]), str(state["status"])))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return out


def read_tune_trials(run_dir: Path) -> list[tuple[LedgerTrial, Path | None]] | None:
    """``(trial, its checkpoint's model.pt or None)`` for every trial of the run's Tune experiment, in Tune's
    order; ``None`` when the run has no experiment state."""
    known = experiment_trials(run_dir)
    if known is None:
        return None
    out = []
    for trial_id, status in known:
        directory = Path(run_dir) / TUNE_DIR / f"trial_{trial_id}"
        try:
            config = json.loads((directory / "params.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        checkpoints = sorted(directory.glob("checkpoint_*/model.pt"))
        trial = LedgerTrial(trial_id, config=config if isinstance(config, dict) else {},
                            results=_json_lines(directory / "result.json"),
                            status=status if status in ENDED else None, starts=1)
        out.append((trial, checkpoints[-1] if checkpoints else None))
    return out
