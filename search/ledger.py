"""The run's own record of its trials, ``RUN/trials.jsonl``: what every summary, export and resume reads.

The driver appends one JSON object per line as Tune tells it what happens (``TrialLedger``, a Tune callback):

* ``{"event": "start", "trial": ID, "config": {...searched values...}, "optuna_trial": N, "continues": ID2 | null,
  "time": T}`` when a trial's worker starts it (again after a retry or a resume); ``continues`` names a trial
  interrupted before Tune recorded it, whose epochs this one takes over (``search.searcher``);
* ``{"event": "result", "trial": ID, ...the trial's report (search.trial)...}`` after every epoch;
* ``{"event": "end", "trial": ID, "status": "TERMINATED" | "ERROR", "time": T, "error": "..."}`` when it ends.

Appending whole lines keeps the file valid through a kill: a torn last line (the process died while writing
it) is skipped on reading. ``read_ledger`` folds the lines into one ``LedgerTrial`` per trial, in the order the
trials first appeared; a trial taken over by another is folded into it. Only JSON is read: nothing in a run directory can run code in whoever reads it.
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
                earlier = trials.get(entry.get("continues") or "")
                if earlier is not None and earlier is not trial:  # it takes over an interrupted trial's epochs
                    trial.results = earlier.results + trial.results
                    del trials[earlier.trial_id]
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
        from alphatune.search.searcher import CONTINUES, OPTUNA_TRIAL
        config = {key: value for key, value in trial.config.items() if key not in (OPTUNA_TRIAL, CONTINUES)}
        self._append({"event": "start", "trial": trial.trial_id, "config": config,
                      "optuna_trial": trial.config.get(OPTUNA_TRIAL), "continues": trial.config.get(CONTINUES),
                      "time": time.time()})

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        from alphatune.search.trial import REPORTED
        kept = {key: result[key] for key in (*REPORTED, "pretrained", "precision", "started_at", "reported_at", "pid")
                if key in result}
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


def reconcile_with_tune(run_dir: Path, tune_trials: list[tuple[str, str]]) -> int:
    """Append an ``end`` to the ledger for every trial Tune holds as ended (``tune_trials``: id, status) that the
    ledger does not: its own end was lost with the driver (killed, or on a full disk) after Tune saved it. A
    resumed Tune never reports such a trial again. Returns how many were appended."""
    ledger = {trial.trial_id: trial for trial in read_ledger(run_dir) or []}
    missing = [(trial_id, status) for trial_id, status in tune_trials
               if status in ("TERMINATED", "ERROR") and trial_id in ledger and ledger[trial_id].status is None]
    if missing:
        with (Path(run_dir) / LEDGER).open("a", encoding="utf-8") as file:
            for trial_id, status in missing:
                file.write(json.dumps({"event": "end", "trial": trial_id, "status": status, "time": time.time(),
                                       "error": "ended before the interruption (recorded by Tune only)"}) + "\n")
    return len(missing)


def close_ledger(run_dir: Path, study: dict[int, str]) -> int:
    """End every trial the ledger still holds unended, once its search has ended: by the study's state of its
    Optuna trial (``study``: number → state name; COMPLETE or PRUNED: ``TERMINATED``, else ``ERROR``). Such a
    trial ran under a driver that died before recording its end (or, unended and untaken, never came back).
    Returns how many were ended."""
    open_trials = [trial for trial in read_ledger(run_dir) or [] if trial.status is None]
    if open_trials:
        with (Path(run_dir) / LEDGER).open("a", encoding="utf-8") as file:
            for trial in open_trials:
                state = study.get(trial.optuna_trial) if trial.optuna_trial is not None else None
                ended = state in ("COMPLETE", "PRUNED")
                file.write(json.dumps({
                    "event": "end", "trial": trial.trial_id, "status": "TERMINATED" if ended else "ERROR",
                    "time": time.time(), **({} if ended else {"error": f"abandoned: its search ended without it "
                                                                       f"(Optuna state {state})"})}) + "\n")
    return len(open_trials)
