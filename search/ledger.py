"""The run's own record of its trials, ``RUN/trials.jsonl``: what every summary, export and resume reads.

The driver appends one JSON object per line as Tune tells it what happens (``TrialLedger``, a Tune callback):

* ``{"event": "start", "trial": ID, "config": {...searched values...}, "optuna_trial": N, "time": T}`` when a
  trial's worker starts it (again after a retry or a resume);
* ``{"event": "result", "trial": ID, ...the trial's report (search.trial)...}`` after every epoch;
* ``{"event": "end", "trial": ID, "status": "TERMINATED" | "ERROR", "time": T, "error": "..."}`` when it ends.

Appending whole lines keeps the file valid through a kill: a torn last line (the process died while writing
it) is skipped on reading. ``read_ledger`` folds the lines into one ``LedgerTrial`` per trial, in the order the
trials first appeared. Only JSON is read: nothing in a run directory can run code in whoever reads it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

LEDGER = "trials.jsonl"


@dataclass
class LedgerTrial:
    """One trial as the ledger tells it."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    optuna_trial: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)  # one per reported epoch, in report order
    status: str | None = None       # "TERMINATED" / "ERROR" once ended, None while not
    error: str | None = None
    starts: int = 0                 # how many times a worker started it (retries and resumes add to 1)

    @property
    def last_result(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}

    def epochs(self) -> dict[int, dict[str, Any]]:
        """Epoch → its (latest) report: a retried or resumed trial may report an epoch twice."""
        return {int(row["epoch"]): row for row in self.results if "epoch" in row}


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON has none), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _number(value: Any) -> Any:
    """A number read back from the ledger: null is NaN again."""
    return math.nan if value is None else value


def read_ledger(run_dir: str | Path) -> list[LedgerTrial] | None:
    """The trials recorded in ``run_dir``'s ledger, in first-appearance order; ``None`` when there is no ledger
    (a run directory of an earlier version)."""
    path = Path(run_dir) / LEDGER
    if not path.is_file():
        return None
    trials: dict[str, LedgerTrial] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if not isinstance(entry, dict) or not isinstance(entry.get("trial"), str):
                continue
            trial = trials.setdefault(entry["trial"], LedgerTrial(entry["trial"]))
            event = entry.get("event")
            if event == "start":
                trial.config = dict(entry.get("config") or {})
                trial.optuna_trial = entry.get("optuna_trial", trial.optuna_trial)
                trial.starts += 1
                trial.status = None
            elif event == "result":
                trial.results.append({key: _number(value) for key, value in entry.items()
                                      if key not in ("event", "trial")})
            elif event == "end":
                trial.status, trial.error = entry.get("status"), entry.get("error")
    return list(trials.values())


class TrialLedger(Callback):
    """Appends every trial's start, results and end to ``RUN/trials.jsonl`` (see the module doc)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LEDGER
        self._file: TextIO | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def _append(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(_plain(entry), allow_nan=False) + "\n")
        self._file.flush()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        from search.searcher import OPTUNA_TRIAL
        config = {key: value for key, value in trial.config.items() if key != OPTUNA_TRIAL}
        self._append({"event": "start", "trial": trial.trial_id, "config": config,
                      "optuna_trial": trial.config.get(OPTUNA_TRIAL), "time": time.time()})

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        from search.trial import REPORTED
        kept = {key: result[key] for key in (*REPORTED, "pretrained", "started_at", "reported_at") if key in result}
        self._append({"event": "result", "trial": trial.trial_id, **kept})

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._append({"event": "end", "trial": trial.trial_id, "status": Trial.TERMINATED, "time": time.time()})

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        error = (trial.error_file and _last_line(trial.error_file)) or "the trial raised an error"
        self._append({"event": "end", "trial": trial.trial_id, "status": Trial.ERROR, "time": time.time(),
                      "error": error})

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _last_line(path: str) -> str | None:
    """The last non-empty line of a Tune error file (the exception itself), if it can be read."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return None
    return text[-1][:500] if text else None
