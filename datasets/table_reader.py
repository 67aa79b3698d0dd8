"""Read a plain price table (CSV, optionally compressed, or Parquet) into a ``Panel``.

One row per (date, symbol) with columns ``date, symbol, open, high, low, close, volume`` and optionally
``vwap``, ``factor`` and ``change``. Prices are **raw**; with a ``factor`` column the adjusted values follow
Qlib's convention: adjusted price = price × factor, adjusted volume = volume / factor (without ``factor``,
factor = 1). ``change`` (a fraction, 0.01 = +1 %) is used as given; without it, ``change`` = adjusted close /
previous traded adjusted close − 1. The calendar is the sorted union of the table's dates; a stock's stored
series runs from its first to its last row, and dates in between without a row are suspensions (NaN bars).
Membership comes from a table ``symbol, start, end`` (empty start/end: open-ended), a Qlib instruments
``.txt`` file, or ``"all"`` (every symbol over its whole series).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from alphatune.datasets.errors import DataError
from alphatune.datasets.panel import Panel, spans_to_positions
from alphatune.datasets.qlib_reader import read_spans

REQUIRED = ("date", "symbol", "open", "high", "low", "close", "volume")
OPTIONAL = ("vwap", "factor", "change")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".csv.zst", ".csv.bz2", ".csv.xz", ".parquet", ".pq")


def is_table(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TABLE_SUFFIXES)


def read_frame(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (only ``columns`` when given and present)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.name.lower().endswith((".parquet", ".pq")):
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:  # pyarrow.ArrowInvalid is a ValueError
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"{path}: not a readable Parquet table ({first})") from None
        wanted = [c for c in table.column_names if columns is None or c in columns]
        return table.select(wanted).to_pandas()
    try:
        return pd.read_csv(path, usecols=(lambda c: c in columns) if columns else None,
                           dtype={"symbol": str, "start": str, "end": str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: not a readable CSV table ({first})") from None


def _place(where: str, row: int) -> str:
    """Where data row ``row`` (0-based) is, as its file's reader would look for it: a CSV's line (the header is
    line 1), a Parquet table's row (0-based)."""
    return f"row {row}" if where.lower().endswith((".parquet", ".pq")) else f"line {row + 2}"


def parse_dates(values: pd.Series, where: str, column: str) -> np.ndarray:
    """datetime64[ns] of a date column; raises ``DataError`` naming the first unparsable value."""
    if values.dtype.kind == "M":
        parsed = pd.DatetimeIndex(values)
    else:
        try:                                   # fast path for ISO dates, the usual case
            parsed = pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601"))
        except (ValueError, TypeError):
            parsed = pd.DatetimeIndex(pd.to_datetime(values, errors="coerce", format="mixed"))
    if parsed.tz is not None:
        parsed = parsed.tz_localize(None)
    bad = np.flatnonzero(parsed.isna() & values.notna().to_numpy())
    if bad.size:
        raise DataError(f"{where}: column {column!r} {_place(where, int(bad[0]))} has unparsable date "
                        f"{values.iloc[bad[0]]!r}")
    return parsed.normalize().to_numpy(dtype="datetime64[ns]")


def read_membership(path: Path, symbols_with_data: np.ndarray, first_dates: np.ndarray, last_dates: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbols, starts, ends) of a membership file; missing start/end mean the stock's own first/last date."""
    if path.suffix == ".txt":
        return read_spans(path)
    frame = read_frame(path)
    missing = [c for c in ("symbol", "start", "end") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (need symbol, start, end)")
    if frame["symbol"].isna().any():
        raise DataError(f"{path}: {_place(str(path), int(np.flatnonzero(frame['symbol'].isna())[0]))} has no symbol")
    symbols = frame["symbol"].astype(str).str.strip().str.upper().to_numpy(dtype=str)
    if symbols.size == 0:
        raise DataError(f"{path}: no members (empty universe)")
    position = np.searchsorted(symbols_with_data, symbols).clip(0, max(len(symbols_with_data) - 1, 0))
    known = symbols_with_data[position] == symbols if len(symbols_with_data) else np.zeros(len(symbols), bool)
    starts = parse_dates(frame["start"], str(path), "start")
    ends = parse_dates(frame["end"], str(path), "end")
    open_start, open_end = np.isnat(starts), np.isnat(ends)
    starts[open_start & known] = first_dates[position[open_start & known]]
    ends[open_end & known] = last_dates[position[open_end & known]]
    starts[open_start & ~known] = np.datetime64("1900-01-01", "ns")
    ends[open_end & ~known] = np.datetime64("1900-01-01", "ns")
    reversed_span = np.flatnonzero(starts > ends)
    if reversed_span.size:
        i = reversed_span[0]
        raise DataError(f"{path}: span of {symbols[i]} starts {str(starts[i])[:10]} after it ends {str(ends[i])[:10]}")
    return symbols, starts, ends


def resolve_membership_file(table: Path, market: str) -> Path | None:
    """The membership file for ``market``: a path, or ``<market>.csv|.parquet|.txt`` beside the table; None = all."""
    if market == "all":
        return None
    given = Path(market)
    if given.is_file():
        return given
    for suffix in (".csv", ".parquet", ".txt"):
        candidate = table.parent / f"{market}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"unknown market {market!r}: no membership file {market} and no {market}.csv/.parquet/.txt "
                    f"beside {table}; use --market all (market='all' from Python) for every symbol over its whole series")


