"""The trainer's metrics as tensor ops: masked MSE and the mean daily IC, vectorised over days.

Days are given by ``day_offsets`` (int64 ``[days + 1]``, rows of day ``i`` are ``day_offsets[i]:day_offsets[i+1]``),
as ``SegmentArrays`` stores them; no function here loops over days in Python.
"""

from __future__ import annotations

import math

import torch


def masked_mse(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean of ``(pred - label)²`` over the entries whose label is finite (Qlib's ``loss_fn``).

    Returns a 0-d tensor. With no finite label the result is 0 (not NaN) and its gradient is 0, so a step on
    such a batch changes nothing through this loss; the trainer never builds such batches.
    """
    mask = torch.isfinite(label)
    diff = torch.where(mask, pred - torch.where(mask, label, 0.0), 0.0)
    return diff.square().sum() / mask.sum().clamp(min=1)


def day_ids(day_offsets: torch.Tensor) -> torch.Tensor:
    """int64 ``[rows]``: the day of every row, from ``day_offsets`` ``[days + 1]`` (on its device)."""
    counts = torch.diff(day_offsets)
    return torch.repeat_interleave(torch.arange(len(counts), device=day_offsets.device), counts)


def daily_mse(pred: torch.Tensor, label: torch.Tensor, day_offsets: torch.Tensor) -> torch.Tensor:
    """float64 ``[days]``: each day's MSE over its finite labels (NaN for a day with none)."""
    days = day_ids(day_offsets)
    n_days = len(day_offsets) - 1
    mask = torch.isfinite(label)
    sq = torch.where(mask, (pred.double() - torch.where(mask, label, 0.0).double()).square(), 0.0)
    total = torch.zeros(n_days, dtype=torch.float64, device=pred.device).index_add_(0, days, sq)
    count = torch.zeros(n_days, dtype=torch.float64, device=pred.device).index_add_(0, days, mask.double())
    return total / count  # 0/0 → NaN for a day without labels


def daily_ic(pred: torch.Tensor, label: torch.Tensor, day_offsets: torch.Tensor) -> torch.Tensor:
    """float64 ``[days]``: each day's Pearson correlation of ``pred`` with ``label`` over rows with a finite label.

    A day is NaN when it has fewer than two such rows or when the prediction or the label is constant on it
    (the correlation is undefined). Computed in float64 with centred sums (segment sums via ``index_add_``).
    """
    days = day_ids(day_offsets)
    n_days = len(day_offsets) - 1
    mask = torch.isfinite(label) & torch.isfinite(pred)
    weight = mask.double()
    p = torch.where(mask, pred.double(), 0.0)
    y = torch.where(mask, label.double(), 0.0)

    def day_sum(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_days, dtype=torch.float64, device=pred.device).index_add_(0, days, values)

    count = day_sum(weight)
    mean_p = day_sum(p) / count
    mean_y = day_sum(y) / count
    dp = (p - mean_p[days]) * weight
    dy = (y - mean_y[days]) * weight
    cov = day_sum(dp * dy)
    denom = torch.sqrt(day_sum(dp.square()) * day_sum(dy.square()))
    defined = (count >= 2) & (denom > 0)
    return torch.where(defined, cov / torch.where(defined, denom, 1.0), math.nan)


def mean_daily_ic(pred: torch.Tensor, label: torch.Tensor, day_offsets: torch.Tensor) -> float:
    """Mean of ``daily_ic`` over the days where it is defined; NaN when it is defined on no day.

    Qlib averages every day's IC, so one degenerate day (a single stock, a constant prediction) makes its whole
    score NaN; here such days are left out of the mean instead, and the score is NaN only when no day counts.
    """
    return mean_of_defined(daily_ic(pred, label, day_offsets))


def mean_of_defined(ic: torch.Tensor) -> float:
    """Mean of the finite entries of a daily series (``mean_daily_ic``'s rule); NaN when there are none."""
    ic = ic[torch.isfinite(ic)]
    return float(ic.mean()) if len(ic) else math.nan
