"""``prepare``: read a source, build Alpha360 for each segment, process, save, and return the saved dataset.

The result is cached: a directory named by a hash of the source's identity (path, size and mtime of every file
read), the settings and the storage format version. Preparing the same thing twice loads the saved result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alphatune.datasets.alpha360 import FeatureBuilder
from alphatune.datasets.concepts import concept_matrix, read_concept_table
from alphatune.datasets.errors import DataError
from alphatune.datasets.panel import Panel, previous_traded_change
from alphatune.datasets.prepared import FEATURE_NAMES, FIELDS, SEGMENT_NAMES, WINDOW, MarketData, PreparedDataset, SegmentArrays
from alphatune.datasets.sources import DEFAULT_BENCHMARK, DEFAULT_MARKET, EMBEDDED_SEGMENTS, is_qlib_dir
from alphatune.datasets.processors import apply_robust_zscore, fit_robust_zscore, rank_normalise
from alphatune.datasets.qlib_reader import read_calendar, read_qlib_dir
from alphatune.datasets.storage import FORMAT_VERSION, META, publish, write_meta, write_segment
from alphatune.datasets.storage import load as load_prepared
from alphatune.datasets.table_reader import is_table, parse_dates, read_frame, read_price_table
from alphatune.storage import cache_dir

EMBEDDED = Path(__file__).resolve().parent / "embedded"
EMBEDDED_PRICES = EMBEDDED / "prices.parquet"
EMBEDDED_CONCEPTS = EMBEDDED / "concepts.csv"
QLIB_SEGMENTS = {"train": ("2010-01-01", "2016-12-31"), "valid": ("2017-01-01", "2018-12-31"),
                 "test": ("2019-01-01", "2020-12-31")}
WARMUP_DAYS = 60
DateLike = str | pd.Timestamp | np.datetime64 | Any


def default_cache_dir() -> Path:
    """Where prepared datasets are cached: ``alphatune.storage.cache_dir()`` (``$ALPHATUNE_CACHE`` or
    ``~/.cache/alphatune``)."""
    return cache_dir()


class Progress:
    """Stage lines on stderr (``[datasets] <what> (<seconds since start>)``) when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[datasets] {message} ({time.perf_counter() - self.start:.1f} s)", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Source:
    """What ``prepare`` reads: the price source, how membership is given, the concept table."""

    kind: str                 # "qlib" | "table" | "embedded"
    path: Path
    label: str                # how the dataset records its source ("embedded" or the absolute path)
    concepts: Path | None

    def files(self, market: str) -> list[Path]:
        """Every file whose content decides the result, for the cache key."""
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        if self.kind != "qlib":
            membership = Path(market)
            files += [membership] if membership.is_file() else sorted(self.path.parent.glob(f"{market}.*"))
        return files + ([self.concepts] if self.concepts else [])


