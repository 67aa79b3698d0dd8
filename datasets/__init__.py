"""Alpha360 datasets built exactly as Qlib builds them, from a Qlib directory, a price table or embedded data.

    import datasets
    ds = datasets.prepare()                      # embedded CSI300 2017-2019, cached after the first call
    train = ds.segment("train")                  # SegmentArrays: features [rows, 360], labels, day_offsets, ...
    frame = ds.frame("test")                     # pandas (datetime, instrument) × (360 features + LABEL0)
    ds = datasets.load(path)                     # a saved dataset, memory-mapped

``DataError`` imports nothing heavy; the rest (numpy, pandas, pyarrow) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from datasets.errors import DataError

_LAZY = {
    "default_cache_dir": "datasets.build", "prepare": "datasets.build",
    "concept_matrix": "datasets.concepts", "read_concept_table": "datasets.concepts",
    "FEATURE_NAMES": "datasets.prepared", "LABEL_NAME": "datasets.prepared", "MarketData": "datasets.prepared",
    "PreparedDataset": "datasets.prepared", "SegmentArrays": "datasets.prepared",
    "load": "datasets.storage", "save": "datasets.storage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")


__all__ = ["DataError", *_LAZY]
