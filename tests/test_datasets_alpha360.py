"""Alpha360 features, label, row set and processors against a plain loop-and-pandas reference on a tiny panel."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from alphatune import datasets
from conftest import TINY_SEGMENTS, tiny_membership, tiny_prices, tiny_segments, write_qlib_dir

FIELDS = ("close", "open", "high", "low", "vwap", "volume")


def reference_rows(prices: pd.DataFrame, membership: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Raw Alpha360 features and label per segment, one row at a time with Python loops (slow, obvious)."""
    calendar = np.sort(prices["date"].unique())
    series = {}
    for symbol, rows in prices.groupby("symbol"):
        position = np.searchsorted(calendar, rows["date"].to_numpy())
        values = {}
        for field in FIELDS:
            raw = rows[field].to_numpy() * (1 / rows["factor"].to_numpy() if field == "volume" else rows["factor"].to_numpy())
            full = np.full(len(calendar), np.nan, dtype=np.float32)
            full[position] = raw
            values[field] = full
        series[symbol] = (values, position.min(), position.max())
    out = {}
    for name, (first_day, last_day) in TINY_SEGMENTS.items():
        records, index = [], []
        for t in range(first_day, last_day + 1):
            date = calendar[t]
            for symbol in sorted(series):
                values, first, last = series[symbol]
                spans = membership[membership["symbol"] == symbol]
                member = any(pd.Timestamp(s) <= date <= pd.Timestamp(e) for s, e in zip(spans["start"], spans["end"]))
                if not (member and first <= t <= last):
                    continue
                row = []
                for field in FIELDS:
                    for lag in range(59, -1, -1):
                        past = values[field][t - lag] if t - lag >= 0 else np.float32(np.nan)
                        if field == "volume":
                            row.append(np.float32(past) / (values["volume"][t] + np.float32(1e-12)))
                        else:
                            row.append(np.float32(past) / values["close"][t])
                c = values["close"]
                c1 = c[t + 1] if t + 1 < len(calendar) else np.float32(np.nan)
                c2 = c[t + 2] if t + 2 < len(calendar) else np.float32(np.nan)
                row.append(np.float32(np.float32(c2 / c1) - np.float32(1)))
                records.append(row)
                index.append((pd.Timestamp(date), symbol))
        out[name] = pd.DataFrame(np.array(records, dtype=np.float32), columns=[*datasets.FEATURE_NAMES, "LABEL0"],
                                 index=pd.MultiIndex.from_tuples(index, names=["datetime", "instrument"]))
    return out


def reference_processed(raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Qlib's Alpha360 processors with numpy's nanmedian and pandas' groupby rank, in float32."""
    train = raw["train"][datasets.FEATURE_NAMES].to_numpy(dtype=np.float32)
    with warnings.catch_warnings():              # lags past day 0 are all NaN in the 50-day train window
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(train, axis=0)
        mad = np.nanmedian(np.abs(train - median), axis=0)
    scale = (mad + np.float32(1e-12)) * np.float32(1.4826)
    out = {}
    for name, frame in raw.items():
        features = frame[datasets.FEATURE_NAMES].to_numpy(dtype=np.float32)
        features = np.nan_to_num(np.clip((features - median) / scale, -3, 3), nan=0.0)
        processed = pd.DataFrame(features, index=frame.index, columns=datasets.FEATURE_NAMES)
        processed["LABEL0"] = frame["LABEL0"]
        if name != "test":
            processed = processed[processed["LABEL0"].notna()].copy()
            ranked = processed["LABEL0"].groupby(level="datetime").rank(pct=True)
            processed["LABEL0"] = ((ranked - 0.5) * 3.46).astype(np.float32)
        out[name] = processed
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, pd.DataFrame]]:
    raw = reference_rows(tiny_prices(), tiny_membership())
    return {"raw": raw, "processed": reference_processed(raw)}


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory: pytest.TempPathFactory) -> datasets.PreparedDataset:
    folder = tmp_path_factory.mktemp("tiny")
    tiny_prices().to_csv(folder / "prices.csv", index=False)
    tiny_membership().to_csv(folder / "csi300.csv", index=False)
    return datasets.prepare(folder / "prices.csv", **tiny_segments(), cache_dir=folder / "cache", progress=False)


@pytest.mark.parametrize("name", ["train", "valid", "test"])
def test_features_and_labels_equal_the_reference_bit_for_bit(tiny_ds, reference, name):
    ours = tiny_ds.frame(name)
    expected = reference["processed"][name]
    assert ours.index.equals(expected.index)
    np.testing.assert_array_equal(ours.to_numpy(), expected.to_numpy())
    np.testing.assert_array_equal(tiny_ds.segment(name).raw_labels,
                                  reference["raw"][name]["LABEL0"].loc[expected.index].to_numpy())


