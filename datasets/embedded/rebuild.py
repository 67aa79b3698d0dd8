"""Rebuild the embedded dataset files from ../shared/data/csi300_2017_2019_mit (run from the project root).

    python datasets/embedded/rebuild.py [SOURCE_DIR]

Writes, next to this script: ``prices.parquet`` (the price table sorted by symbol, date; zstd; values unchanged),
``csi300.csv`` (membership: every stock of members_2015 that has price rows, over the whole calendar; the source
has rows only for members), ``concepts.csv``, ``industry.csv`` and ``LICENSE.md`` (copied unchanged).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent.parent / "shared" / "data" / "csi300_2017_2019_mit"


def rebuild(source: Path) -> None:
    prices = pd.read_csv(source / "prices.csv.gz", dtype={"symbol": str})
    prices["date"] = pd.to_datetime(prices["date"], format="%Y-%m-%d").dt.date
    # Sorted by symbol then date, a stock's prices sit together and compress to about 2 MB.
    table = pa.Table.from_pandas(prices.sort_values(["symbol", "date"]), preserve_index=False)
    pq.write_table(table, HERE / "prices.parquet", compression="zstd", compression_level=19,
                   use_dictionary=["symbol"])
    members = pd.read_csv(source / "members_2015.csv", dtype={"symbol": str})
    with_prices = sorted(set(members["symbol"]) & set(prices["symbol"]))
    first, last = str(prices["date"].min()), str(prices["date"].max())
    pd.DataFrame({"symbol": with_prices, "start": first, "end": last}).to_csv(HERE / "csi300.csv", index=False)
    for name in ("concepts.csv", "industry.csv", "LICENSE.md"):
        shutil.copyfile(source / name, HERE / name)


if __name__ == "__main__":
    rebuild(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
