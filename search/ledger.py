"""The run's own record of its trials, ``RUN/trials.jsonl``: what every summary, export and resume reads.

One JSON object per line, appended by the driver (``Ledger``) as the search goes:

* ``{"event": "trial", "trial": ID, "optuna_trial": N, "config": {...searched values, seed...}, "continues": ID2 |
  null, "time": T}`` when the searcher creates a trial; ``continues`` names an interrupted trial whose Optuna
  trial and saved state this one takes over (``search.resume``);
* ``{"event": "start", "trial": ID, "time": T}`` each time a worker starts it (again after a retry);
* ``{"event": "result", "trial": ID, ...the trial's report (search.trial)...}`` after every epoch;
* ``{"event": "end", "trial": ID, "status": "TERMINATED" | "ERROR", "time": T}`` when it ends; ``ERROR`` with
  ``"error": "..."`` (the exception's last line) when the trial itself failed (its model raised, a bad value);
* ``{"event": "interrupted", "trial": ID, "fault": "...", "time": T}`` when a fault of the environment stopped it
  (its worker or node lost beyond ``--max-failures``, its storage failing): the trial has not ended, and resume
  continues it from its last saved epoch (``LedgerTrial.fault`` until it starts again);
* after the search, ``{"event": "confirmation", "seeds": [...], "candidates": [...], "time": T}`` once, the
  confirmation's plan (``search.confirm``), then ``{"event": "confirmed", "run": ID, ...its last report or
  "error"...}`` as each of its runs ends (``read_confirmation`` reads them).

The searcher writes a trial's results and end here *before* it tells Optuna (``search.searcher``), so after any
kill the ledger holds everything the study holds, and ``search.resume`` brings the study up to it. Appending whole
lines (``alphatune.storage.LineFile``) keeps the file valid through a kill: a torn last line is skipped on reading,
and ended before the next append, so that it swallows nothing. Any other line no ``Ledger`` wrote is damage, one
line (``LedgerError``) whoever reads the file. ``read_ledger`` folds the lines
into one ``LedgerTrial`` per trial, in the order the trials first appeared; a trial taken over by another is
folded into it. Only JSON is read: nothing in a run directory can run code in whoever reads it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from alphatune.storage import LineFile

LEDGER = "trials.jsonl"
TERMINATED, ERROR = "TERMINATED", "ERROR"


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
    continues: str | None = None    # the interrupted trial it took over
    fault: str | None = None        # the fault of the environment that interrupted it, until it starts again
    first: str | None = None        # the first trial of its chain of takeovers (None: it took over none)

    @property
    def tensorboard_run(self) -> str:
        """The TensorBoard run it writes into: its chain's first trial's (one run per Optuna trial)."""
        return self.first or self.trial_id

    @property
    def last_result(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}

    def epochs(self) -> dict[int, dict[str, Any]]:
        """Epoch → its (latest) report: a retried or resumed trial may report an epoch twice."""
        return {int(row["epoch"]): row for row in self.results if "epoch" in row}


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON has none), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
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


class LedgerError(ValueError):
    """A ledger that is damaged (not one written by ``Ledger``, torn tails aside): one line naming the file, the
    line and what is wrong with it."""


_FIELDS = {"trial": str, "event": str, "config": dict, "run": str}  # a field, when present, and its type


def torn_fragment(line: str) -> bool:
    """Whether ``line`` (not valid JSON) is the start of a ledger record cut short by a kill: a JSON object
    whose text stops in a string, a number or a literal, or between tokens. Anything else is damage."""
    if not line.startswith("{"):
        return False
    try:
        json.loads(line)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # a whole object with more after it
            return False
        rest = line[error.pos:]
        return error.msg.startswith("Unterminated string") or all(char.isalnum() or char in ".+-" for char in rest)
    return False


def ledger_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The records of the ledger at ``path``, in order; a torn fragment (see ``torn_fragment``) is passed over.
    ``LedgerError`` (``FILE:LINE: what``) at the first line that no ``Ledger`` wrote: bytes that are not UTF-8, a
    line that is not a JSON object, a record without its event or with a field of the wrong type."""
    with Path(path).open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise LedgerError(f"{path}:{number}: not UTF-8 text: the ledger is damaged") from None
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                if torn_fragment(line):
                    continue
                raise LedgerError(f"{path}:{number}: not a ledger record ({error.msg} at column {error.colno}): "
                                  f"the ledger is damaged") from None
            if not isinstance(entry, dict):
                raise LedgerError(f"{path}:{number}: a JSON {type(entry).__name__}, not a ledger record: the ledger "
                                  f"is damaged")
            if "event" not in entry:
                raise LedgerError(f"{path}:{number}: a record without its event: the ledger is damaged")
            for name, kind in _FIELDS.items():
                if name in entry and not isinstance(entry[name], kind):
                    raise LedgerError(f"{path}:{number}: {name} is {entry[name]!r}, not a {kind.__name__}: the ledger "
                                      f"is damaged")
            yield entry


