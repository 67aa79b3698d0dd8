"""The dataset of a search: a prepared directory, or a source prepared (and cached) once in the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
from datasets.storage import META
from search.options import OptionError


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a saved prepared dataset directory (as opposed to a source to prepare)."""
    return (Path(path).expanduser() / META).is_file()


def open_dataset(data: str | None, segments: dict[str, tuple[str, str] | None], market: str,
                 benchmark: str | None) -> datasets.PreparedDataset:
    """Load ``data`` when it is a prepared directory (``segments`` must then be left unset: ``OptionError``),
    else prepare it (bad sources raise ``datasets.DataError``).

    ``data=None`` prepares the embedded data. Preparation is cached by ``datasets.prepare``; the arrays come back
    memory-mapped and read-only.
    """
    if data is not None and is_prepared(data):
        given = [name for name, span in segments.items() if span is not None]
        if given:
            raise OptionError(f"--data {data} is already prepared with fixed segments; drop --{given[0]} "
                             f"(or pass the source instead of the prepared directory)")
        return datasets.load(Path(data).expanduser())
    spans = {name: span for name, span in segments.items() if span is not None}
    return datasets.prepare(source=data, market=market, benchmark=benchmark, **spans)


def describe(ds: datasets.PreparedDataset) -> dict[str, Any]:
    """What ``best.yaml`` records about the data: source, market, benchmark, segments, prepared path."""
    return {"source": ds.source, "market": ds.market_name, "benchmark": ds.benchmark,
            "segments": {name: list(span) for name, span in ds.segments.items()},
            "path": ds.path}
