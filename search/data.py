"""The dataset of a search: a prepared directory, or a source prepared (and cached) once in the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alphatune import datasets
from alphatune import models
from alphatune.datasets.storage import META
from alphatune.search.options import OptionError


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a saved prepared dataset directory (as opposed to a source to prepare)."""
    return (Path(path).expanduser() / META).is_file()


def open_dataset(data: str | None, segments: dict[str, tuple[str, str] | None], market: str,
                 benchmark: str | None, concepts: str | None = None) -> datasets.PreparedDataset:
    """Load ``data`` when it is a prepared directory (``segments`` and ``concepts`` must then be left unset:
    ``OptionError``), else prepare it with HIST's ``concepts`` table when given (bad sources raise
    ``datasets.DataError``).

    ``data=None`` prepares the embedded data (with its own concepts). Preparation is cached by
    ``datasets.prepare``; the arrays come back memory-mapped and read-only.
    """
    if data is not None and is_prepared(data):
        given = [f"--{name}" for name, span in segments.items() if span is not None]
        if concepts is not None:
            given.append("--concepts")
        if given:
            raise OptionError(f"--data {data} is already prepared with fixed segments and concepts; drop {given[0]} "
                             f"(or pass the source instead of the prepared directory)")
        return datasets.load(Path(data).expanduser())
    spans = {name: span for name, span in segments.items() if span is not None}
    return datasets.prepare(source=data, market=market, benchmark=benchmark, concepts=concepts, **spans)


def check_concepts(ds: datasets.PreparedDataset, model_names: list[str]) -> None:
    """Refuse (``OptionError``) a model that needs HIST's stock→concept matrix when ``ds`` has none, or one that
    links no stock to any concept (e.g. symbols written another way than the data's)."""
    needing = [name for name in model_names if models.REGISTRY[name].uses_concepts]
    if not needing:
        return
    if ds.concepts is None:
        raise OptionError(f"--model {needing[0]} needs a stock→concept table and {ds.source} has none: pass "
                          f"--concepts FILE (CSV or Parquet with symbol and concept columns) with the source; a "
                          f"prepared directory keeps the concepts it was prepared with")
    if ds.concepts.shape[1] == 0 or not ds.concepts.any():
        raise OptionError(f"--model {needing[0]}: the concept table links none of the {len(ds.instruments)} "
                          f"instruments of {ds.source} to a concept (symbols like {ds.instruments[0]} expected)")


def describe(ds: datasets.PreparedDataset, concepts: str | None = None) -> dict[str, Any]:
    """What ``best.yaml`` records about the data: source, market, benchmark, segments, the concepts table it
    was prepared with (``None``: none given), prepared path."""
    return {"source": ds.source, "market": ds.market_name, "benchmark": ds.benchmark,
            "segments": {name: list(span) for name, span in ds.segments.items()},
            "concepts": str(Path(concepts).expanduser().resolve()) if concepts else None, "path": ds.path}