def resolve_source(source: str | os.PathLike | None, concepts: str | os.PathLike | None) -> Source:
    """Decide the source kind; raises ``DataError`` if ``source`` is neither a Qlib directory nor a table."""
    if source is None:
        return Source("embedded", EMBEDDED_PRICES, "embedded",
                      Path(concepts).expanduser().resolve() if concepts else EMBEDDED_CONCEPTS)
    path = Path(source).expanduser().resolve()
    concept_path = Path(concepts).expanduser().resolve() if concepts else None
    if path.is_dir():
        if not is_qlib_dir(path):
            raise DataError(f"{path}: not a Qlib data directory (no calendars/day.txt)")
        return Source("qlib", path, str(path), concept_path)
    if is_table(path):
        return Source("table", path, str(path), concept_path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    raise DataError(f"{path}: not a Qlib directory nor a .csv/.csv.gz/.parquet price table")


def trading_calendar(source: str | os.PathLike | None) -> np.ndarray:
    """Every trading day of a source (``None``: the embedded data), datetime64[ns], sorted: a Qlib directory's
    ``calendars/day.txt``, a price table's dates (only its date column is read)."""
    return source_calendar(resolve_source(source, None))


def source_calendar(resolved: Source) -> np.ndarray:
    """``trading_calendar`` of a resolved source."""
    if resolved.kind == "qlib":
        return read_calendar(resolved.path)
    dates = read_frame(resolved.path, ("date",))
    if "date" not in dates.columns:
        raise DataError(f"{resolved.path}: missing column date")
    return np.unique(parse_dates(dates["date"], str(resolved.path), "date"))


def as_date(value: DateLike, what: str) -> str:
    """``YYYY-MM-DD`` of a date string, timestamp or datetime64; raises ``DataError`` naming ``what``."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"{what}: {value!r} is not a date") from None
    if pd.isna(stamp):
        raise DataError(f"{what}: {value!r} is not a date")
    return stamp.strftime("%Y-%m-%d")


def table_segments(calendar: np.ndarray) -> dict[str, tuple[str, str]]:
    """Default segments for a price table: skip 60 warm-up days, then 60 % / 20 % / 20 % of the remaining days."""
    usable = calendar[WARMUP_DAYS:] if calendar.size > WARMUP_DAYS + 3 else calendar
    cut1, cut2 = int(usable.size * 0.6), int(usable.size * 0.8)
    days = [str(d)[:10] for d in usable]
    return {"train": (days[0], days[cut1 - 1]), "valid": (days[cut1], days[cut2 - 1]), "test": (days[cut2], days[-1])}


def check_segment_order(segments: dict[str, tuple[str, str]]) -> None:
    """``DataError`` if a segment is reversed or two segments overlap (dates as ``YYYY-MM-DD``)."""
    for name, (start, end) in segments.items():
        if start > end:
            raise DataError(f"segment {name}: start {start} is after end {end}")
    names = list(segments)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (a0, a1), (b0, b1) = segments[a], segments[b]
            if a0 <= b1 and b0 <= a1:
                raise DataError(f"segments {a} {a0}..{a1} and {b} {b0}..{b1} overlap")


def segment_positions(segments: dict[str, tuple[str, str]], calendar: np.ndarray) -> dict[str, tuple[int, int]]:
    """Calendar positions (first, last) of each segment; ``DataError`` if one has no trading day in the data."""
    first, last = str(calendar[0])[:10], str(calendar[-1])[:10]
    positions = {}
    for name, (start, end) in segments.items():
        lo = int(np.searchsorted(calendar, np.datetime64(start, "ns"), side="left"))
        hi = int(np.searchsorted(calendar, np.datetime64(end, "ns"), side="right")) - 1
        if lo > hi:
            raise DataError(f"segment {name} {start}..{end} is outside the data, which has trading days "
                            f"{first}..{last} only")
        positions[name] = (lo, hi)
    return positions


def cache_key(source: Source, market: str, segments: dict[str, tuple[str, str]], benchmark: str | None) -> str:
    """Hash of the source files' (path, size, mtime), the settings and the storage format version."""
    identity = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in source.files(market)]
    settings = {"kind": source.kind, "market": market, "segments": segments, "benchmark": benchmark,
                "format": FORMAT_VERSION, "files": identity}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def read_panel(source: Source, market: str, benchmark: str | None) -> Panel:
    if source.kind == "qlib":
        return read_qlib_dir(source.path, market, benchmark)
    return read_price_table(source.path, market, benchmark)


