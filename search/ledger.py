"""The run's own record of its trials, ``RUN/trials.jsonl``: what every summary, export and resume reads.

One JSON object per line, appended by the driver (``RunRecords``) as the search goes:

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
and ended before the next append, so that it swallows nothing. Any other line no ledger holds is damage, one
line (``LedgerError``) whoever reads the file. Only JSON is read: nothing in a run directory can run code in whoever
reads it.

**One owner, in memory** (``RunRecords``): a process reads the file once and folds its lines into one
``LedgerTrial`` per trial, in the order the trials first appeared (a trial taken over by another is folded into
it), the confirmation's plan and its ended runs; every record it appends goes through the same object, which folds
it in as it writes it. Everything that reads results while a search runs (the searcher, ASHA's replay, the progress
display, the confirmation's early start, the summary, the export) asks it, so no one parses the ledger again: what
a record costs does not grow with the number of trials before it. ``resume`` and ``export`` build it from the file
once (``RunRecords.of``); a line another process appended since is read from where the last read stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

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
    version: int = 0                # the ledger's record count when a record of it was last folded in

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
    """A ledger that is damaged (not one written by ``RunRecords``, torn tails aside): one line naming the file, the
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


_TORN = object()  # what ``_entry`` gives for a torn fragment


def _entry(raw: bytes, path: Path, number: int) -> dict[str, Any] | None | object:
    """The record on line ``number`` (``raw``, its bytes without the newline): ``None`` for a blank line, ``_TORN``
    for a torn fragment; ``LedgerError`` for a line no ledger writes (see ``ledger_entries``)."""
    try:
        line = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise LedgerError(f"{path}:{number}: not UTF-8 text: the ledger is damaged") from None
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        if torn_fragment(line):
            return _TORN
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
    return entry


