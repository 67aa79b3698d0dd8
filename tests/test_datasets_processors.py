"""Robust z-score and CSRankNorm against numpy/pandas references; statistics see only the training window."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from alphatune import datasets
from conftest import tiny_membership, tiny_prices, tiny_segments
from alphatune.datasets.processors import apply_robust_zscore, fit_robust_zscore, rank_normalise


def test_robust_zscore_matches_float32_nanmedian():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1001, 12)).astype(np.float32) * 3
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 3] = np.nan                       # no value at all → NaN statistics, column ends as 0
    x[:, 4] = 1.0                          # constant → mad 0 → scale 1.4826e-12, column ends as 0
    x[0, 5] = np.nan                       # odd and even counts of values across columns
    median, scale = fit_robust_zscore(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected_median = np.nanmedian(x, axis=0)
        expected_scale = (np.nanmedian(np.abs(x - expected_median), axis=0) + np.float32(1e-12)) * np.float32(1.4826)
    np.testing.assert_array_equal(median, expected_median)
    np.testing.assert_array_equal(scale, expected_scale)
    assert median.dtype == scale.dtype == np.float32
    y = x.copy()
    missing = apply_robust_zscore(y, median, scale)
    with np.errstate(invalid="ignore"):
        expected = np.nan_to_num(np.clip((x - median) / scale, -3, 3), nan=0.0)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(missing, np.isnan(x).sum(axis=0))
    assert (y[:, 3] == 0).all() and (y[:, 4] == 0).all() and np.abs(y).max() == 3


def test_rank_normalise_is_pandas_pct_rank_with_average_ties():
    labels = np.array([0.1, 0.1, -0.2, np.nan, 0.3,   0.5,   np.nan, 2.0, 2.0, 2.0, 1.0], dtype=np.float32)
    offsets = np.array([0, 5, 6, 11])
    day = np.repeat(np.arange(3), np.diff(offsets))
    expected = ((pd.Series(labels).groupby(day).rank(pct=True) - 0.5) * 3.46).astype(np.float32).to_numpy()
    ours = rank_normalise(labels, offsets)
    np.testing.assert_array_equal(ours, expected)
    assert ours[5] == np.float32(1.73)               # a day with one labelled row
    assert ours[0] == ours[1] and np.isnan(ours[3])  # ties share the average rank; NaN stays NaN


def test_statistics_see_only_the_training_window(tmp_path):
    """Changing every price after the training window (and its 2-day label look-ahead) changes nothing in train."""
    segments = tiny_segments()
    prices = tiny_prices()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    tiny_membership().to_csv(tmp_path / "a" / "csi300.csv", index=False)
    tiny_membership().to_csv(tmp_path / "b" / "csi300.csv", index=False)
    prices.to_csv(tmp_path / "a" / "prices.csv", index=False)
    later = prices["date"] > pd.Timestamp(segments["valid"][0]) + pd.Timedelta(days=1)   # after day 51
    changed = prices.copy()
    rng = np.random.default_rng(7)
    for column in ("open", "high", "low", "close", "vwap", "volume"):
        changed.loc[later, column] *= rng.uniform(0.5, 1.5, int(later.sum()))
    changed.to_csv(tmp_path / "b" / "prices.csv", index=False)
    original = datasets.prepare(tmp_path / "a" / "prices.csv", **segments, cache_dir=tmp_path / "c", progress=False)
    altered = datasets.prepare(tmp_path / "b" / "prices.csv", **segments, cache_dir=tmp_path / "c", progress=False)
    assert original.path != altered.path
    np.testing.assert_array_equal(original.feature_median, altered.feature_median)
    np.testing.assert_array_equal(original.feature_scale, altered.feature_scale)
    for field in ("features", "labels", "raw_labels", "instrument_index", "day_offsets"):
        np.testing.assert_array_equal(getattr(original.segment("train"), field), getattr(altered.segment("train"), field))
    assert not np.array_equal(original.segment("test").features, altered.segment("test").features)
