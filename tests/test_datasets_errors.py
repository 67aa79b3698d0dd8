"""Every kind of bad input gets one ``DataError`` whose one-line message names the file, column, symbol or date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphatune import datasets
from conftest import tiny_membership, tiny_prices, tiny_segments, write_qlib_dir


def prepare_table(folder: Path, prices: pd.DataFrame, membership: pd.DataFrame | None = None, **kwargs):
    prices.to_csv(folder / "prices.csv", index=False)
    (tiny_membership() if membership is None else membership).to_csv(folder / "csi300.csv", index=False)
    kwargs = {**tiny_segments(), **kwargs}
    return datasets.prepare(folder / "prices.csv", cache_dir=folder / "cache", progress=False, **kwargs)


def raises(match: str):
    return pytest.raises(datasets.DataError, match=match)


def one_line(error: pytest.ExceptionInfo) -> bool:
    return "\n" not in str(error.value)


def test_missing_column(tmp_path):
    with raises(r"prices\.csv: missing column\(s\) close") as error:
        prepare_table(tmp_path, tiny_prices().drop(columns="close"))
    assert one_line(error)


def test_duplicate_date_symbol(tmp_path):
    prices = tiny_prices()
    row = prices[(prices["symbol"] == "SH600002") & (prices["date"] == "2020-01-15")]
    with raises(r"prices\.csv: duplicate rows for symbol SH600002 on 2020-01-15") as error:
        prepare_table(tmp_path, pd.concat([prices, row]))
    assert one_line(error)


@pytest.mark.parametrize("column, value, rule", [
    ("close", 0.0, "positive"), ("open", -1.5, "positive"), ("high", np.inf, "positive"),
    ("low", np.nan, "positive"), ("factor", 0.0, "positive"), ("volume", -100.0, "non-negative")])
def test_bad_values(tmp_path, column, value, rule):
    prices = tiny_prices()
    row = prices.index[(prices["symbol"] == "SZ000004") & (prices["date"] == "2020-02-03")][0]
    prices.loc[row, column] = value
    with raises(rf"prices\.csv: column '{column}' for SZ000004 on 2020-02-03 is {value!r}; it must be {rule}") as error:
        prepare_table(tmp_path, prices)
    assert one_line(error)


def test_unparsable_number(tmp_path):
    prices = tiny_prices().astype({"close": object})
    prices.loc[3, "close"] = "12,5"
    with raises(r"column 'close' for \w+ on 2020-01-01 is '12,5', not a number"):
        prepare_table(tmp_path, prices)


def test_non_positive_price_in_a_qlib_bin(tmp_path):
    prices = tiny_prices()
    prices.loc[(prices["symbol"] == "SH600002") & (prices["date"] == "2020-01-10"), "low"] = -0.5
    root = write_qlib_dir(tmp_path / "q", prices, tiny_membership())
    with raises(r"sh600002/low\.day\.bin: low on 2020-01-10 is -0\.5; must be positive"):
        datasets.prepare(root, **tiny_segments(), cache_dir=tmp_path / "c", progress=False)


def test_unknown_market(tmp_path):
    root = write_qlib_dir(tmp_path / "q", tiny_prices(), tiny_membership())
    with raises(r"instruments/csi500\.txt: unknown market 'csi500'; available: csi300") as error:
        datasets.prepare(root, market="csi500", **tiny_segments(), cache_dir=tmp_path / "c", progress=False)
    assert one_line(error)
    with raises(r"unknown market 'csi500': no membership file csi500"):
        prepare_table(tmp_path, tiny_prices(), market="csi500")


@pytest.mark.parametrize("segments, message", [
    ({"test": ("2021-01-01", "2021-06-30")}, r"segment test 2021-01-01\.\.2021-06-30 is outside the data, which has "
                                             r"trading days 2020-01-01\.\.2020-04-21 only"),
    ({"valid": ("2020-03-11", "2020-04-01")}, r"segments valid 2020-03-11\.\.2020-04-01 and test 2020-04-01\.\."
                                              r"2020-04-21 overlap"),
    ({"train": ("2020-03-01", "2020-01-01")}, r"segment train: start 2020-03-01 is after end 2020-01-01"),
    ({"train": ("2020-13-01", "2020-03-01")}, r"segment train start: '2020-13-01' is not a date"),
])
def test_bad_segments(tmp_path, segments, message):
    with raises(message) as error:
        prepare_table(tmp_path, tiny_prices(), **segments)
    assert one_line(error)


def test_empty_universe(tmp_path):
    membership = pd.DataFrame({"symbol": ["SH688999"], "start": ["2020-01-01"], "end": ["2020-04-21"]})
    with raises(r"csi300\.csv: none of the 1 members has price rows in .*prices\.csv \(empty universe\)"):
        prepare_table(tmp_path, tiny_prices(), membership)
    root = write_qlib_dir(tmp_path / "q", tiny_prices(), membership)
    with raises(r"instruments/csi300\.txt: none of the 1 members has data under"):
        datasets.prepare(root, **tiny_segments(), cache_dir=tmp_path / "c", progress=False)


def test_segment_without_members(tmp_path):
    membership = tiny_membership()
    membership = membership[membership["symbol"] == "SZ000005"]       # a member on days 30-50 only
    with raises(r"segment test 2020-04-01\.\.2020-04-21: no member has data there \(empty universe\)"):
        prepare_table(tmp_path, tiny_prices(), membership)


def test_source_that_is_neither_table_nor_qlib_dir(tmp_path):
    with raises(r"no such file or directory"):
        datasets.prepare(tmp_path / "missing.csv", progress=False)
    with raises(r"not a Qlib data directory \(no calendars/day\.txt\)"):
        datasets.prepare(tmp_path, progress=False)


def test_concept_table_without_concept_column(tmp_path):
    (tmp_path / "concepts.csv").write_text("symbol,sector\nSH600001,bank\n")
    with raises(r"concepts\.csv: missing column\(s\) concept_id; a concept table needs symbol and concept"):
        prepare_table(tmp_path, tiny_prices(), concepts=tmp_path / "concepts.csv")


def test_members_without_data_are_reported_not_silently_dropped(tmp_path):
    membership = pd.concat([tiny_membership(), pd.DataFrame({"symbol": ["SH688999"], "start": ["2020-01-01"],
                                                             "end": ["2020-04-21"]})])
    ds = prepare_table(tmp_path, tiny_prices(), membership)
    assert ds.summary()["notes"] == ["benchmark SH000300: not in prices.csv, so the backtest has no benchmark",
                                     "1 of 6 members have no price rows and get no rows: SH688999"]


def test_unparsable_date(tmp_path):
    prices = tiny_prices().astype({"date": object})
    prices.loc[7, "date"] = "2020-02-30"
    with raises(r"prices\.csv: column 'date' line 9 has unparsable date '2020-02-30'") as error:  # header: line 1
        prepare_table(tmp_path, prices)
    assert one_line(error)


def test_malformed_qlib_bins(tmp_path):
    root = write_qlib_dir(tmp_path / "q", tiny_prices(), tiny_membership())
    close = root / "features" / "sz000003" / "close.day.bin"
    close.write_bytes(close.read_bytes()[:-2])
    with raises(r"sz000003/close\.day\.bin: not a Qlib \.bin file \(size \d+ bytes\)"):
        datasets.prepare(root, **tiny_segments(), cache_dir=tmp_path / "c", progress=False)
    np.concatenate([np.array([70], "<f4"), np.ones(20, "<f4")]).tofile(close)
    with raises(r"sz000003/close\.day\.bin: start index 70\.0 with 20 values does not fit the calendar of 80 days"):
        datasets.prepare(root, **tiny_segments(), cache_dir=tmp_path / "c", progress=False)
    close.unlink()
    with raises(r"sz000003/close\.day\.bin: missing \(close is required\)"):
        datasets.prepare(root, **tiny_segments(), cache_dir=tmp_path / "c", progress=False)


def test_a_qlib_directory_without_instruments_says_so(tmp_path):
    root = write_qlib_dir(tmp_path / "q", tiny_prices(), tiny_membership())
    import shutil
    shutil.rmtree(root / "instruments")
    with raises(r"a Qlib data directory needs an instruments/ folder \(instruments/csi300\.txt lists the market's "
                r"members\); this one has none") as error:
        datasets.prepare(root, market="csi300", **tiny_segments(), cache_dir=tmp_path / "c", progress=False)
    assert one_line(error)