def ledger_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The records of the ledger at ``path``, in order; a torn fragment (see ``torn_fragment``) is passed over.
    ``LedgerError`` (``FILE:LINE: what``) at the first line that no ledger writes: bytes that are not UTF-8, a
    line that is not a JSON object, a record without its event or with a field of the wrong type."""
    with Path(path).open("rb") as file:
        for number, raw in enumerate(file, start=1):
            entry = _entry(raw.rstrip(b"\n"), Path(path), number)
            if isinstance(entry, dict):
                yield entry


_MARK = 64  # bytes before the read offset compared on every refresh: a file rewritten in place is read again


class RunRecords:
    """A run's ledger (``RUN/trials.jsonl``) in memory: the one object through which this process appends to it
    and from which it reads it (see the module doc). ``RunRecords.of(work)`` is the one per file in a process.

    The file is read once; afterwards each ``of`` (and each append) costs one ``stat``: lines another process
    appended meanwhile are read from where this object stopped, and a file replaced, shortened or rewritten in
    place (its last bytes read differ) is read again from its start. A torn last line (no newline, not whole JSON)
    is read again once it has been ended; a torn line in the middle is passed over."""

    _open: dict[Path, "RunRecords"] = {}

    def __init__(self, work: Path) -> None:
        self.path = Path(work) / LEDGER
        self._lines = LineFile(self.path)
        self._reset()

    def _reset(self) -> None:
        self._trials: dict[str, LedgerTrial] = {}
        self.plan: dict[str, Any] | None = None        # the confirmation's plan (None: none written)
        self.confirmed: dict[str, dict[str, Any]] = {}  # confirmation run id → its last ``confirmed`` record
        self.exists = False
        self._offset, self._line, self._mark, self._file_id = 0, 0, b"", None
        self.version = 0  # counts the records folded in: anything derived from them may be kept while it stands
        self._derived: dict[Any, tuple[int, Any]] = {}

    @classmethod
    def of(cls, work: str | Path) -> "RunRecords":
        """The records of the ledger in ``work`` (a run directory, or a bucket run's local copy), brought up to
        the file. ``LedgerError`` when the file holds a line no ledger writes."""
        key = Path(os.path.abspath(work))
        records = cls._open.get(key)
        if records is None:
            records = cls._open[key] = cls(key)
        records.refresh()
        return records

    # ------------------------------------------------------------------ reading

    def refresh(self) -> None:
        """Fold in what the file holds beyond what this object read (see the class doc)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self.exists or self._trials:
                self._reset()
            return
        file_id = (stat.st_dev, stat.st_ino)
        if self.exists and (file_id != self._file_id or stat.st_size < self._offset or not self._same_mark()):
            self._reset()
        self.exists, self._file_id = True, file_id
        if stat.st_size == self._offset:
            return
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        try:
            self._fold_lines(data)
        except LedgerError:  # read again from the start next time: the same line then says the same
            self._reset()
            raise

    def _fold_lines(self, data: bytes) -> None:
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1] if end else []
        tail = data[end:]
        for raw in lines:
            self._line += 1
            self._fold(_entry(raw, self.path, self._line))
        consumed = end
        if tail:  # the last line has no newline yet: a whole record is read, a torn one waits to be ended
            entry = _entry(tail, self.path, self._line + 1)
            if entry is not _TORN:
                self._line += 1
                self._fold(entry)
                consumed += len(tail)
        self._advance(consumed, data)

    def _advance(self, consumed: int, data: bytes) -> None:
        self._mark = (self._mark + data[:consumed])[-_MARK:]
        self._offset += consumed

    def _same_mark(self) -> bool:
        if not self._mark:
            return True
        with self.path.open("rb") as file:
            file.seek(self._offset - len(self._mark))
            return file.read(len(self._mark)) == self._mark

    def _fold(self, entry: Any) -> None:
        """Fold one record (see the module doc) into the trials, the confirmation's plan and its ended runs."""
        if not isinstance(entry, dict):
            return  # a blank line or a torn fragment
        self.version += 1
        event = entry.get("event")
        if event == "confirmation":
            if self.plan is None:
                self.plan = entry
            return
        if event == "confirmed":
            if isinstance(entry.get("run"), str):
                self.confirmed[entry["run"]] = {key: _number(value) if key in _NUMBERS else value
                                                for key, value in entry.items()}
            return
        if not isinstance(entry.get("trial"), str):
            return  # a record of no trial
        trials = self._trials
        trial = trials.get(entry["trial"])
        if trial is None:
            trial = trials[entry["trial"]] = LedgerTrial(entry["trial"])
        trial.version = self.version
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

    def trials(self) -> list[LedgerTrial]:
        """Every trial, in the order they first appeared; a trial taken over by another is folded into it."""
        return list(self._trials.values())

    def trial(self, trial_id: str) -> LedgerTrial | None:
        return self._trials.get(trial_id)

    def __len__(self) -> int:
        return len(self._trials)

    def derived(self, kind: Any, trial: LedgerTrial, make: Callable[[LedgerTrial], Any]) -> Any:
        """``make(trial)``, made again only once a record of ``trial`` has come since it was last made for this
        ``kind`` (what a summary derives from each trial, asked again after every ended trial, stays O(1) a trial)."""
        key = (kind, trial.trial_id)
        kept = self._derived.get(key)
        if kept is None or kept[0] != trial.version:
            kept = self._derived[key] = (trial.version, make(trial))
        return kept[1]

    # ------------------------------------------------------------------ appending

    def created(self, trial_id: str, number: int, config: dict[str, Any], continues: str | None) -> None:
        self._append({"event": "trial", "trial": trial_id, "optuna_trial": number, "config": config,
                      "continues": continues, "time": time.time()})

    def started(self, trial_id: str) -> None:
        self._append({"event": "start", "trial": trial_id, "time": time.time()})

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._append({"event": "result", "trial": trial_id, **result})

    def ended(self, trial_id: str, status: str, **fields: Any) -> None:
        self._append({"event": "end", "trial": trial_id, "status": status, "time": time.time(), **fields})

    def interrupted(self, trial_id: str, fault: str) -> None:
        self._append({"event": "interrupted", "trial": trial_id, "fault": fault, "time": time.time()})

    def confirmation(self, plan: dict[str, Any]) -> None:
        self._append({"event": "confirmation", **plan, "time": time.time()})

    def confirmed_run(self, run_id: str, **fields: Any) -> None:
        self._append({"event": "confirmed", "run": run_id, **fields, "time": time.time()})

    def _append(self, entry: dict[str, Any]) -> None:
        """One record: folded in after what the file holds, then written as one flushed line."""
        self.refresh()
        entry = plain(entry)
        line = json.dumps(entry, allow_nan=False)
        self._lines.append(line)
        written, data = self.path.stat(), (line + "\n").encode()
        if written.st_size - self._offset == len(data):  # only this line came after what was read
            self._line += 1
            self._fold(entry)
            self.exists, self._file_id = True, (written.st_dev, written.st_ino)
            self._advance(len(data), data)
        else:  # a torn tail ended before it, or lines of another process: read what is there
            self.refresh()

    def close(self) -> None:
        """Close the file (the next append opens it again); the records stay."""
        self._lines.close()

    @classmethod
    def forget(cls, work: str | Path) -> None:
        """Drop this process's records of the ledger in ``work`` (its file is read again by the next ``of``)."""
        records = cls._open.pop(Path(os.path.abspath(work)), None)
        if records is not None:
            records.close()


def read_ledger(run_dir: str | Path) -> list[LedgerTrial] | None:
    """The trials recorded in ``run_dir``'s ledger, in first-appearance order (``RunRecords``); ``None`` when there
    is no ledger (a run directory of an earlier version)."""
    records = RunRecords.of(run_dir)
    return records.trials() if records.exists else None


def read_confirmation(run_dir: str | Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The confirmation's plan (``None``: none started) and its ended runs (run id → its last ``confirmed``
    entry, NaN for null) from ``run_dir``'s ledger (``RunRecords``)."""
    records = RunRecords.of(run_dir)
    return records.plan, dict(records.confirmed)


_NUMBERS = ("valid_ic", "valid_loss", "best_valid_ic", "best_valid_loss", "seconds")