def read_price_table(path: Path, market: str, benchmark: str | None) -> Panel:
    """The members' adjusted panels from a price table; see the module docstring for conventions.

    Raises ``DataError`` for a missing column, an unparsable date, a duplicate (date, symbol), a price or factor
    that is not positive and finite, a negative or non-finite volume, or an empty universe.
    """
    frame = read_frame(path, REQUIRED + OPTIONAL)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a price table needs {', '.join(REQUIRED)}")
    if frame.empty:
        raise DataError(f"{path}: no rows")
    if frame["symbol"].isna().any():
        raise DataError(f"{path}: {_place(str(path), int(np.flatnonzero(frame['symbol'].isna())[0]))} has no symbol")
    dates = parse_dates(frame["date"], str(path), "date")
    if np.isnat(dates).any():
        raise DataError(f"{path}: {_place(str(path), int(np.flatnonzero(np.isnat(dates))[0]))} has no date")
    symbols = frame["symbol"].astype(str).str.strip().str.upper().to_numpy(dtype=str)
    calendar, day = np.unique(dates, return_inverse=True)
    universe, stock = np.unique(symbols, return_inverse=True)
    key = stock.astype(np.int64) * calendar.size + day
    order = np.argsort(key, kind="stable")
    duplicate = np.flatnonzero(np.diff(key[order]) == 0)
    if duplicate.size:
        i = order[duplicate[0]]
        raise DataError(f"{path}: duplicate rows for symbol {symbols[i]} on {str(dates[i])[:10]}")

    values = {}
    for name in REQUIRED[2:] + OPTIONAL:
        if name not in frame.columns:
            continue
        column = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        unparsable = np.flatnonzero(np.isnan(column) & frame[name].notna().to_numpy())
        if unparsable.size:
            i = unparsable[0]
            raise DataError(f"{path}: column {name!r} for {symbols[i]} on {str(dates[i])[:10]} is "
                            f"{frame[name].iloc[i]!r}, not a number")
        if name != "change":
            bad = ~np.isfinite(column) | ((column < 0) if name == "volume" else (column <= 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                rule = "non-negative and finite" if name == "volume" else "positive and finite"
                raise DataError(f"{path}: column {name!r} for {symbols[i]} on {str(dates[i])[:10]} is "
                                f"{float(column[i])!r}; it must be {rule}")
        values[name] = column
    factor = values.get("factor", np.ones(len(frame)))
    adjusted = {name: values[name] * factor for name in ("open", "high", "low", "close", "vwap") if name in values}
    adjusted["volume"] = values["volume"] / factor
    if "factor" in values:
        adjusted["factor"] = factor
    if "change" in values:
        adjusted["change"] = values["change"]

    benchmark_close = None
    notes = []
    is_benchmark = np.zeros(len(universe), dtype=bool)
    if benchmark:
        hit = np.flatnonzero(universe == benchmark.upper())
        if hit.size:
            is_benchmark[hit[0]] = True
            rows = stock == hit[0]
            benchmark_close = np.full(calendar.size, np.nan, dtype=np.float32)
            benchmark_close[day[rows]] = adjusted["close"][rows]
        else:
            notes.append(f"benchmark {benchmark}: not in {path.name}, so the backtest has no benchmark")
    first_day = np.full(len(universe), calendar.size, dtype=np.int64)
    last_day = np.full(len(universe), -1, dtype=np.int64)
    np.minimum.at(first_day, stock, day)
    np.maximum.at(last_day, stock, day)

    membership = resolve_membership_file(path, market)
    stock_symbols = universe[~is_benchmark]
    if membership is None:
        span_symbols, span_starts, span_ends = stock_symbols, calendar[first_day[~is_benchmark]], calendar[last_day[~is_benchmark]]
    else:
        span_symbols, span_starts, span_ends = read_membership(
            membership, stock_symbols, calendar[first_day[~is_benchmark]], calendar[last_day[~is_benchmark]])
    members = np.unique(span_symbols)
    has_data = np.isin(members, stock_symbols)
    if not has_data.all():
        notes.append(f"{int((~has_data).sum())} of {len(members)} members have no price rows and get no rows: "
                     + " ".join(members[~has_data]))
    instruments = members[has_data]
    if instruments.size == 0:
        raise DataError(f"{membership or path}: none of the {len(members)} members has price rows in {path} "
                        "(empty universe)")
    in_universe = np.searchsorted(universe, instruments)
    remap = np.full(len(universe), -1, dtype=np.int64)
    remap[in_universe] = np.arange(instruments.size)
    row_stock = remap[stock]
    rows = row_stock >= 0
    fields = {}
    for name, column in adjusted.items():
        panel = np.full((instruments.size, calendar.size), np.nan, dtype=np.float32)
        panel[row_stock[rows], day[rows]] = column[rows]
        fields[name] = panel
    kept = np.isin(span_symbols, instruments)
    start_pos, end_pos = spans_to_positions(calendar, span_starts[kept], span_ends[kept])
    return Panel(calendar=calendar, instruments=instruments, fields=fields,
                 first=first_day[in_universe], last=last_day[in_universe],
                 span_stock=np.searchsorted(instruments, span_symbols[kept]), span_start=start_pos,
                 span_end=end_pos, benchmark_close=benchmark_close, notes=notes)
