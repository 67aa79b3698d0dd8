"""Alpha360 datasets built exactly as Qlib builds them, from a Qlib directory, a price table or embedded data.

    from alphatune import datasets
    ds = datasets.prepare()                      # embedded CSI300 2017-2019, cached after the first call
    train = ds.segment("train")                  # SegmentArrays: features [rows, 360], labels, day_offsets, ...
    frame = ds.frame("test")                     # pandas (datetime, instrument) × (360 features + LABEL0)
    ds = datasets.load(path)                     # a saved dataset, memory-mapped

``DataError`` and ``DataSpec`` (what a dataset is built from, and the one way to open it) import nothing heavy;
the rest (numpy, pandas, pyarrow) is imported on first use.
"""

from __future__ import annotations

if __name__ != "alphatune.datasets":  # a checkout's folder imported as a bare `datasets`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

import importlib
from typing import Any

from alphatune.datasets.errors import DataError
from alphatune.datasets.sources import EMBEDDED, EMBEDDED_SEGMENTS, is_prepared, is_qlib_dir
from alphatune.datasets.spec import DataSpec

_LAZY = {
    "default_cache_dir": ".build", "prepare": ".build",
    "concept_matrix": ".concepts", "read_concept_table": ".concepts",
    "FEATURE_NAMES": ".prepared", "LABEL_NAME": ".prepared", "MarketData": ".prepared",
    "PreparedDataset": ".prepared", "SegmentArrays": ".prepared",
    "load": ".storage", "save": ".storage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")


__all__ = ["DataError", "DataSpec", "EMBEDDED", "EMBEDDED_SEGMENTS", "is_prepared", "is_qlib_dir", *_LAZY]
