"""Read a Qlib data directory (calendars/, instruments/, features/<symbol>/<field>.day.bin) into a ``Panel``.

Format: ``calendars/day.txt`` one ``YYYY-MM-DD`` per line; ``instruments/<market>.txt`` lines
``SYMBOL<TAB>START<TAB>END`` (a symbol may have several spans); each ``.bin`` is little-endian float32 whose
first word is the calendar position of the first value, followed by one value per calendar day.
Prices in Qlib data are already adjusted and volume is adjusted volume, so values are used as stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alphatune.datasets.errors import DataError
from alphatune.datasets.panel import Panel, check_values, spans_to_positions

MARKET_FIELDS = ("open", "high", "low", "close", "volume")
OPTIONAL_FIELDS = ("vwap", "factor", "change")
RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def read_calendar(root: Path) -> np.ndarray:
    """datetime64[ns] trading days of ``calendars/day.txt``; raises ``DataError`` if unparsable or unsorted."""
    path = root / "calendars" / "day.txt"
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: the calendar is empty")
    try:
        calendar = np.array(lines, dtype="datetime64[D]").astype("datetime64[ns]")
    except ValueError as exc:
        raise DataError(f"{path}: not a daily calendar of YYYY-MM-DD dates ({exc})") from None
    order_breaks = np.flatnonzero(np.diff(calendar) <= np.timedelta64(0))
    if order_breaks.size:
        raise DataError(f"{path}: dates not strictly ascending at line {order_breaks[0] + 2} ({lines[order_breaks[0] + 1]})")
    return calendar


def read_spans(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbols, starts, ends) of a Qlib instruments file; dates as datetime64[ns]."""
    symbols, starts, ends = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"{path}:{number}: expected SYMBOL<TAB>START<TAB>END, got {line!r}")
        symbols.append(parts[0].strip().upper())
        starts.append(parts[1].strip())
        ends.append(parts[2].strip())
    if not symbols:
        raise DataError(f"{path}: no instruments listed (empty universe)")
    try:
        start_dates = np.array(starts, dtype="datetime64[D]").astype("datetime64[ns]")
        end_dates = np.array(ends, dtype="datetime64[D]").astype("datetime64[ns]")
    except ValueError as exc:
        raise DataError(f"{path}: bad date ({exc})") from None
    reversed_span = np.flatnonzero(start_dates > end_dates)
    if reversed_span.size:
        i = reversed_span[0]
        raise DataError(f"{path}: span of {symbols[i]} starts {starts[i]} after it ends {ends[i]}")
    return np.array(symbols), start_dates, end_dates


def feature_dir(root: Path, symbol: str) -> Path:
    """``features/<symbol lower>``, with Qlib's ``_qlib_`` prefix for Windows-reserved names."""
    name = symbol.lower()
    return root / "features" / (f"_qlib_{name}" if name in RESERVED_NAMES else name)


def read_bin(path: Path, calendar_size: int) -> tuple[int, np.ndarray]:
    """(start position, float32 values) of one ``.bin`` file; raises ``DataError`` for a malformed file."""
    raw = np.fromfile(path, dtype="<f4")
    if raw.size < 1 or path.stat().st_size % 4:
        raise DataError(f"{path}: not a Qlib .bin file (size {path.stat().st_size} bytes)")
    start = float(raw[0])
    if not start.is_integer() or not 0 <= start or start + raw.size - 1 > calendar_size:
        raise DataError(f"{path}: start index {start} with {raw.size - 1} values does not fit the calendar "
                        f"of {calendar_size} days")
    return int(start), raw[1:].astype(np.float32, copy=False)


def available_markets(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "instruments").glob("*.txt"))


def read_qlib_dir(root: Path, market: str, benchmark: str | None) -> Panel:
    """Every member of ``instruments/<market>.txt`` that has feature files, on the full calendar.

    Members without a ``features/`` directory get no rows (as in Qlib) and are listed in ``Panel.notes``.
    A member directory lacking one of open/high/low/close/volume is an error; vwap, factor and change are
    optional (vwap absent → the VWAP block is NaN, as with Qlib's Yahoo data). The benchmark is read from
    ``features/<benchmark>/close.day.bin`` when present, else ``benchmark_close`` is ``None`` (noted).
    """
    calendar = read_calendar(root)
    instruments_file = root / "instruments" / f"{market}.txt"
    if not (root / "instruments").is_dir():
        raise DataError(f"{root}: a Qlib data directory needs an instruments/ folder (instruments/{market}.txt lists "
                        f"the market's members); this one has none")
    if not instruments_file.is_file():
        markets = available_markets(root)
        raise DataError(f"{instruments_file}: unknown market {market!r}; "
                        + (f"available: {', '.join(markets)}" if markets else "instruments/ holds no <market>.txt"))
    span_symbols, span_starts, span_ends = read_spans(instruments_file)
    members = np.unique(span_symbols)
    with_data = np.array([feature_dir(root, s).is_dir() for s in members], dtype=bool)
    notes = []
    if not with_data.all():
        missing = members[~with_data]
        notes.append(f"{len(missing)} of {len(members)} {market} members have no feature files and get no rows: "
                     + " ".join(missing))
    instruments = members[with_data]
    if instruments.size == 0:
        raise DataError(f"{instruments_file}: none of the {len(members)} members has data under {root / 'features'}")
    size = calendar.size
    present = {name: any((feature_dir(root, s) / f"{name}.day.bin").is_file() for s in instruments)
               for name in OPTIONAL_FIELDS}
    names = MARKET_FIELDS + tuple(name for name in OPTIONAL_FIELDS if present[name])
    fields = {name: np.full((instruments.size, size), np.nan, dtype=np.float32) for name in names}
    first = np.full(instruments.size, size, dtype=np.int64)
    last = np.full(instruments.size, -1, dtype=np.int64)
    for s, symbol in enumerate(instruments):
        folder = feature_dir(root, symbol)
        for name in names:
            path = folder / f"{name}.day.bin"
            if not path.is_file():
                raise DataError(f"{path}: missing ({name} is required)" if name in MARKET_FIELDS else
                                f"{path}: missing, but other stocks have {name}; every stock needs the same fields")
            start, values = read_bin(path, size)
            if values.size == 0:
                continue
            stop = start + values.size
            if name != "change":
                check_values(name, values, str(path), calendar[start:stop], positive=name != "volume")
            fields[name][s, start:stop] = values
            if name in MARKET_FIELDS or name == "vwap":
                first[s] = min(first[s], start)
                last[s] = max(last[s], stop - 1)
    span_stock = np.searchsorted(instruments, span_symbols)
    kept = with_data[np.searchsorted(members, span_symbols)]
    start_pos, end_pos = spans_to_positions(calendar, span_starts[kept], span_ends[kept])
    benchmark_close = None
    if benchmark:
        path = feature_dir(root, benchmark) / "close.day.bin"
        if path.is_file():
            start, values = read_bin(path, size)
            benchmark_close = np.full(size, np.nan, dtype=np.float32)
            benchmark_close[start:start + values.size] = values
        else:
            notes.append(f"benchmark {benchmark}: {path} not found, so the backtest has no benchmark")
    return Panel(calendar=calendar, instruments=instruments, fields=fields, first=first, last=last,
                 span_stock=span_stock[kept], span_start=start_pos, span_end=end_pos,
                 benchmark_close=benchmark_close, notes=notes)
