"""Periods cut from a trading calendar (datasets.periods): walk-forward folds and Qlib's rolling windows, on
hand-made calendars and on the cn_csi300 calendar against windows Qlib's own RollingGen produced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphatune.datasets import DataError
from alphatune.datasets.periods import LABEL_HORIZON, Window, rolling, walk_forward

HERE = Path(__file__).resolve().parent
CN_CSI300 = HERE.parent.parent / "shared" / "data" / "cn_csi300"


def business_days(first: str, count: int) -> np.ndarray:
    return pd.bdate_range(first, periods=count).to_numpy()


def at(days: np.ndarray, date: str) -> int:
    return int(np.flatnonzero(days.astype("datetime64[D]") == np.datetime64(date, "D"))[0])


def test_one_fold_is_the_train_and_valid_segments_as_they_are() -> None:
    days = business_days("2020-01-01", 200)
    assert walk_forward(days, ("2020-02-03", "2020-06-30"), ("2020-07-01", "2020-08-31"), 1) == [
        Window(train=("2020-02-03", "2020-06-30"), valid=("2020-07-01", "2020-08-31"))]


@pytest.mark.parametrize("kind", ["rolling", "expanding"])
def test_folds_cover_the_valid_period_once_and_train_ends_an_embargo_before_each(kind: str) -> None:
    days = business_days("2020-01-01", 300)
    train, valid = ("2020-05-01", "2020-08-31"), ("2020-09-01", "2020-12-31")
    folds = walk_forward(days, train, valid, 4, kind)
    assert len(folds) == 4
    covered = [day for fold in folds for day in range(at(days, fold.valid[0]), at(days, fold.valid[1]) + 1)]
    assert covered == list(range(at(days, "2020-09-01"), at(days, "2020-12-31") + 1))  # consecutive, once each
    sizes = [at(days, fold.valid[1]) - at(days, fold.valid[0]) + 1 for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    length = at(days, train[1]) - at(days, train[0]) + 1
    for fold in folds:
        # No label of a train day looks at a fold day: the last train day's label reads LABEL_HORIZON days ahead,
        # and exactly that many days lie between (the embargo).
        assert at(days, fold.train[1]) + LABEL_HORIZON < at(days, fold.valid[0])
        assert at(days, fold.valid[0]) - at(days, fold.train[1]) - 1 == LABEL_HORIZON
        if kind == "rolling":
            assert at(days, fold.train[1]) - at(days, fold.train[0]) + 1 == length
        else:
            assert fold.train[0] == train[0]
    assert [fold.train[1] for fold in folds] == sorted(fold.train[1] for fold in folds)


def test_fold_requests_that_cannot_be_met_say_why_in_one_line() -> None:
    days = business_days("2020-01-01", 120)
    with pytest.raises(DataError, match=r"^--folds 5: the valid segment 2020-05-01\.\.2020-05-08 has 6 trading days, "
                                        r"too few for 5 folds of at least 2 days each"):
        walk_forward(days, ("2020-02-03", "2020-04-30"), ("2020-05-01", "2020-05-08"), 5)
    with pytest.raises(DataError, match=r"^--folds 2: fold 1's train window would begin before the data's first day "
                                        r"2020-01-01"):
        walk_forward(days, ("2020-01-01", "2020-04-30"), ("2020-05-01", "2020-06-30"), 2, "rolling")
    assert walk_forward(days, ("2020-01-01", "2020-04-30"), ("2020-05-01", "2020-06-30"), 2, "expanding")
    with pytest.raises(DataError, match="--fold-train must be one of rolling, expanding"):
        walk_forward(days, ("2020-02-03", "2020-04-30"), ("2020-05-01", "2020-06-30"), 2, "sliding")


@pytest.mark.parametrize("kind", ["expanding", "sliding"])
def test_rolling_windows_retrain_every_step_and_test_every_day_once(kind: str) -> None:
    days = business_days("2020-01-01", 400)
    train, valid, test = ("2020-01-01", "2020-06-30"), ("2020-07-01", "2020-09-30"), ("2020-10-01", "2021-03-31")
    windows = rolling(days, train, valid, test, 20, kind)
    tested = [day for window in windows for day in range(at(days, window.test[0]), at(days, window.test[1]) + 1)]
    assert tested == list(range(at(days, test[0]), at(days, test[1]) + 1))
    assert windows[0].train == train and windows[0].valid == ("2020-07-01", "2020-09-30")
    for number, window in enumerate(windows):
        assert at(days, window.valid[0]) == at(days, valid[0]) + 20 * number  # valid and test shift by the step
        assert at(days, window.train[1]) == at(days, train[1]) + 20 * number
        assert window.train[0] == train[0] if kind == "expanding" else \
            at(days, window.train[0]) == 20 * number
        assert at(days, window.valid[1]) < at(days, window.test[0])  # nothing the test sees trains it


@pytest.mark.skipif(not (CN_CSI300 / "calendars" / "day.txt").is_file(), reason=f"needs {CN_CSI300} (../shared)")
@pytest.mark.parametrize("kind", ["expanding", "sliding"])
def test_rolling_windows_are_qlibs_rollinggen_windows_on_the_same_calendar(kind: str) -> None:
    """Qlib 0.9.7's ``RollingGen(step=40, rtype=ROLL_EX | ROLL_SD)`` on the cn_csi300 calendar, recorded with
    benchmarks/check_rolling_vs_qlib.py: the same windows, except that Qlib lets the last test window run past
    the test period's end (2018-08-20) and ours stops at it."""
    from alphatune.datasets import DataSpec
    calendar = DataSpec(source=str(CN_CSI300)).calendar()
    expected = json.loads((HERE / "data" / "qlib_rollinggen_cn_csi300.json").read_text())[kind]
    expected[-1]["test"][1] = "2018-06-29"  # the last trading day of the test period
    ours = rolling(calendar, ("2016-01-01", "2016-12-31"), ("2017-01-01", "2017-06-30"), ("2017-07-01", "2018-06-30"),
                   40, kind)
    assert [window.to_dict() for window in ours] == expected
