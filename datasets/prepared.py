"""The in-memory form of a prepared Alpha360 dataset: plain numpy arrays, picklable, shareable zero-copy.

``PreparedDataset`` holds one ``SegmentArrays`` per segment (train, valid, test) and, optionally, a
``MarketData`` for the backtest. Every array is a plain numpy array (after ``datasets.load`` they are read-only
views of memory-mapped Arrow files), so pickling with protocol 5 (as ``ray.put`` does) hands the array buffers
out of band instead of copying them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alphatune.datasets.errors import DataError

FIELDS = ("CLOSE", "OPEN", "HIGH", "LOW", "VWAP", "VOLUME")
WINDOW = 60
FEATURE_NAMES: list[str] = [f"{name}{lag}" for name in FIELDS for lag in range(WINDOW - 1, -1, -1)]
LABEL_NAME = "LABEL0"
SEGMENT_NAMES = ("train", "valid", "test")


@dataclass(repr=False)
class SegmentArrays:
    """The rows of one segment, sorted by date then instrument, so that each day's rows are contiguous.

    ``features`` are processed (robust z-score fitted on train, clipped to ±3, NaN → 0). ``labels`` are what a
    model learns: for train/valid the per-day rank-normalised label (rows without a label were dropped, so no
    NaN); for test the raw label (NaN where the future is unknown). ``raw_labels`` is always the raw label.
    """

    name: str
    features: np.ndarray          # float32 [rows, 360], C-contiguous
    labels: np.ndarray            # float32 [rows]
    raw_labels: np.ndarray        # float32 [rows]
    day_offsets: np.ndarray       # int64 [days + 1]; rows of day i are day_offsets[i]:day_offsets[i + 1]
    dates: np.ndarray             # datetime64[ns] [days]
    instrument_index: np.ndarray  # int32 [rows] → position in ``instruments``
    instruments: np.ndarray       # str [S], the dataset's instruments (shared with ``PreparedDataset``)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __repr__(self) -> str:
        span = f", {str(self.dates[0])[:10]}..{str(self.dates[-1])[:10]}" if self.n_days else ""
        return f"SegmentArrays({self.name!r}, {len(self):,} rows, {self.n_days} days{span})"

    @property
    def n_days(self) -> int:
        """Number of days with at least one row."""
        return int(self.dates.shape[0])

    def day_slice(self, day: int) -> slice:
        """The rows of the ``day``-th day of this segment (0-based; negative counts from the end)."""
        if not -self.n_days <= day < self.n_days:
            raise IndexError(f"segment {self.name!r} has {self.n_days} days; day {day} is out of range")
        day %= self.n_days
        return slice(int(self.day_offsets[day]), int(self.day_offsets[day + 1]))

    def row_dates(self) -> np.ndarray:
        """datetime64[ns] [rows]: the date of every row."""
        return np.repeat(self.dates, np.diff(self.day_offsets))

    def index(self) -> pd.MultiIndex:
        """(datetime, instrument) of every row, in row order."""
        return pd.MultiIndex.from_arrays(
            [pd.DatetimeIndex(self.row_dates(), name="datetime"),
             pd.Index(self.instruments[self.instrument_index], name="instrument")])


@dataclass
class MarketData:
    """Dense [days, instruments] price panels over the dataset's whole calendar range, for the backtest.

    ``close`` is the adjusted close (raw price × factor), ``factor`` the adjustment factor, ``change`` Qlib's
    ``$change`` (close / previous traded close − 1); all float32 with NaN where the stock has no bar that day.
    ``benchmark_close`` is the benchmark index's close, or ``None`` when the source has no benchmark.
    """

    dates: np.ndarray                     # datetime64[ns] [D]
    instruments: np.ndarray               # str [S], = PreparedDataset.instruments
    close: np.ndarray                     # float32 [D, S]
    factor: np.ndarray                    # float32 [D, S]
    change: np.ndarray                    # float32 [D, S]
    benchmark_close: np.ndarray | None    # float32 [D] or None


@dataclass(repr=False)
class PreparedDataset:
    """Alpha360 features and labels of every segment, plus what the models and the backtest need besides.

    Build one with ``datasets.prepare`` or open a saved one with ``datasets.load``.
    ``feature_median``/``feature_scale`` are the robust z-score statistics fitted on the training window
    (NaN for a column with no value there, e.g. VWAP without vwap data; such a column ends as all 0).
    """

    instruments: np.ndarray                          # str [S], sorted
    segments: dict[str, tuple[str, str]]             # name → (start, end), inclusive, YYYY-MM-DD
    arrays: dict[str, SegmentArrays]
    feature_median: np.ndarray                       # float32 [360]
    feature_scale: np.ndarray                        # float32 [360]
    source: str
    market_name: str
    benchmark: str | None
    market: MarketData | None = None
    concepts: np.ndarray | None = None               # float32 [S, K] 0/1, zero row = no concept
    concept_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    path: str | None = None                          # where the saved files are, when saved
    info: dict[str, object] = field(default_factory=dict)  # build notes and per-segment counts (see summary)

    def __repr__(self) -> str:
        segments = ", ".join(f"{name}={len(seg):,} rows" for name, seg in self.arrays.items())
        return (f"PreparedDataset(source={self.source!r}, market={self.market_name!r}, "
                f"{len(self.instruments)} instruments, {segments})")

    def segment(self, name: str) -> SegmentArrays:
        """The arrays of segment ``name`` (``train``, ``valid`` or ``test``)."""
        try:
            return self.arrays[name]
        except KeyError:
            raise DataError(f"unknown segment {name!r}; this dataset has {sorted(self.arrays)}") from None

    def frame(self, name: str) -> pd.DataFrame:
        """Segment ``name`` as Qlib's models see it: (datetime, instrument) index, 360 features and ``LABEL0``.

        Train and valid: rows without a label dropped, label rank-normalised per day. Test: every member row,
        raw label (NaN where unknown). The frame holds copies; the arrays themselves are not modified.
        """
        seg = self.segment(name)
        frame = pd.DataFrame(np.array(seg.features), index=seg.index(), columns=self.feature_names)
        frame[LABEL_NAME] = np.array(seg.labels)
        return frame

    def summary(self) -> dict[str, object]:
        """Counts for a quick look: stocks; per segment its range, days, rows, stocks, the share of raw feature
        values that were missing (NaN before Fillna, counted before labelless rows were dropped), rows dropped
        for lack of a label and the share of NaN raw labels kept; plus the build notes."""
        out: dict[str, object] = {"source": self.source, "market": self.market_name, "stocks": len(self.instruments)}
        built = self.info.get("segments", {})
        for name, seg in self.arrays.items():
            out[name] = {"range": list(self.segments[name]), "days": seg.n_days, "rows": len(seg),
                         "stocks": int(np.unique(seg.instrument_index).size),
                         **built.get(name, {}),
                         "nan_raw_label_share": float(np.isnan(seg.raw_labels).mean()) if len(seg) else 0.0}
        out["notes"] = list(self.info.get("notes", []))
        return out
