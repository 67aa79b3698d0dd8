"""Progress a person can read: a bar updated in place on a terminal, plain lines in a log.

``Progress`` is what every long piece of work shows (a search's trials, its confirmation, an evaluation, a
``models.fit``): how much is done out of how much, a status text (what is running where, the best so far), and
an estimate of the time left. On a terminal it is a ``tqdm`` bar redrawn in place, with event lines (a trial
ended, a run failed) printed above it; anywhere else (a log file, ``ray job submit``'s output, a pipe) it is plain
lines: every event, and the status at most every ``every`` seconds, never a carriage return.

The estimate is the caller's (it knows what is left and how fast it goes: ``eta``); this module only formats it.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import Any, TextIO


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal a bar can be redrawn on, or a notebook's output (Jupyter's kernel), which
    draws one too."""
    if in_notebook() and stream in (sys.stdout, sys.stderr):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def duration(seconds: float | None) -> str:
    """``12 s``, ``4 min``, ``1 h 05 min``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """A bar (terminal) or plain lines (elsewhere) for ``total`` units of work (see the module doc).

    ``label`` starts every plain line (``[lstm]``); ``unit`` names what is counted (``epoch``). ``update(n)``
    counts work done; ``status(text, eta)`` sets the status text and the seconds left (``None``: unknown);
    ``event(line)`` prints a line that stays; ``close()`` ends it (the last status printed once more in a log)."""

    def __init__(self, total: float | None, label: str, unit: str = "epoch", stream: TextIO | None = None,
                 every: float = 10.0, terminal: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.label, self.unit, self.every = label, unit, every
        self.total, self.done = total, 0
        self.text, self.eta = "", None
        self.started = time.monotonic()
        self.last_line = -math.inf
        self._printed = ""
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self._bar: Any = None
        self.width = shutil.get_terminal_size((120, 24)).columns or 120  # a pty may say 0 columns
        if self.terminal:
            from tqdm.auto import tqdm  # a widget in a notebook, text on a terminal
            self._bar = tqdm(total=total or 1, desc=label, unit=unit, file=self.stream, leave=True, ncols=self.width,
                             nrows=24, bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} {unit}s "
                                                  "[{elapsed}]{postfix}")

    def update(self, amount: int = 1) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)

    def set_total(self, total: float | None) -> None:
        self.total = None if total is None else round(total)
        if self._bar is not None and self.total is not None and max(self.total, self.done, 1) != self._bar.total:
            self._bar.total = max(self.total, self.done, 1)
            self._bar.refresh()

    def status(self, text: str, eta: float | None = None, force: bool = False) -> None:
        """Set the status; on a terminal it is redrawn now, in a log written when ``every`` seconds have passed
        since the last line (or ``force``)."""
        self.text, self.eta = text, eta
        if self._bar is not None:  # one line: what does not fit the terminal is cut, not wrapped
            shown = f"about {duration(eta)} left · {text}" if eta is not None else text
            room = max(20, self.width - len(self.label) - 60)
            shown = shown if len(shown) <= room else shown[:room - 1] + "…"
            if shown != self._printed:  # redrawn when it changes (tqdm redraws the counts itself)
                self._printed = shown
                self._bar.set_postfix_str(shown, refresh=True)
            return
        now = time.monotonic()
        if force or now - self.last_line >= self.every:
            self.last_line, self._printed = now, text
            self._print(self.line())

    def line(self) -> str:
        """The status as one plain line: ``[label mm:ss] done/total units · about T left · text``."""
        elapsed = int(time.monotonic() - self.started)
        count = f"{self.done:.0f}/{self.total:.0f} {self.unit}s" if self.total else f"{self.done:.0f} {self.unit}s"
        parts = [f"[{self.label} {elapsed // 60:02d}:{elapsed % 60:02d}] {count}",
                 f"about {duration(self.eta)} left" if self.eta is not None else "", self.text]
        return " · ".join(part for part in parts if part)

    def event(self, line: str) -> None:
        """A line that stays (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            self._print(line)

    def close(self) -> None:
        """End the display; in a log, the last status once more if it changed since it was last printed."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.text and self.text != self._printed:
            self._print(self.line())
            self._printed = self.text

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks: a bar and a stream stay behind
        return {**self.__dict__, "_bar": None, "stream": None}
