"""What a data source is, and the defaults a spec starts from: the one place they are written."""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = "embedded"
DEFAULT_MARKET = "csi300"        # Qlib's Alpha360 benchmarks' universe and index
DEFAULT_BENCHMARK = "SH000300"
SEGMENTS = ("train", "valid", "test")
META = "meta.json"               # a prepared dataset directory holds it (datasets.storage writes it)
# The embedded data's default segments (a three-month training window: the quick start's real search takes
# minutes on two cores). The one place they are written.
EMBEDDED_SEGMENTS = {"train": ("2018-10-01", "2018-12-31"), "valid": ("2019-01-01", "2019-02-28"),
                     "test": ("2019-03-01", "2019-11-28")}


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a saved prepared dataset directory (as opposed to a source to prepare)."""
    return (Path(path).expanduser() / META).is_file()


def is_qlib_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Qlib data directory (it has ``calendars/day.txt``)."""
    return (Path(path).expanduser() / "calendars" / "day.txt").is_file()
