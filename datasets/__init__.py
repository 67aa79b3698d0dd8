"""Alpha360 datasets built exactly as Qlib builds them, from a Qlib directory, a price table or embedded data."""

from datasets.errors import DataError
from datasets.prepared import FEATURE_NAMES, LABEL_NAME, MarketData, PreparedDataset, SegmentArrays

__all__ = ["DataError", "FEATURE_NAMES", "LABEL_NAME", "MarketData", "PreparedDataset", "SegmentArrays"]
