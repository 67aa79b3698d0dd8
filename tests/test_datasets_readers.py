"""Price-table variants: Parquet, membership as a Qlib .txt or "all", a given ``change``, the benchmark row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from alphatune import datasets
from conftest import tiny_membership, tiny_prices, tiny_segments


def test_parquet_with_qlib_txt_membership_equals_csv(tiny_table, tmp_path):
    from_csv = datasets.prepare(tiny_table, **tiny_segments(), cache_dir=tmp_path / "c", progress=False)
    folder = tmp_path / "pq"
    folder.mkdir()
    tiny_prices().to_parquet(folder / "prices.parquet")
    (folder / "members.txt").write_text("".join(f"{r.symbol}\t{r.start}\t{r.end}\n" for r in tiny_membership().itertuples()))
    from_parquet = datasets.prepare(folder / "prices.parquet", market=str(folder / "members.txt"), **tiny_segments(),
                                    cache_dir=tmp_path / "c", progress=False)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(from_parquet.segment(name).features, from_csv.segment(name).features)
        assert from_parquet.segment(name).index().equals(from_csv.segment(name).index())


def test_market_all_uses_every_symbol_over_its_series(tmp_path):
    tiny_prices().to_csv(tmp_path / "prices.csv", index=False)
    ds = datasets.prepare(tmp_path / "prices.csv", market="all", **tiny_segments(), cache_dir=tmp_path / "c",
                          progress=False)
    test = ds.segment("test")
    rows_per_day = np.diff(test.day_offsets)
    assert rows_per_day[:6].tolist() == [5] * 6          # days 65-70: all five stocks, SZ000004 until delisting
    assert rows_per_day[6:].tolist() == [4] * 9          # days 71-79


def test_given_change_and_benchmark_rows_are_used(tmp_path):
    prices = tiny_prices()
    prices["change"] = 0.01
    index = prices[prices["symbol"] == "SH600001"].assign(symbol="SH000300", factor=1.0, change=0.0)
    pd.concat([prices, index]).to_csv(tmp_path / "prices.csv", index=False)
    tiny_membership().to_csv(tmp_path / "csi300.csv", index=False)
    ds = datasets.prepare(tmp_path / "prices.csv", **tiny_segments(), cache_dir=tmp_path / "c", progress=False)
    assert "SH000300" not in ds.instruments
    market = ds.market
    expected = index.set_index("date")["close"].astype(np.float32).reindex(pd.DatetimeIndex(market.dates))
    np.testing.assert_array_equal(market.benchmark_close, expected.to_numpy())
    traded = ~np.isnan(market.close)
    assert (market.change[traded] == np.float32(0.01)).all()