def parse_ledger(entries: Iterable[dict[str, Any]]) -> list[LedgerTrial]:
    """The trials of a ledger's records (``ledger_entries``; see the module doc), in first-appearance order."""
    trials: dict[str, LedgerTrial] = {}
    for entry in entries:
        if not isinstance(entry.get("trial"), str):
            continue  # a record of no trial (the confirmation's plan)
        trial = trials.setdefault(entry["trial"], LedgerTrial(entry["trial"]))
        event = entry.get("event")
        if event == "start":
            trial.starts += 1
            trial.status = trial.fault = None
        if event == "trial" or (event == "start" and "config" in entry):  # earlier versions: config at start
            trial.config = dict(entry.get("config") or {})
            trial.optuna_trial = entry.get("optuna_trial", trial.optuna_trial)
            earlier = trials.get(entry.get("continues") or "")
            if earlier is not None and earlier is not trial:  # it takes over an interrupted trial's epochs
                trial.continues = earlier.trial_id
                trial.first = earlier.first or earlier.trial_id
                trial.results = earlier.results + trial.results
                trial.starts += earlier.starts
                trial.fault = None
                del trials[earlier.trial_id]
        elif event == "result":
            trial.results.append({key: _number(value) for key, value in entry.items()
                                  if key not in ("event", "trial")})
        elif event == "end":
            trial.status = entry.get("status")
            trial.error = entry.get("error") or trial.error
        elif event == "error":
            trial.error = entry.get("error")
        elif event == "interrupted" and trial.status is None:
            trial.fault = str(entry.get("fault") or "a fault of the environment")
    return list(trials.values())


def read_ledger(run_dir: str | Path) -> list[LedgerTrial] | None:
    """The trials recorded in ``run_dir``'s ledger, in first-appearance order; ``None`` when there is no ledger
    (a run directory of an earlier version)."""
    path = Path(run_dir) / LEDGER
    if not path.is_file():
        return None
    return parse_ledger(ledger_entries(path))


def read_confirmation(run_dir: str | Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The confirmation's plan (``None``: none started) and its ended runs (run id → its last ``confirmed``
    entry, NaN for null) from ``run_dir``'s ledger."""
    path = Path(run_dir) / LEDGER
    plan, runs = None, {}
    if not path.is_file():
        return plan, runs
    for entry in ledger_entries(path):
        if entry["event"] == "confirmation" and plan is None:
            plan = entry
        elif entry["event"] == "confirmed" and isinstance(entry.get("run"), str):
            runs[entry["run"]] = {key: _number(value) if key in _NUMBERS else value for key, value in entry.items()}
    return plan, runs


_NUMBERS = ("valid_ic", "valid_loss", "best_valid_ic", "best_valid_loss", "seconds")


class Ledger:
    """Appends events to a run's ``trials.jsonl`` (see the module doc), one flushed line each."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LEDGER
        self._lines = LineFile(self.path)

    def append(self, event: str, trial_id: str, **fields: Any) -> None:
        self._write({"event": event, "trial": trial_id, **fields})

    def created(self, trial_id: str, number: int, config: dict[str, Any], continues: str | None) -> None:
        self.append("trial", trial_id, optuna_trial=number, config=config, continues=continues, time=time.time())

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.append("result", trial_id, **result)

    def ended(self, trial_id: str, status: str, **fields: Any) -> None:
        self.append("end", trial_id, status=status, time=time.time(), **fields)

    def confirmation(self, plan: dict[str, Any]) -> None:
        self._write({"event": "confirmation", **plan, "time": time.time()})

    def interrupted(self, trial_id: str, fault: str) -> None:
        self.append("interrupted", trial_id, fault=fault, time=time.time())

    def confirmed(self, run_id: str, **fields: Any) -> None:
        self._write({"event": "confirmed", "run": run_id, **fields, "time": time.time()})

    def _write(self, entry: dict[str, Any]) -> None:
        self._lines.append(json.dumps(plain(entry), allow_nan=False))

    def close(self) -> None:
        self._lines.close()
