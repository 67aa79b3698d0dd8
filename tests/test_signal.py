"""Daily IC / Rank IC on a hand-built case whose values are worked out below."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from alphatune.evaluation.signal import daily_average_rank, signal_metrics


def series(rows: list[tuple[str, str, float]]) -> pd.Series:
    index = pd.MultiIndex.from_tuples([(pd.Timestamp(d), i) for d, i, _ in rows], names=["datetime", "instrument"])
    return pd.Series([v for *_, v in rows], index=index, dtype="float64")


DAYS = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
PREDICTION = series([
    (DAYS[0], "A", 1.0), (DAYS[0], "B", 2.0), (DAYS[0], "C", 3.0),
    (DAYS[1], "A", 3.0), (DAYS[1], "B", 1.0), (DAYS[1], "C", 2.0), (DAYS[1], "D", 5.0),
    (DAYS[2], "A", 1.0), (DAYS[2], "B", 2.0),
    (DAYS[3], "A", 1.0), (DAYS[3], "B", 1.0), (DAYS[3], "C", 2.0),
])
LABEL = series([
    (DAYS[0], "A", 1.0), (DAYS[0], "B", 2.0), (DAYS[0], "C", 4.0),
    (DAYS[1], "A", 1.0), (DAYS[1], "B", 2.0), (DAYS[1], "C", np.nan), (DAYS[1], "D", 3.0),
    (DAYS[2], "A", 0.5), (DAYS[2], "B", np.nan),
    (DAYS[3], "A", 3.0), (DAYS[3], "B", 1.0), (DAYS[3], "C", 2.0),
])

# Day 0: p - mean = (-1, 0, 1), l - mean = (-4/3, -1/3, 5/3): cov 3, var 2 and 42/9 -> 9/sqrt(84); ranks agree -> 1.
# Day 1: the NaN pair (C) is dropped: p (3, 1, 5), l (1, 2, 3): cov 2 / sqrt(8 * 2) = 0.5; ranks (2, 1, 3) vs
#        (1, 2, 3): Spearman 1 - 6 * 2 / (3 * 8) = 0.5.
# Day 2: one pair left -> no IC.
# Day 3: p - mean = (-1/3, -1/3, 2/3), l - mean = (1, -1, 0): cov 0 -> IC 0; tied ranks (1.5, 1.5, 3) vs (3, 1, 2)
#        -> 0 too.
EXPECTED_IC = [9 / math.sqrt(84), 0.5, math.nan, 0.0]
EXPECTED_RANK_IC = [1.0, 0.5, math.nan, 0.0]


def test_daily_ic_and_rank_ic_match_the_hand_computation() -> None:
    metrics = signal_metrics(PREDICTION, LABEL)
    np.testing.assert_allclose(metrics.daily_ic.to_numpy(), EXPECTED_IC, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(metrics.daily_rank_ic.to_numpy(), EXPECTED_RANK_IC, rtol=1e-12, equal_nan=True)
    assert list(metrics.daily_ic.index) == [pd.Timestamp(d) for d in DAYS]


def test_summary_is_mean_and_mean_over_sample_std_of_the_days_with_an_ic() -> None:
    summary = signal_metrics(PREDICTION, LABEL).summary
    ic = [v for v in EXPECTED_IC if not math.isnan(v)]
    rank_ic = [v for v in EXPECTED_RANK_IC if not math.isnan(v)]
    assert summary["IC"] == pytest.approx(statistics.mean(ic))
    assert summary["ICIR"] == pytest.approx(statistics.mean(ic) / statistics.stdev(ic))
    assert summary["Rank IC"] == pytest.approx(statistics.mean(rank_ic))
    assert summary["Rank ICIR"] == pytest.approx(statistics.mean(rank_ic) / statistics.stdev(rank_ic))


def test_label_is_aligned_by_index_not_position() -> None:
    shuffled = LABEL.sample(frac=1.0, random_state=3)
    np.testing.assert_allclose(signal_metrics(PREDICTION, shuffled).daily_ic.to_numpy(), EXPECTED_IC,
                               rtol=1e-12, equal_nan=True)


def test_constant_day_has_no_ic() -> None:
    prediction = series([(DAYS[0], "A", 1.0), (DAYS[0], "B", 1.0), (DAYS[0], "C", 1.0)])
    label = series([(DAYS[0], "A", 1.0), (DAYS[0], "B", 2.0), (DAYS[0], "C", 3.0)])
    metrics = signal_metrics(prediction, label)
    assert math.isnan(metrics.daily_ic.iloc[0]) and math.isnan(metrics.summary["IC"])


def test_nan_prediction_is_refused_naming_date_and_instrument() -> None:
    prediction = PREDICTION.copy()
    prediction.iloc[5] = np.nan
    with pytest.raises(ValueError, match=r"2020-01-03 for C"):
        signal_metrics(prediction, LABEL)


def test_average_rank_within_days() -> None:
    values = np.array([5.0, 5.0, 1.0, 2.0, 2.0, 2.0])
    day = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(daily_average_rank(values, day), [2.5, 2.5, 1.0, 2.0, 2.0, 2.0])