def day_offsets_of(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted days, int64 offsets ``[len + 1]``) of a sorted day-position array."""
    unique, counts = np.unique(days, return_counts=True)
    return unique, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def build_segment(name: str, builder: FeatureBuilder, panel: Panel, rows: tuple[np.ndarray, np.ndarray],
                  stock_map: np.ndarray, instruments: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None,
                  progress: Progress) -> tuple[SegmentArrays, tuple[np.ndarray, np.ndarray], dict[str, object]]:
    """Features, labels and index of one segment, processed; fits the robust z-score when ``stats`` is None.

    Train/valid drop rows without a label (after fitting, which sees every row) and rank-normalise the label
    per day; test keeps every row with the raw label. The feature array is allocated once and compacted in
    place. Also returns counts for the summary (missing feature share, rows dropped without a label).
    """
    days, stocks = rows
    features = np.empty((days.size, len(FEATURE_NAMES)), dtype=np.float32)
    builder.features_into(features, days, stocks)
    raw = builder.label(days, stocks)
    progress(f"{name}: {days.size:,} rows x 360 features built")
    if stats is None:
        stats = fit_robust_zscore(features)
        progress(f"{name}: robust z-score fitted on {days.size:,} rows")
    missing = apply_robust_zscore(features, *stats)
    per_field = missing.reshape(len(FIELDS), -1).sum(axis=1) / max(days.size * WINDOW, 1)
    counts: dict[str, object] = {"missing_feature_share": float(missing.sum()) / max(features.size, 1),
                                 "missing_by_field": {field: float(share) for field, share in zip(FIELDS, per_field)},
                                 "rows_dropped_no_label": 0}
    if name != "test":
        keep = np.flatnonzero(~np.isnan(raw))
        for begin in range(0, keep.size, 65536):   # in-place compaction: sources never precede targets
            chunk = keep[begin:begin + 65536]
            features[begin:begin + chunk.size] = features[chunk]
        features = features[:keep.size]
        days, stocks, raw = days[keep], stocks[keep], raw[keep]
        counts["rows_dropped_no_label"] = int(np.size(rows[0]) - keep.size)
        progress(f"{name}: {keep.size:,} rows kept with a label ({np.size(rows[0]) - keep.size:,} without dropped)")
    unique_days, offsets = day_offsets_of(days)
    labels = rank_normalise(raw, offsets) if name != "test" else raw
    segment = SegmentArrays(name=name, features=features, labels=labels, raw_labels=raw, day_offsets=offsets,
                            dates=panel.calendar[unique_days], instrument_index=stock_map[stocks].astype(np.int32),
                            instruments=instruments)
    return segment, stats, counts


def market_data(panel: Panel, first: int, last: int, columns: np.ndarray, instruments: np.ndarray) -> MarketData:
    """Dense [days, stocks] close/factor/change over calendar positions first..last for the chosen stocks."""
    def window(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values[columns, first:last + 1].T)
    close = panel.fields["close"]
    factor = panel.fields.get("factor")
    change = panel.fields.get("change")
    if change is None:
        change = previous_traded_change(close[columns])
        columns_for_change = np.arange(columns.size)
    else:
        columns_for_change = columns
    bench = panel.benchmark_close
    return MarketData(
        dates=panel.calendar[first:last + 1], instruments=instruments, close=window(close),
        factor=window(factor) if factor is not None else np.where(np.isnan(window(close)), np.nan, 1).astype(np.float32),
        change=np.ascontiguousarray(change[columns_for_change, first:last + 1].T),
        benchmark_close=None if bench is None else np.ascontiguousarray(bench[first:last + 1]))


def build(source: Source, market: str, segments: dict[str, tuple[str, str]], benchmark: str | None,
          directory: Path, key: str, progress: Progress, panel: Panel | None = None, request: str = "") -> None:
    """Prepare everything into ``directory`` (which must not exist yet or be empty); ``request``: the key of what
    was asked for (segments left to the source's defaults unresolved), recorded so that the same request reuses
    the result without reading the source again."""
    if panel is None:
        panel = read_panel(source, market, benchmark)
    progress(f"read {source.label}: {len(panel.instruments)} stocks with data, {panel.calendar.size} trading days")
    for note in panel.notes:
        progress(note)
    positions = segment_positions(segments, panel.calendar)
    rows = {}
    for name, (lo, hi) in positions.items():
        day, stock = np.nonzero(panel.member_mask(lo, hi))
        if day.size == 0:
            raise DataError(f"segment {name} {segments[name][0]}..{segments[name][1]}: no member has data there "
                            f"(empty universe)")
        rows[name] = (day.astype(np.int64) + lo, stock.astype(np.int64))
    used = np.unique(np.concatenate([stock for _, stock in rows.values()]))
    instruments = panel.instruments[used]
    stock_map = np.full(len(panel.instruments), -1, dtype=np.int64)
    stock_map[used] = np.arange(used.size)
    builder = FeatureBuilder(panel)
    stats = None
    counts = {}
    for name in positions:   # train first: it fits the statistics the others use
        segment, stats, counts[name] = build_segment(name, builder, panel, rows[name], stock_map, instruments,
                                                     stats, progress)
        write_segment(directory, segment)   # written now, loaded memory-mapped at the end
        del segment
    first = min(lo for lo, _ in positions.values())
    last = max(hi for _, hi in positions.values())
    market_panel = market_data(panel, first, last, used, instruments)
    concepts, concept_names = None, []
    if source.concepts is not None:
        concepts, concept_names = concept_matrix(read_concept_table(source.concepts), instruments)
        note = (f"concepts: {len(concept_names)} concepts; {int((concepts.sum(1) == 0).sum())} of "
                f"{len(instruments)} stocks have none (zero rows)")
        panel.notes.append(note)
        progress(note)
    ds = PreparedDataset(
        instruments=instruments, segments=segments, arrays={},
        feature_median=stats[0], feature_scale=stats[1], source=source.label, market_name=market,
        benchmark=benchmark, market=market_panel, concepts=concepts, concept_names=concept_names,
        info={"notes": panel.notes, "segments": counts, "request": request})
    write_meta(directory, ds, key, segment_names=list(positions))


def prepare(source: str | os.PathLike | None = None, market: str = DEFAULT_MARKET,
            train: tuple[DateLike, DateLike] | None = None, valid: tuple[DateLike, DateLike] | None = None,
            test: tuple[DateLike, DateLike] | None = None, benchmark: str | None = DEFAULT_BENCHMARK,
            concepts: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
            progress: bool = True, out: str | os.PathLike | None = None,
            segment_names: tuple[str, ...] = SEGMENT_NAMES) -> PreparedDataset:
    """Alpha360 train/valid/test arrays of ``source``, processed as Qlib's Alpha360 configs do; cached.

    ``source``: ``None`` (the embedded CSI300 2017–2019 data), a Qlib data directory, or a CSV/Parquet price
    table. ``market``: the instruments file name for a Qlib directory; for a table, a membership file path,
    a name with ``<market>.csv|.parquet|.txt`` beside the table, or ``"all"``. Segments are ``(start, end)``
    inclusive, dates as strings or timestamps; any left out take the source's defaults (embedded:
    ``spec.EMBEDDED_SEGMENTS``; Qlib directory: 2010–2016 / 2017–2018 / 2019–2020; table: after 60 warm-up days,
    60 % / 20 % / 20 % of the days).
    ``benchmark``: the index symbol for the backtest, read when the source has it (else
    ``market.benchmark_close`` is ``None``). ``concepts``: a (symbol, concept) table for HIST; the embedded
    data attaches its own. The result is saved under ``cache_dir`` (default ``$ALPHATUNE_CACHE`` or
    ``~/.cache/alphatune``) in a directory named by the cache key, or exactly at ``out`` when given, and reused
    when the same source and settings are prepared again. ``segment_names``: the segments to build (a
    walk-forward fold needs no test segment: ``("train", "valid")``; train comes first, it fits the processors).
    Raises ``DataError`` for bad input.
    """
    report = Progress(progress)
    resolved = resolve_source(source, concepts)
    given = {name: span for name, span in (("train", train), ("valid", valid), ("test", test)) if span is not None}
    defaults = (EMBEDDED_SEGMENTS if resolved.kind == "embedded" else QLIB_SEGMENTS if resolved.kind == "qlib"
                else None)
    request = cache_key(resolved, market, {name: given.get(name) for name in segment_names}, benchmark)
    if out is not None and (Path(out).expanduser() / META).is_file():  # the same request as the last time: reuse
        meta = json.loads((Path(out).expanduser() / META).read_text())
        if (meta.get("info") or {}).get("request") == request and meta.get("format_version") == FORMAT_VERSION:
            report(f"reusing the prepared dataset at {Path(out).expanduser().resolve()}")
            return load_prepared(Path(out).expanduser().resolve())
    panel = None
    if defaults is None and not set(segment_names) <= set(given):
        panel = read_panel(resolved, market, benchmark)
        defaults = table_segments(panel.calendar)
    segments = {}
    for name in segment_names:
        span = given[name] if name in given else defaults[name]
        if isinstance(span, str) or len(span) != 2:
            raise DataError(f"segment {name}: expected (start, end), got {span!r}")
        segments[name] = (as_date(span[0], f"segment {name} start"), as_date(span[1], f"segment {name} end"))
    check_segment_order(segments)
    key = cache_key(resolved, market, segments, benchmark)
    target = Path(out).expanduser().resolve() if out is not None else (
        Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / key
    replace = False
    if (target / META).is_file():
        meta = json.loads((target / META).read_text())
        if meta.get("key") == key and meta.get("format_version") == FORMAT_VERSION:
            report(f"reusing the prepared dataset at {target}")
            return load_prepared(target)
        replace = True
    elif target.exists() and any(target.iterdir()):
        raise DataError(f"{target}: exists and is not a prepared dataset; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(resolved, market, segments, benchmark, staging, key, report, panel, request)
        if replace:
            report(f"{target} held a dataset prepared with other settings or format; replacing it")
            shutil.rmtree(target)
        publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report(f"saved to {target}")
    return load_prepared(target)
