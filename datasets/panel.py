"""A source's raw data as dense stock-major panels on its trading calendar, plus point-in-time membership.

Both readers (Qlib directory, price table) produce a ``Panel``; everything after reading works on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alphatune.datasets.errors import DataError

PRICE_FIELDS = ("open", "high", "low", "close", "vwap")


@dataclass
class Panel:
    """Raw daily fields of every stock as float32 ``[stocks, calendar days]`` arrays, NaN where there is no bar.

    Prices are adjusted (raw price × factor) and volume is adjusted volume (raw volume / factor), Qlib's
    convention. A stock's *stored series* runs from calendar position ``first[s]`` to ``last[s]`` (inclusive);
    NaN days inside it are suspensions, and rows still exist on them (Qlib's row set).
    ``fields`` always holds open, high, low, close, volume; ``vwap``, ``factor`` and ``change`` only when the
    source has them. Membership is a list of spans ``(stock position, first day, last day)`` in calendar
    positions, both ends inclusive.
    """

    calendar: np.ndarray                      # datetime64[ns] [C], ascending
    instruments: np.ndarray                   # str [S], sorted
    fields: dict[str, np.ndarray]             # name → float32 [S, C]
    first: np.ndarray                         # int64 [S]
    last: np.ndarray                          # int64 [S]
    span_stock: np.ndarray                    # int64 [spans]
    span_start: np.ndarray                    # int64 [spans]
    span_end: np.ndarray                      # int64 [spans]
    benchmark_close: np.ndarray | None = None  # float32 [C]
    notes: list[str] = field(default_factory=list)  # what was left out and why, for the progress log

    def member_mask(self, start: int, end: int) -> np.ndarray:
        """bool ``[end - start + 1, S]``: True where the stock is a member AND inside its stored series.

        This is Qlib's row set for calendar positions ``start..end`` (inclusive).
        """
        days = end - start + 1
        counts = np.zeros((days + 1, len(self.instruments)), dtype=np.int32)
        lo = np.maximum(np.maximum(self.span_start, self.first[self.span_stock]), start)
        hi = np.minimum(np.minimum(self.span_end, self.last[self.span_stock]), end)
        keep = lo <= hi
        np.add.at(counts, (lo[keep] - start, self.span_stock[keep]), 1)
        np.add.at(counts, (hi[keep] - start + 1, self.span_stock[keep]), -1)
        return np.cumsum(counts[:-1], axis=0) > 0


def spans_to_positions(calendar: np.ndarray, starts: np.ndarray, ends: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Calendar positions of inclusive date spans: first trading day ≥ start, last trading day ≤ end.

    A span with no trading day in it gets ``start > end`` and is ignored by ``Panel.member_mask``.
    """
    return (np.searchsorted(calendar, starts, side="left").astype(np.int64),
            np.searchsorted(calendar, ends, side="right").astype(np.int64) - 1)


def previous_traded_change(close: np.ndarray) -> np.ndarray:
    """float32 ``[S, C]``: close / previous non-NaN close − 1 along each row; NaN on NaN days and first bars.

    Used for Qlib's ``$change`` when the source does not store it (suspended days are skipped, as the
    exchange measures change against the last traded close).
    """
    positions = np.where(np.isnan(close), -1, np.arange(close.shape[1]))
    last_traded = np.maximum.accumulate(positions, axis=1)
    previous = np.full_like(last_traded, -1)
    previous[:, 1:] = last_traded[:, :-1]
    rows = np.arange(close.shape[0])[:, None]
    prior = np.where(previous >= 0, close[rows, np.maximum(previous, 0)], np.nan).astype(np.float32)
    return (close / prior - np.float32(1)).astype(np.float32)


def check_values(name: str, values: np.ndarray, where: str, dates: np.ndarray, positive: bool) -> None:
    """Raise ``DataError`` for ±inf, or (``positive``) a price ≤ 0, or (else) a negative volume; NaN passes.

    ``where`` names the file or symbol; ``dates`` gives the date of each value for the message.
    """
    bad = np.isinf(values) | ((values <= 0) if positive else (values < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rule = "must be positive and finite" if positive else "must be non-negative and finite"
        raise DataError(f"{where}: {name} on {str(dates[i])[:10]} is {float(values[i])!r}; {rule}")