def test_hand_computed_values(tiny_ds):
    prices = tiny_prices().set_index(["date", "symbol"])
    dates = pd.bdate_range("2020-01-01", periods=80)
    adjusted = (prices["close"] * prices["factor"]).astype(np.float32)
    t, symbol = dates[45], "SH600001"
    c = {k: adjusted[(dates[45 + k], symbol)] for k in (-2, -1, 0, 1, 2)}
    seg = tiny_ds.segment("train")
    row = int(np.flatnonzero((seg.row_dates() == t.to_datetime64()) & (seg.instruments[seg.instrument_index] == symbol))[0])
    assert seg.raw_labels[row] == np.float32(np.float32(c[2] / c[1]) - np.float32(1))
    raw_close2 = np.float32(c[-2] / c[0])
    expected = np.float32(np.clip((raw_close2 - tiny_ds.feature_median[57]) / tiny_ds.feature_scale[57], -3, 3))
    assert seg.features[row, datasets.FEATURE_NAMES.index("CLOSE2")] == expected
    assert seg.features[row, datasets.FEATURE_NAMES.index("CLOSE0")] == 0.0     # constant 1 → median → 0


def test_row_set_follows_membership_and_stored_series(tiny_ds):
    dates = pd.bdate_range("2020-01-01", periods=80)
    frames = {name: tiny_ds.frame(name) for name in ("train", "valid", "test")}
    index = pd.concat(frames.values()).index
    days_of = {s: sorted(dates.get_indexer(index[index.get_level_values(1) == s].get_level_values(0)))
               for s in tiny_ds.instruments}
    assert days_of["SZ000003"][0] == 25                                # member from 25 although listed at 20
    assert days_of["SZ000005"] == list(range(30, 51))                  # member on days 30..50 only
    assert 61 not in days_of["SZ000004"] and days_of["SZ000004"][-1] == 70   # left on 61-64, delisted after 70
    # Suspended on days 40-41: day 40 has no label (day 41 has no close) and is dropped from train; day 41 keeps
    # a row whose features are all 0 (every ratio divides by its NaN close) and whose label is known.
    assert (dates[40], "SH600002") not in frames["train"].index
    suspended = frames["train"].loc[(dates[41], "SH600002")]
    assert (suspended[datasets.FEATURE_NAMES] == 0).all() and np.isfinite(suspended["LABEL0"])
    valid_day = frames["train"].xs(dates[49], level="datetime")            # last train day: label looks into valid
    assert valid_day["LABEL0"].notna().all() and len(valid_day) == 5
    test = tiny_ds.segment("test")
    assert np.isnan(test.raw_labels[test.day_slice(-1)]).all() and np.isnan(test.raw_labels[test.day_slice(-2)]).all()


def test_lags_reach_into_non_member_days(tiny_ds):
    """SZ000003 joins on day 25 but trades from day 20: CLOSE5 on day 25 reads day 20 (not NaN → not 0)."""
    dates = pd.bdate_range("2020-01-01", periods=80)
    row = tiny_ds.frame("train").loc[(dates[25], "SZ000003")]
    assert row["CLOSE5"] != 0.0 and row["CLOSE6"] == 0.0


def test_qlib_directory_reads_back_to_the_same_dataset(tmp_path, tiny_ds):
    root = write_qlib_dir(tmp_path / "qlib", tiny_prices(), tiny_membership())
    from_qlib = datasets.prepare(root, **tiny_segments(), cache_dir=tmp_path / "cache", progress=False)
    for name in ("train", "valid", "test"):
        a, b = from_qlib.segment(name), tiny_ds.segment(name)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.day_offsets, b.day_offsets)
        assert a.index().equals(b.index())
    np.testing.assert_array_equal(from_qlib.market.close, tiny_ds.market.close)
    np.testing.assert_array_equal(from_qlib.market.change, tiny_ds.market.change)


def test_missing_vwap_gives_an_all_zero_vwap_block(tmp_path):
    tiny_prices().drop(columns="vwap").to_csv(tmp_path / "prices.csv", index=False)
    tiny_membership().to_csv(tmp_path / "csi300.csv", index=False)
    ds = datasets.prepare(tmp_path / "prices.csv", **tiny_segments(), cache_dir=tmp_path / "cache", progress=False)
    vwap = slice(datasets.FEATURE_NAMES.index("VWAP59"), datasets.FEATURE_NAMES.index("VWAP0") + 1)
    assert np.isnan(ds.feature_median[vwap]).all()
    assert (ds.segment("train").features[:, vwap] == 0).all()
    assert (ds.segment("train").features[:, datasets.FEATURE_NAMES.index("LOW3")] != 0).any()


def test_market_data_is_adjusted_close_and_change(tiny_ds):
    prices = tiny_prices()
    market = tiny_ds.market
    s = list(market.instruments).index("SH600002")
    rows = prices[prices["symbol"] == "SH600002"].set_index("date")
    dates = pd.DatetimeIndex(market.dates)
    adjusted = (rows["close"] * rows["factor"]).astype(np.float32).reindex(dates)
    np.testing.assert_array_equal(market.close[:, s], adjusted.to_numpy())
    day42 = dates.get_loc(pd.bdate_range("2020-01-01", periods=80)[42])  # first day back after the suspension
    assert market.change[day42, s] == np.float32(adjusted.iloc[day42] / adjusted.iloc[day42 - 3] - np.float32(1))
    assert np.isnan(market.change[day42 - 1, s]) and market.benchmark_close is None
    assert market.close.shape == (dates.size, len(tiny_ds.instruments))
