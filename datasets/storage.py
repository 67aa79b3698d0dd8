"""Save a prepared dataset as Arrow IPC files plus ``meta.json``; load it back memory-mapped, without copies.

Layout of a dataset directory::

    meta.json                format version, source, market, benchmark, segments, instruments, feature and
                             concept names
    stats.arrow              robust z-score median and scale of each feature (fitted on train)
    <segment>.arrow          features FixedSizeList<float32>[360], labels, raw_labels, instrument_index
    <segment>.days.arrow     date, row_end (end offset of each day's rows)
    market.arrow             date, benchmark_close, close/factor/change FixedSizeList<float32>[stocks] (optional)
    concepts.arrow           one FixedSizeList<float32>[K] row per instrument (optional)

Every file holds one record batch, so each column is one contiguous buffer; a fixed-size-list column's values
buffer is viewed as a 2-D numpy array. Loaded arrays are read-only views of the memory map.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from alphatune.datasets.errors import DataError
from alphatune.datasets.prepared import MarketData, PreparedDataset, SegmentArrays
from alphatune.datasets.sources import META

FORMAT_VERSION = 1


def _column(values: np.ndarray) -> pa.Array:
    """An Arrow array over ``values`` without copying; 2-D arrays become FixedSizeList columns."""
    values = np.ascontiguousarray(values)
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return pa.array(values)


def write_table(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write equal-length columns as one record batch of an Arrow IPC file."""
    batch = pa.record_batch({name: _column(values) for name, values in columns.items()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)


def read_table(path: Path) -> dict[str, np.ndarray]:
    """Columns of an Arrow IPC file as read-only numpy views of a memory map (2-D for fixed-size lists)."""
    if not path.is_file():
        raise DataError(f"{path}: missing from the saved dataset")
    reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    if reader.num_record_batches != 1:
        raise DataError(f"{path}: expected one record batch, found {reader.num_record_batches}")
    batch = reader.get_batch(0)
    out = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            flat = column.values.to_numpy(zero_copy_only=True)[column.offset * width:(column.offset + len(column)) * width]
            out[name] = flat.reshape(len(column), width)
        else:
            out[name] = column.to_numpy(zero_copy_only=True)
    return out


def write_segment(directory: Path, segment: SegmentArrays) -> None:
    """Write one segment's row table and day table into ``directory``."""
    write_table(directory / f"{segment.name}.arrow", {
        "features": segment.features, "labels": segment.labels, "raw_labels": segment.raw_labels,
        "instrument_index": segment.instrument_index})
    write_table(directory / f"{segment.name}.days.arrow",
                {"date": segment.dates, "row_end": segment.day_offsets[1:]})


def write_meta(directory: Path, ds: PreparedDataset, key: str, segment_names: list[str] | None = None) -> None:
    """Write stats, market, concepts and ``meta.json`` (last, so a directory with meta.json is complete).

    The segments' files are written separately by ``write_segment``; ``segment_names`` lists them (default: the
    names in ``ds.arrays``).
    """
    write_table(directory / "stats.arrow", {"median": ds.feature_median, "scale": ds.feature_scale})
    if ds.market is not None:
        market = ds.market
        bench = market.benchmark_close
        write_table(directory / "market.arrow", {
            "date": market.dates, "close": market.close, "factor": market.factor, "change": market.change,
            "benchmark_close": bench if bench is not None else np.full(market.dates.size, np.nan, np.float32)})
    if ds.concepts is not None:
        write_table(directory / "concepts.arrow", {"concepts": ds.concepts})
    meta = {"format_version": FORMAT_VERSION, "key": key, "source": ds.source, "market_name": ds.market_name,
            "benchmark": ds.benchmark,
            "has_benchmark_close": ds.market is not None and ds.market.benchmark_close is not None,
            "segments": {name: list(span) for name, span in ds.segments.items()},
            "segment_order": segment_names if segment_names is not None else list(ds.arrays), "instruments": ds.instruments.tolist(),
            "feature_names": list(ds.feature_names),
            "concept_names": ds.concept_names if ds.concepts is not None else None, "info": ds.info}
    (directory / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False))


def save(ds: PreparedDataset, directory: str | os.PathLike, key: str = "") -> None:
    """Write a whole prepared dataset into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for segment in ds.arrays.values():
        write_segment(directory, segment)
    write_meta(directory, ds, key)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise DataError(f"{directory}: not a prepared dataset (no {META})")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta.get('format_version')}, this code reads {FORMAT_VERSION}; "
                        "prepare the dataset again")
    return meta


def load(directory: str | os.PathLike) -> PreparedDataset:
    """A saved prepared dataset with every array memory-mapped (read-only, nothing copied)."""
    directory = Path(directory)
    meta = read_meta(directory)
    instruments = np.array(meta["instruments"], dtype=str)
    arrays = {}
    for name in meta["segment_order"]:
        rows = read_table(directory / f"{name}.arrow")
        days = read_table(directory / f"{name}.days.arrow")
        arrays[name] = SegmentArrays(
            name=name, features=rows["features"], labels=rows["labels"], raw_labels=rows["raw_labels"],
            day_offsets=np.concatenate([[0], days["row_end"]]).astype(np.int64),
            dates=days["date"].astype("datetime64[ns]", copy=False), instrument_index=rows["instrument_index"],
            instruments=instruments)
    stats = read_table(directory / "stats.arrow")
    market = None
    if (directory / "market.arrow").is_file():
        columns = read_table(directory / "market.arrow")
        market = MarketData(dates=columns["date"].astype("datetime64[ns]", copy=False), instruments=instruments,
                            close=columns["close"], factor=columns["factor"], change=columns["change"],
                            benchmark_close=columns["benchmark_close"] if meta["has_benchmark_close"] else None)
    concepts = read_table(directory / "concepts.arrow")["concepts"] if meta["concept_names"] is not None else None
    return PreparedDataset(
        instruments=instruments, segments={k: tuple(v) for k, v in meta["segments"].items()}, arrays=arrays,
        feature_median=stats["median"], feature_scale=stats["scale"], source=meta["source"],
        market_name=meta["market_name"], benchmark=meta["benchmark"], market=market, concepts=concepts,
        concept_names=meta["concept_names"] or [], feature_names=meta["feature_names"],
        path=str(directory), info=meta["info"])


def publish(staging: Path, target: Path) -> None:
    """Move a fully written ``staging`` directory to ``target`` atomically; if another process won, keep theirs."""
    try:
        os.replace(staging, target)
    except OSError:
        if (target / META).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            return
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
