"""Signal metrics as Qlib's ``SigAnaRecord`` computes them: daily IC and Rank IC against the raw label.

For each day, IC is the Pearson correlation and Rank IC the Spearman correlation (ranks with ties averaged) of
the prediction with the raw (not rank-normalised) label, over the rows where both are finite (NaN pairs
dropped, as pandas' ``Series.corr``). A day with fewer than two such pairs, or on which either side is
constant, has no IC (NaN). The summary statistics skip NaN days: IC = mean, ICIR = mean / std (ddof 1, not
annualised); Rank IC and Rank ICIR alike. Everything is vectorised over days with the day offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SignalMetrics:
    """Daily IC series (indexed by date, NaN where undefined) and their summaries."""

    daily_ic: pd.Series
    daily_rank_ic: pd.Series

    @property
    def summary(self) -> dict[str, float]:
        """``IC``, ``ICIR``, ``Rank IC``, ``Rank ICIR`` (NaN when fewer than two days have an IC)."""
        return {"IC": _mean(self.daily_ic), "ICIR": _ir(self.daily_ic),
                "Rank IC": _mean(self.daily_rank_ic), "Rank ICIR": _ir(self.daily_rank_ic)}


def _mean(series: pd.Series) -> float:
    values = series.to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _ir(series: pd.Series) -> float:
    values = series.to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan")
    std = values.std(ddof=1)
    return float(values.mean() / std) if std > 0 else float("nan")


def _day_ids(day_offsets: np.ndarray) -> np.ndarray:
    offsets = np.asarray(day_offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError(f"day_offsets must start at 0 and never decrease, got {offsets[:5]}...")
    return np.repeat(np.arange(offsets.size - 1), np.diff(offsets))


def daily_pearson(x: np.ndarray, y: np.ndarray, day: np.ndarray, days: int) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` per day id (``day`` per row, in ``[0, days)``).

    Rows must already be finite. Days with fewer than two rows or a constant side give NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    count = np.bincount(day, minlength=days).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (np.bincount(day, x, minlength=days) / count)[day]
        dy = y - (np.bincount(day, y, minlength=days) / count)[day]
        cov = np.bincount(day, dx * dy, minlength=days)
        var_x = np.bincount(day, dx * dx, minlength=days)
        var_y = np.bincount(day, dy * dy, minlength=days)
        corr = cov / np.sqrt(var_x * var_y)
    corr[(count < 2) | (var_x <= 0) | (var_y <= 0)] = np.nan
    return corr


def daily_average_rank(x: np.ndarray, day: np.ndarray) -> np.ndarray:
    """1-based rank of each row's ``x`` among the rows of its day, ties given their average rank.

    ``day`` must be non-decreasing (rows grouped by day); ``x`` finite.
    """
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.lexsort((x, day))
    sorted_x, sorted_day = x[order], day[order]
    new_day = np.r_[True, sorted_day[1:] != sorted_day[:-1]]
    day_start = np.maximum.accumulate(np.where(new_day, np.arange(n), 0))
    position = np.arange(n) - day_start + 1  # 1-based position within the day
    new_tie = new_day | np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    tie_id = np.cumsum(new_tie) - 1
    tie_first = position[new_tie]
    tie_last = np.r_[position[np.flatnonzero(new_tie)[1:] - 1], position[-1]]
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((tie_first + tie_last) / 2.0)[tie_id]
    return ranks


def daily_ic(prediction: np.ndarray, label: np.ndarray, day_offsets: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-day (IC, Rank IC) arrays for rows grouped by day (rows of day ``i`` are
    ``day_offsets[i]:day_offsets[i+1]``). Rows where either value is NaN/inf are left out of that day."""
    prediction = np.asarray(prediction, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    if prediction.shape != label.shape or prediction.ndim != 1:
        raise ValueError(f"prediction and label must be 1-D of one length, got {prediction.shape} and {label.shape}")
    day = _day_ids(day_offsets)
    if day.size != prediction.size:
        raise ValueError(f"day_offsets cover {day.size} rows but there are {prediction.size} predictions")
    days = len(day_offsets) - 1
    keep = np.isfinite(prediction) & np.isfinite(label)
    prediction, label, day = prediction[keep], label[keep], day[keep]
    ic = daily_pearson(prediction, label, day, days)
    rank_ic = daily_pearson(daily_average_rank(prediction, day), daily_average_rank(label, day), day, days)
    return ic, rank_ic


def signal_metrics(prediction: pd.Series, label: pd.Series) -> SignalMetrics:
    """IC and Rank IC of ``prediction`` against the raw ``label``, both indexed (datetime, instrument).

    The label is aligned to the prediction's rows (a prediction row without a label counts as a NaN label).
    A NaN prediction is refused with the date and instrument at fault.
    """
    if not isinstance(prediction.index, pd.MultiIndex) or prediction.index.nlevels != 2:
        raise ValueError("prediction must be indexed by (datetime, instrument)")
    check_finite_prediction(prediction)
    prediction = prediction.sort_index()
    label = label.reindex(prediction.index)
    dates = prediction.index.get_level_values(0)
    codes, uniques = pd.factorize(dates, sort=True)
    offsets = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(uniques)))]
    ic, rank_ic = daily_ic(prediction.to_numpy(), label.to_numpy(dtype=np.float64, na_value=np.nan), offsets)
    index = pd.DatetimeIndex(uniques, name="datetime")
    return SignalMetrics(pd.Series(ic, index=index, name="IC"), pd.Series(rank_ic, index=index, name="Rank IC"))


def check_finite_prediction(prediction: pd.Series) -> None:
    """Raise ``ValueError`` naming the first (date, instrument) whose prediction is NaN or infinite."""
    values = prediction.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        date, instrument = prediction.index[bad[0]]
        raise ValueError(f"prediction is {values[bad[0]]} on {pd.Timestamp(date).date()} for {instrument} "
                         f"({bad.size} non-finite predictions in all); refusing to evaluate")
