"""Saving, memory-mapped loading, the prepare cache, the CLI, and zero-copy pickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphatune import datasets
from conftest import tiny_segments

ARRAY_FIELDS = ("features", "labels", "raw_labels", "day_offsets", "dates", "instrument_index")


@pytest.fixture
def tiny_ds(tiny_table: Path, tmp_path: Path) -> datasets.PreparedDataset:
    return datasets.prepare(tiny_table, **tiny_segments(), cache_dir=tmp_path / "cache", progress=False)


def assert_same_dataset(a: datasets.PreparedDataset, b: datasets.PreparedDataset) -> None:
    assert list(a.arrays) == list(b.arrays) and a.segments == b.segments
    np.testing.assert_array_equal(a.instruments, b.instruments)
    for name in a.arrays:
        for field in ARRAY_FIELDS:
            np.testing.assert_array_equal(getattr(a.segment(name), field), getattr(b.segment(name), field))
    for field in ("dates", "close", "factor", "change"):
        np.testing.assert_array_equal(getattr(a.market, field), getattr(b.market, field))
    np.testing.assert_array_equal(a.feature_median, b.feature_median)
    assert (a.source, a.market_name, a.benchmark, a.feature_names) == (b.source, b.market_name, b.benchmark,
                                                                       b.feature_names)


def test_layout_dtypes_and_memory_map(tiny_ds):
    seg = tiny_ds.segment("train")
    assert seg.features.dtype == np.float32 and seg.features.shape == (len(seg), 360)
    assert seg.features.flags.c_contiguous and not seg.features.flags.writeable and not seg.features.flags.owndata
    assert seg.labels.dtype == seg.raw_labels.dtype == np.float32
    assert seg.day_offsets.dtype == np.int64 and seg.day_offsets[0] == 0 and seg.day_offsets[-1] == len(seg)
    assert (np.diff(seg.day_offsets) > 0).all() and seg.dates.dtype == np.dtype("datetime64[ns]")
    assert seg.instrument_index.dtype == np.int32
    index = seg.index()
    assert index.is_monotonic_increasing and index.names == ["datetime", "instrument"]
    assert not np.isnan(seg.labels).any() and not np.isnan(seg.features).any()
    frame = tiny_ds.frame("valid")
    assert list(frame.columns) == [*datasets.FEATURE_NAMES, "LABEL0"] and len(frame) == len(tiny_ds.segment("valid"))


def test_save_and_load_round_trip(tiny_ds, tmp_path):
    datasets.save(tiny_ds, tmp_path / "copy")
    assert_same_dataset(datasets.load(tmp_path / "copy"), tiny_ds)
    assert_same_dataset(datasets.load(tiny_ds.path), tiny_ds)


def test_prepare_reuses_the_saved_result(tiny_table, tmp_path, capfd):
    first = datasets.prepare(tiny_table, **tiny_segments(), cache_dir=tmp_path / "cache")
    built = capfd.readouterr().err
    meta = Path(first.path) / "meta.json"
    stamp = meta.stat().st_mtime_ns
    again = datasets.prepare(tiny_table, **tiny_segments(), cache_dir=tmp_path / "cache")
    assert "train: " in built and "reusing the prepared dataset" in capfd.readouterr().err
    assert again.path == first.path and meta.stat().st_mtime_ns == stamp
    assert_same_dataset(again, first)
    other = datasets.prepare(tiny_table, **{**tiny_segments(), "test": ("2020-04-01", "2020-04-14")},
                             cache_dir=tmp_path / "cache", progress=False)
    assert other.path != first.path
    os.utime(tiny_table, ns=(stamp, stamp + 10**9))           # the source changed: prepared again
    assert datasets.prepare(tiny_table, **tiny_segments(), cache_dir=tmp_path / "cache", progress=False).path != first.path


def test_dates_may_be_timestamps(tiny_ds, tiny_table, tmp_path):
    as_timestamps = {name: (pd.Timestamp(a), np.datetime64(b)) for name, (a, b) in tiny_segments().items()}
    again = datasets.prepare(tiny_table, **as_timestamps, cache_dir=tmp_path / "cache", progress=False)
    assert again.path == tiny_ds.path and again.segments == tiny_segments()
    # train: 195 member rows on days 0-49, less SH600002's days 38-40 whose label needs its suspended days 40-41;
    # valid: 15 + 15 + 15 + 11 (SZ000004 to day 60) + 1 (SZ000005 on day 50); test: 15 + 15 + 15 + 6.
    assert repr(again) == ("PreparedDataset(source='%s', market='csi300', 5 instruments, train=192 rows, "
                           "valid=57 rows, test=51 rows)" % tiny_table)


def test_default_cache_dir_comes_from_the_environment(tiny_table, tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHATUNE_CACHE", str(tmp_path / "env-cache"))
    ds = datasets.prepare(tiny_table, **tiny_segments(), progress=False)
    assert Path(ds.path).parent == tmp_path / "env-cache"


def test_out_directory_is_replaced_only_when_it_holds_a_dataset(tiny_table, tmp_path):
    out = tmp_path / "out"
    first = datasets.prepare(tiny_table, **tiny_segments(), out=out, progress=False)
    assert first.path == str(out)
    shorter = {**tiny_segments(), "test": ("2020-04-01", "2020-04-14")}
    second = datasets.prepare(tiny_table, **shorter, out=out, progress=False)
    assert second.path == str(out) and second.segments["test"] == ("2020-04-01", "2020-04-14")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(datasets.DataError, match="exists and is not a prepared dataset"):
        datasets.prepare(tiny_table, **tiny_segments(), out=tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_pickle_protocol_5_hands_arrays_out_of_band(tiny_ds):
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(tiny_ds, protocol=5, buffer_callback=buffers.append)
    features = tiny_ds.segment("train").features
    assert len(payload) < features.nbytes / 10                 # the arrays are not inside the pickle
    assert any(np.shares_memory(np.frombuffer(b.raw(), dtype=np.uint8), features) for b in buffers)
    restored = pickle.loads(payload, buffers=buffers)
    assert np.shares_memory(restored.segment("train").features, features)
    assert_same_dataset(restored, tiny_ds)


def test_cli_prepares_and_prints_a_summary(tiny_table, tmp_path):
    start, end = tiny_segments()["test"]
    result = subprocess.run(
        [sys.executable, "-m", "alphatune", "prepare", "--source", str(tiny_table), "--train", "2020-01-01:2020-03-10",
         "--valid", "2020-03-11:2020-03-31", "--test", f"{start}:{end}", "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, check=True)
    assert "| train | 2020-01-01 .. 2020-03-10 | 50 |" in result.stdout
    assert "missing feature values" in result.stdout and "[datasets] train:" in result.stderr
    by_field = next(line for line in result.stdout.splitlines() if line.startswith("  CLOSE "))
    assert "VWAP" in by_field and "the source has no vwap" not in by_field  # the tiny table has a vwap column
    assert "rows without a label: the label needs the next two closes" in result.stdout
    assert_same_dataset(datasets.load(tmp_path / "cli"), datasets.prepare(
        tiny_table, **tiny_segments(), cache_dir=tmp_path / "cache", progress=False))
    bad = subprocess.run([sys.executable, "-m", "alphatune", "prepare", "--source", str(tmp_path / "nope.csv"),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "nope.csv" in bad.stderr


@pytest.mark.slow
def test_ray_put_shares_the_arrays_between_gets(tiny_ds):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.put(tiny_ds)
        first, second = ray.get(ref), ray.get(ref)
        features = first.segment("train").features
        assert not features.flags.writeable
        assert np.shares_memory(features, second.segment("train").features)   # both read the object store
        assert_same_dataset(first, tiny_ds)
    finally:
        ray.shutdown()


def test_preparing_the_same_request_into_the_same_folder_again_reuses_it_without_reading_the_source(
        tiny_table, tmp_path, capsys) -> None:
    """``alphatune prepare --out DIR`` twice with the same source and options (segments left to the table's
    defaults): the second run reuses DIR at once, without reading the table again."""
    from alphatune.cli import main
    argv = ["prepare", "--data", str(tiny_table), "--out", str(tmp_path / "prepared")]
    assert main(argv) == 0
    first = capsys.readouterr().err
    assert main(argv) == 0
    second = capsys.readouterr().err
    assert f"read {tiny_table}" in first and f"read {tiny_table}" not in second
    assert f"reusing the prepared dataset at {tmp_path / 'prepared'}" in second
