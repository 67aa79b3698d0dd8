"""The embedded CSI300 2017-2019 data, and (when ../shared/data/cn_csi300 exists) a real Qlib directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphatune import datasets
from alphatune.datasets.build import EMBEDDED

CN_CSI300 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cn_csi300"


def test_embedded_data_ships_with_its_licence():
    assert "MIT License" in (EMBEDDED / "LICENSE.md").read_text()
    readme = (EMBEDDED / "README.md").read_text()
    assert "Multi-GCGRU" in readme and "LICENSE.md" in readme
    assert sum(p.stat().st_size for p in EMBEDDED.iterdir()) < 5 * 2**20


def test_embedded_prepares_with_sensible_rows(tmp_path):
    ds = datasets.prepare(cache_dir=tmp_path, progress=False)
    assert ds.source == "embedded" and ds.segments == {
        "train": ("2018-10-01", "2018-12-31"), "valid": ("2019-01-01", "2019-02-28"),
        "test": ("2019-03-01", "2019-11-28")}
    calendar = pd.read_parquet(EMBEDDED / "prices.parquet", columns=["date"])["date"].astype("datetime64[ns]").unique()
    for name, (start, end) in ds.segments.items():
        seg = ds.segment(name)
        trading_days = ((calendar >= pd.Timestamp(start)) & (calendar <= pd.Timestamp(end))).sum()
        rows_per_day = np.diff(seg.day_offsets)
        assert seg.n_days == trading_days
        assert 270 <= rows_per_day.min() and rows_per_day.max() <= 297, name
    assert len(ds.segment("train")) > 17_000 and len(ds.instruments) == 297
    # 60 days of history before the first train day: the oldest lag is a real value for most rows.
    first_day = ds.segment("train").day_slice(0)
    assert (ds.segment("train").features[first_day, 0] != 0).mean() > 0.9
    assert ds.concepts.shape == (297, len(ds.concept_names)) and (ds.concepts.sum(axis=1) == 0).sum() == 10
    assert ds.market.benchmark_close is None and ds.market.close.shape[1] == 297


def test_concept_matrix_aligns_with_instruments():
    table = pd.DataFrame({"symbol": ["SH600001", "SH600001", "SZ000009", "SH600003"],
                          "concept": ["TS2", "TS1", "TS1", "TS3"]})
    matrix, names = datasets.concept_matrix(table, np.array(["SH600001", "SH600002", "SH600003"]))
    assert names == ["TS1", "TS2", "TS3"]
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])


@pytest.mark.skipif(not CN_CSI300.is_dir(), reason="../shared/data/cn_csi300 is not available")
def test_real_qlib_directory(tmp_path):
    ds = datasets.prepare(CN_CSI300, train=("2016-01-01", "2016-03-31"), valid=("2016-04-01", "2016-04-30"),
                          test=("2016-05-01", "2016-05-31"), cache_dir=tmp_path, progress=False)
    test = ds.segment("test")
    rows_per_day = np.diff(test.day_offsets)
    assert 276 <= rows_per_day.min() and rows_per_day.max() <= 299   # members whose series covers the day
    vwap = slice(datasets.FEATURE_NAMES.index("VWAP59"), datasets.FEATURE_NAMES.index("VWAP0") + 1)
    assert (test.features[:, vwap] == 0).all()                        # no vwap in this data
    assert ds.market.benchmark_close is not None and np.isfinite(ds.market.benchmark_close).all()
    assert ds.summary()["notes"][0].startswith("38 of 790 csi300 members have no feature files")
