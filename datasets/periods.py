"""Periods cut from a trading calendar: walk-forward folds of a validation period, and Qlib's rolling windows of a
test period. The one place where dates are shifted by trading days; search and evaluate both ask it.

**Walk-forward folds** (``walk_forward``): the validation period is cut into K consecutive folds of (nearly)
equal numbers of trading days. Fold k validates on its own days and trains on the train window moved forward
to end just before it: ``rolling``, the train window's own length in trading days; ``expanding``, from the train
window's first day. Between a fold's train window and its first day lie ``embargo`` trading days (at least the
label's horizon, ``LABEL_HORIZON``: the label of day t is computed from the closes of days t+1 and t+2, so no train
label may see a fold day). One fold is the search as it always was: the train and valid segments unchanged, no
embargo.

**Rolling windows** (``rolling``), Qlib's ``RollingGen`` semantics: the first window is the train and valid
segments as given and the first ``step`` trading days of the test period; every next window shifts all three by
``step`` trading days (``ROLL_SD``, ``sliding``) or shifts valid and test and extends train to end ``step`` days
later from the same start (``ROLL_EX``, ``expanding``, RollingGen's default), until a window's test would start
after the test period. A window's test ends at the test period's end at the latest. Concatenated, the windows'
test days are the test period, once each: a model retrained every ``step`` days on the preceding window, as it
is deployed.

Both take the trading calendar as a sorted array of dates (``DataSpec.calendar``: every trading day of the
source, which may reach before the train segment's start). A date falls on the trading day on or after it (a start)
or on or before it (an end), as Qlib's ``TimeAdjuster.align_seg`` does. Bad requests are ``DataError`` naming
the period and why (a fold too short, a train window that would begin before the calendar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphatune.datasets.errors import DataError

LABEL_HORIZON = 2          # trading days a label looks ahead: Ref($close, -2) / Ref($close, -1) - 1
FOLD_TRAIN = ("rolling", "expanding")
ROLLING_TRAIN = ("expanding", "sliding")   # Qlib's RollingGen.ROLL_EX (its default) and ROLL_SD
MIN_FOLD_DAYS = 2          # a fold's daily IC needs days to average

Span = tuple[str, str]


@dataclass(frozen=True)
class Window:
    """One period's segments: ``train`` and ``valid`` (inclusive ``YYYY-MM-DD`` spans) and, for a rolling window,
    ``test``."""

    train: Span
    valid: Span
    test: Span | None = None

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(span) for name, span in (("train", self.train), ("valid", self.valid),
                                                     ("test", self.test)) if span is not None}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> "Window":
        return cls(train=tuple(data["train"]), valid=tuple(data["valid"]),
                   test=tuple(data["test"]) if data.get("test") else None)


class Calendar:
    """A sorted array of trading days, with positions and shifts by trading days."""

    def __init__(self, days: Any) -> None:
        import numpy as np  # the command line imports this module's names before anything heavy
        self.days = np.asarray(days, dtype="datetime64[D]")
        if self.days.size == 0:
            raise DataError("the trading calendar is empty")

    def first(self, date: str) -> int:
        """The position of the first trading day on or after ``date`` (``len`` when there is none)."""
        return int(self.days.searchsorted(self.days.dtype.type(date, "D"), side="left"))

    def last(self, date: str) -> int:
        """The position of the last trading day on or before ``date`` (-1 when there is none)."""
        return int(self.days.searchsorted(self.days.dtype.type(date, "D"), side="right")) - 1

    def positions(self, span: Span, what: str) -> tuple[int, int]:
        """``(first, last)`` positions of the trading days in ``span``; ``DataError`` when it holds none."""
        first, last = self.first(span[0]), self.last(span[1])
        if first > last:
            raise DataError(f"{what} {span[0]}..{span[1]} holds no trading day of the data "
                            f"({self.date(0)}..{self.date(-1)})")
        return first, last

    def date(self, position: int) -> str:
        return str(self.days[position])

    def span(self, first: int, last: int) -> Span:
        return self.date(first), self.date(last)


def check_folds(folds: Any, train_kind: Any) -> None:
    """``DataError`` naming the option when ``folds`` is not a whole number ≥ 1 or ``train_kind`` not one of
    ``FOLD_TRAIN`` (what a walk-forward request can be told from before any calendar is read)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise DataError(f"--folds must be a whole number ≥ 1; got {folds!r}")
    if train_kind not in FOLD_TRAIN:
        raise DataError(f"--fold-train must be one of {', '.join(FOLD_TRAIN)}; got {train_kind!r}")


def check_rolling(step: Any, train_kind: Any) -> None:
    """``DataError`` naming the option when ``step`` is not a whole number of trading days ≥ 1 or ``train_kind``
    not one of ``ROLLING_TRAIN``."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise DataError(f"--rolling must be a whole number of trading days ≥ 1; got {step!r}")
    if train_kind not in ROLLING_TRAIN:
        raise DataError(f"--rolling-train must be one of {', '.join(ROLLING_TRAIN)}; got {train_kind!r}")


def walk_forward(calendar: Any, train: Span, valid: Span, folds: int, train_kind: str = "rolling",
                 embargo: int = LABEL_HORIZON) -> list[Window]:
    """The ``folds`` walk-forward windows of ``valid`` (see the module doc), in time order."""
    check_folds(folds, train_kind)
    if folds == 1:
        return [Window(train=tuple(train), valid=tuple(valid))]
    days = Calendar(calendar)
    train_first, train_last = days.positions(train, "the train segment")
    valid_first, valid_last = days.positions(valid, "the valid segment")
    length = train_last - train_first + 1
    size, extra = divmod(valid_last - valid_first + 1, folds)  # the first `extra` folds get one day more
    starts = [valid_first + number * size + min(number, extra) for number in range(folds + 1)]
    chunks = [range(starts[number], starts[number + 1]) for number in range(folds)]
    if len(chunks[-1]) < MIN_FOLD_DAYS:
        raise DataError(f"--folds {folds}: the valid segment {valid[0]}..{valid[1]} has {valid_last - valid_first + 1} "
                        f"trading days, too few for {folds} folds of at least {MIN_FOLD_DAYS} days each")
    windows = []
    for number, chunk in enumerate(chunks, 1):
        end = int(chunk[0]) - embargo - 1
        start = train_first if train_kind == "expanding" else end - length + 1
        if start < 0 or end < start:
            raise DataError(f"--folds {folds}: fold {number}'s train window would begin before the data's first day "
                            f"{days.date(0)}; prepare data from earlier, or use fewer folds")
        windows.append(Window(train=days.span(start, end), valid=days.span(int(chunk[0]), int(chunk[-1]))))
    return windows


def rolling(calendar: Any, train: Span, valid: Span, test: Span, step: int,
            train_kind: str = "expanding") -> list[Window]:
    """Qlib's ``RollingGen`` windows over ``test`` (see the module doc), in time order."""
    check_rolling(step, train_kind)
    days = Calendar(calendar)
    train_at = days.positions(train, "the train segment")
    valid_at = days.positions(valid, "the valid segment")
    test_first, test_last = days.positions(test, "the test segment")
    windows = []
    for shift in range(0, test_last - test_first + 1, step):
        first = test_first + shift
        train_first = train_at[0] if train_kind == "expanding" else train_at[0] + shift
        windows.append(Window(train=days.span(train_first, train_at[1] + shift),
                              valid=days.span(valid_at[0] + shift, valid_at[1] + shift),
                              test=days.span(first, min(first + step - 1, test_last))))
    return windows
