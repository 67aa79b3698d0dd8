"""Qlib's Alpha360 processors: RobustZScoreNorm (+clip), Fillna, DropnaLabel, CSRankNorm, in float32 numpy.

* ``fit_robust_zscore`` pools every row it is given (NaN-label and all-NaN rows included) per column:
  ``median = nanmedian(x)`` (even count: mean of the two middle values, rounded to float32),
  ``mad = nanmedian(|x − median|)`` from that float32 median, ``scale = (mad + 1e-12) · 1.4826`` in float32.
  A column with no value gets NaN statistics and ends as all 0.
* ``apply_robust_zscore`` does ``clip((x − median) / scale, −3, 3)`` in float32, then NaN → 0, in place.
* ``rank_normalise`` is pandas' per-day ``rank(pct=True)`` with average ties (ties are equal float32 values)
  mapped by ``(r − 0.5) · 3.46``; NaN labels stay NaN and are excluded from the day's count.
"""

from __future__ import annotations

import numpy as np

MAD_TO_STD = np.float32(1.4826)
EPS = np.float32(1e-12)
CLIP = 3.0
COLUMN_BLOCK = 8
ROW_CHUNK = 65536


def _median_of_sorted_prefix(part: np.ndarray, count: int) -> np.float32:
    """Median of the first ``count`` values of ``part`` (no NaN) by partitioning; float32 result, NaN if empty."""
    if count == 0:
        return np.float32(np.nan)
    upper = count // 2
    if count % 2:
        return np.float32(np.partition(part[:count], upper)[upper])
    pair = np.partition(part[:count], (upper - 1, upper))
    return np.float32((np.float64(pair[upper - 1]) + np.float64(pair[upper])) / 2)


def fit_robust_zscore(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median, scale), float32 ``[columns]``, of the rows of ``features`` (float32 ``[rows, columns]``).

    Works on blocks of columns transposed to contiguous rows, partitioning only the non-NaN values.
    """
    rows, columns = features.shape
    median = np.full(columns, np.nan, dtype=np.float32)
    mad = np.full(columns, np.nan, dtype=np.float32)
    for begin in range(0, columns, COLUMN_BLOCK):
        block = np.ascontiguousarray(features[:, begin:begin + COLUMN_BLOCK].T)
        for offset, column in enumerate(block):
            values = column[~np.isnan(column)]
            med = _median_of_sorted_prefix(values, values.size)
            median[begin + offset] = med
            if values.size:
                deviation = np.abs(np.subtract(values, med, dtype=np.float32))
                mad[begin + offset] = _median_of_sorted_prefix(deviation, deviation.size)
    scale = np.multiply(np.add(mad, EPS, dtype=np.float32), MAD_TO_STD, dtype=np.float32)
    return median, scale


def apply_robust_zscore(features: np.ndarray, median: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """In place: ``features = nan_to_0(clip((features − median) / scale, −3, 3))``, chunk by chunk.

    Returns int64 ``[columns]``: how many values of each column were NaN (missing raw features, or every value of
    a column with NaN statistics).
    """
    missing = np.zeros(features.shape[1], dtype=np.int64)
    for begin in range(0, features.shape[0], ROW_CHUNK):
        chunk = features[begin:begin + ROW_CHUNK]
        np.subtract(chunk, median, out=chunk)
        np.divide(chunk, scale, out=chunk)
        np.clip(chunk, -CLIP, CLIP, out=chunk)
        nan = np.isnan(chunk)
        missing += nan.sum(axis=0)
        np.copyto(chunk, np.float32(0), where=nan)
    return missing


def rank_normalise(labels: np.ndarray, day_offsets: np.ndarray) -> np.ndarray:
    """float32: per day, ``(average-tie percentile rank − 0.5) · 3.46`` of ``labels``; NaN stays NaN.

    ``day_offsets`` (int64 ``[days + 1]``) delimit each day's contiguous rows. A day with one labelled row gets
    ``(1 − 0.5) · 3.46 = 1.73``. Percentiles are float64, as pandas computes them, then rounded to float32.
    """
    rows = labels.size
    counts = np.diff(day_offsets)
    day = np.repeat(np.arange(counts.size), counts)
    valid = ~np.isnan(labels)
    order = np.lexsort((labels, day))  # NaN sort last inside each day
    sorted_day, sorted_label, sorted_valid = day[order], labels[order], valid[order]
    new_group = np.ones(rows, dtype=bool)
    new_group[1:] = (sorted_day[1:] != sorted_day[:-1]) | (sorted_label[1:] != sorted_label[:-1])
    group_start = np.flatnonzero(new_group)
    group_end = np.append(group_start[1:], rows)
    day_start = day_offsets[:-1][sorted_day]                    # sorted position of each day's first row
    first_of_group = group_start[np.cumsum(new_group) - 1]
    last_of_group = group_end[np.cumsum(new_group) - 1]
    average_rank = (first_of_group + last_of_group + 1) / 2.0 - day_start   # 1-based average rank
    day_count = np.bincount(day, weights=valid, minlength=counts.size)
    pct = average_rank / day_count[sorted_day]
    ranked = np.where(sorted_valid, (pct - 0.5) * 3.46, np.nan)
    out = np.empty(rows, dtype=np.float32)
    out[order] = ranked
    return out
