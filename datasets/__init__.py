"""Alpha360 datasets built exactly as Qlib builds them, from a Qlib directory, a price table or embedded data.

    import datasets
    ds = datasets.prepare()                      # embedded CSI300 2017-2019, cached after the first call
    train = ds.segment("train")                  # SegmentArrays: features [rows, 360], labels, day_offsets, ...
    frame = ds.frame("test")                     # pandas (datetime, instrument) × (360 features + LABEL0)
    ds = datasets.load(path)                     # a saved dataset, memory-mapped
"""

from datasets.build import default_cache_dir, prepare
from datasets.concepts import concept_matrix, read_concept_table
from datasets.errors import DataError
from datasets.prepared import FEATURE_NAMES, LABEL_NAME, MarketData, PreparedDataset, SegmentArrays
from datasets.storage import load, save

__all__ = ["DataError", "FEATURE_NAMES", "LABEL_NAME", "MarketData", "PreparedDataset", "SegmentArrays",
           "concept_matrix", "default_cache_dir", "load", "prepare", "read_concept_table", "save"]
