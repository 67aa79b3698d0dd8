"""The data spec: what a dataset is built from, recorded once (a run's manifest, best.yaml) and opened one way.

``DataSpec(source, market, benchmark, train, valid, test, concepts)`` says what to read and how to cut it;
``spec.open()`` gives the ``PreparedDataset`` (prepared and cached by ``datasets.prepare``, or loaded when
``source`` is a prepared directory). ``DataSpec.of(ds)`` is the spec of an opened dataset with every default
resolved (its real segments, the directory its arrays were saved in) — what a search records, so that resume,
export, evaluation and the benchmarks open the very same data again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alphatune.datasets.errors import DataError
from alphatune.datasets.sources import (DEFAULT_BENCHMARK, DEFAULT_MARKET, EMBEDDED, SEGMENTS,
                                        is_prepared)

def _dates(value: Any, where: str) -> tuple[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DataError(f"{where}: expected [start, end] dates; got {value!r}")
    return str(value[0]), str(value[1])


@dataclass(frozen=True)
class DataSpec:
    """What a dataset is built from.

    ``source``: ``"embedded"`` (the CSI300 2017-2019 data shipped with the package), a Qlib data directory, a
    CSV/Parquet price table, or a prepared directory (then segments and concepts are its own and must be left
    unset). ``train``/``valid``/``test``: inclusive ``(start, end)`` dates, ``None`` for the source's default.
    ``concepts``: HIST's (symbol, concept) table (the embedded data has its own). ``prepared``: where the arrays
    of this spec were saved; ``open`` loads them from there while they exist and match, instead of preparing.
    """

    source: str = EMBEDDED
    market: str = DEFAULT_MARKET
    benchmark: str | None = DEFAULT_BENCHMARK
    train: tuple[str, str] | None = None
    valid: tuple[str, str] | None = None
    test: tuple[str, str] | None = None
    concepts: str | None = None
    prepared: str | None = None
    with_test: bool = True  # False: a walk-forward fold's data, train and valid only (``window``)

    @property
    def segments(self) -> dict[str, tuple[str, str] | None]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def calendar(self) -> Any:
        """The source's trading days (datetime64[ns], sorted): what walk-forward folds and rolling windows are cut
        from (``datasets.periods``), which may reach before the train segment's start."""
        from alphatune.datasets.build import trading_calendar
        if self.source != EMBEDDED and is_prepared(self.source):
            raise DataError(f"{self.source} is already prepared with fixed segments: walk-forward folds and rolling "
                            f"windows prepare each window from the source (a Qlib directory, a price table or the "
                            f"embedded data); give that instead")
        return trading_calendar(None if self.source == EMBEDDED else self.source)

    def window(self, window: Any) -> "DataSpec":
        """The same source, market and concepts cut to a ``datasets.periods.Window``: its train and valid spans and
        its test span, or no test segment at all when it has none (a walk-forward fold). Prepared (and cached) on
        its own: Qlib's processors are fitted on the window's own train span. ``DataError`` when the source is a
        prepared directory, whose segments are fixed (``calendar`` says so first)."""
        return replace(self, train=tuple(window.train), valid=tuple(window.valid),
                       test=tuple(window.test) if window.test else None, prepared=None,
                       with_test=window.test is not None)

    def open(self, progress: bool = True) -> Any:
        """The ``PreparedDataset``: the saved arrays when ``prepared`` (or ``source``) is a prepared directory,
        else ``source`` prepared (cached by ``datasets.prepare``). ``DataError`` for bad input."""
        from alphatune.datasets.build import prepare
        from alphatune.datasets.storage import load
        if self.prepared and is_prepared(self.prepared):
            ds = load(Path(self.prepared).expanduser())
            if self.train is None or {name: tuple(span) for name, span in ds.segments.items()} == {
                    name: span for name, span in self.segments.items()}:
                return ds
        if self.source != EMBEDDED and is_prepared(self.source):
            given = [f"--{name}" for name, span in self.segments.items() if span is not None and self.prepared is None]
            if self.concepts is not None and self.prepared is None:
                given.append("--concepts")
            if given:
                raise DataError(f"{self.source} is already prepared with fixed segments and concepts; drop "
                                f"{given[0]} (or give the source instead of the prepared directory)")
            return load(Path(self.source).expanduser())
        spans = {name: span for name, span in self.segments.items() if span is not None}
        return prepare(source=None if self.source == EMBEDDED else self.source, market=self.market,
                       benchmark=self.benchmark, concepts=self.concepts, progress=progress,
                       segment_names=SEGMENTS if self.with_test else SEGMENTS[:2], **spans)

    @classmethod
    def of(cls, ds: Any, concepts: str | None = None) -> "DataSpec":
        """The spec of an opened dataset: its source, market, resolved segments, the benchmark when the data has its
        series (``None`` when it has none), the concepts table it was prepared with (``None``: its own or none),
        and the directory its arrays are saved in."""
        segments = {name: (str(span[0]), str(span[1])) for name, span in ds.segments.items()}
        has_benchmark = ds.market is not None and ds.market.benchmark_close is not None
        return cls(source=ds.source, market=ds.market_name, benchmark=ds.benchmark if has_benchmark else None,
                   concepts=str(Path(concepts).expanduser().resolve()) if concepts else None,
                   prepared=ds.path, **segments)

    def to_dict(self) -> dict[str, Any]:
        """What a manifest and best.yaml hold (``data:``)."""
        return {"source": self.source, "market": self.market, "benchmark": self.benchmark,
                "segments": {name: list(span) if span is not None else None for name, span in self.segments.items()},
                "concepts": self.concepts, "prepared": self.prepared}

    @classmethod
    def from_dict(cls, data: Any, where: str = "data") -> "DataSpec":
        """A spec back from ``to_dict``; also reads what earlier versions wrote (``path`` for ``prepared``).
        ``DataError`` naming ``where`` and the field when it is not one."""
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a mapping with source, market, benchmark, segments; got {data!r}")
        segments = data.get("segments") or {}
        if not isinstance(segments, dict):
            raise DataError(f"{where}.segments: expected train/valid/test dates; got {segments!r}")
        unknown = set(segments) - set(SEGMENTS)
        if unknown:
            raise DataError(f"{where}.segments: unknown segment {sorted(unknown)[0]!r}; expected train, valid, test")
        return cls(source=str(data.get("source") or EMBEDDED), market=str(data.get("market") or DEFAULT_MARKET),
                   benchmark=data.get("benchmark"), concepts=data.get("concepts"),
                   prepared=data.get("prepared", data.get("path")),
                   **{name: _dates(segments.get(name), f"{where}.segments.{name}") for name in SEGMENTS})

    def with_source(self, source: str | None, concepts: str | None = None) -> "DataSpec":
        """The same segments and market on another source (``None``: unchanged) and/or concepts table: nothing
        saved for this spec applies any more."""
        return replace(self, source=self.source if source is None else str(source),
                       concepts=self.concepts if concepts is None else concepts, prepared=None)
