"""A small synthetic ``PreparedDataset`` with a planted, learnable signal, for fast trainer and model tests.

Features are i.i.d. standard normal (clipped to ±3 like the processed Alpha360 features). The raw label of a row
is ``0.02 · (CLOSE0 + OPEN0 + 0.5·CLOSE1) + noise`` (the three most recent values of the close and open blocks),
so any of the eight networks can learn it from the latest time steps. Train/valid labels are rank-normalised per
day as Qlib's ``CSRankNorm`` does, test labels are raw, like a prepared dataset. About ``missing`` of the
(day, stock) rows are absent, so days have different sizes; the first ``lone_days`` days of every segment hold a
single stock.

Also here: ``keep_rows`` (a dataset restricted to some rows, e.g. to compare with NaN-labelled rows),
``first_days`` (the first days of each segment of a real prepared dataset, to keep tests fast) and
``TINY_SPACE``, the two-point LSTM search space the search tests use.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from alphatune.datasets import FEATURE_NAMES, PreparedDataset, SegmentArrays

SIGNAL_COLUMNS = {"CLOSE0": 1.0, "OPEN0": 1.0, "CLOSE1": 0.5}

# The default (lr 1e-2) learns the planted signal at once; lr 1e-7 cannot, so ASHA has something to cut.
TINY_SPACE = """\
model: lstm
params:
  lr: {type: categorical, choices: [1.0e-2, 1.0e-7]}
  hidden_size: {type: int, low: 4, high: 8}
fixed: {num_layers: 1, batch_size: 256, early_stop: 5, seed: 1}
default: {lr: 1.0e-2, hidden_size: 8}
"""


def rank_normalise(values: np.ndarray, day_offsets: np.ndarray) -> np.ndarray:
    """Per-day ``(rank(pct=True) − 0.5) · 3.46`` with average ties, NaN kept (Qlib's ``CSRankNorm``)."""
    days = np.repeat(np.arange(len(day_offsets) - 1), np.diff(day_offsets))
    ranks = pd.Series(values).groupby(days).rank(pct=True).to_numpy()
    return ((ranks - 0.5) * 3.46).astype(np.float32)


def planted_dataset(n_days: int = 120, n_stocks: int = 40, *, seed: int = 0, noise: float = 0.5,
                    missing: float = 0.1, n_concepts: int = 6, split: tuple[float, float] = (0.6, 0.2),
                    lone_days: int = 0) -> PreparedDataset:
    """Build the dataset: ``n_days`` business days from 2020-01-01 split train/valid/test by ``split``."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_days).to_numpy()
    instruments = np.array([f"SH{600000 + i}" for i in range(n_stocks)])
    present = rng.random((n_days, n_stocks)) >= missing
    present[:, 0] = True  # no empty day
    n_train, n_valid = int(n_days * split[0]), int(n_days * split[1])
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, n_days)}
    for first, _ in bounds.values():
        present[first:first + lone_days, 1:] = False
    day_of_row, stock_of_row = np.nonzero(present)
    rows = len(day_of_row)
    features = np.clip(rng.standard_normal((rows, len(FEATURE_NAMES)), dtype=np.float32), -3, 3)
    signal = sum(weight * features[:, FEATURE_NAMES.index(column)] for column, weight in SIGNAL_COLUMNS.items())
    raw = (0.02 * (signal + noise * rng.standard_normal(rows))).astype(np.float32)

    arrays, segments = {}, {}
    for name, (first, stop) in bounds.items():
        selected = (day_of_row >= first) & (day_of_row < stop)
        offsets = np.concatenate([[0], np.cumsum(present[first:stop].sum(axis=1))]).astype(np.int64)
        labels = raw[selected] if name == "test" else rank_normalise(raw[selected], offsets)
        arrays[name] = SegmentArrays(
            name=name, features=np.ascontiguousarray(features[selected]), labels=labels,
            raw_labels=raw[selected], day_offsets=offsets, dates=dates[first:stop],
            instrument_index=stock_of_row[selected].astype(np.int32), instruments=instruments)
        segments[name] = (str(dates[first])[:10], str(dates[stop - 1])[:10])
    concepts = (rng.random((n_stocks, n_concepts)) < 0.3).astype(np.float32)
    concepts[-3:] = 0.0  # a few stocks without any concept
    return PreparedDataset(
        instruments=instruments, segments=segments, arrays=arrays,
        feature_median=np.zeros(len(FEATURE_NAMES), np.float32), feature_scale=np.ones(len(FEATURE_NAMES), np.float32),
        source="planted", market_name="planted", benchmark=None, concepts=concepts,
        concept_names=[f"C{i}" for i in range(n_concepts)])


def _with_arrays(ds: PreparedDataset, arrays: dict[str, SegmentArrays]) -> PreparedDataset:
    segments = {name: (str(seg.dates[0])[:10], str(seg.dates[-1])[:10]) for name, seg in arrays.items()}
    return replace(ds, arrays=arrays, segments=segments, path=None)


def keep_rows(ds: PreparedDataset, keep: dict[str, np.ndarray]) -> PreparedDataset:
    """``ds`` with only the rows where ``keep[segment]`` is True (segments not named are unchanged).

    Labels are copied as they are (not re-ranked); days left without a row disappear."""
    arrays = dict(ds.arrays)
    for name, mask in keep.items():
        seg = ds.segment(name)
        kept_before = np.concatenate([[0], np.cumsum(mask)])
        offsets = kept_before[seg.day_offsets]
        nonempty = np.diff(offsets) > 0
        arrays[name] = SegmentArrays(
            name=name, features=np.ascontiguousarray(seg.features[mask]), labels=seg.labels[mask],
            raw_labels=seg.raw_labels[mask], day_offsets=np.unique(offsets), dates=seg.dates[nonempty],
            instrument_index=seg.instrument_index[mask], instruments=seg.instruments)
    return _with_arrays(ds, arrays)


def first_days(ds: PreparedDataset, days: dict[str, int]) -> PreparedDataset:
    """``ds`` cut to the first ``days[segment]`` days of each named segment (others unchanged)."""
    keep = {}
    for name, count in days.items():
        seg = ds.segment(name)
        keep[name] = np.arange(len(seg)) < seg.day_offsets[min(count, seg.n_days)]
    return keep_rows(ds, keep)
