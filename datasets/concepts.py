"""HIST's stock → concept matrix, from a (symbol, concept) table aligned with a dataset's instruments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from alphatune.datasets.errors import DataError
from alphatune.datasets.table_reader import read_frame


def read_concept_table(path: str | Path) -> pd.DataFrame:
    """(symbol, concept) pairs from a CSV/Parquet file with a ``symbol`` column and ``concept`` or ``concept_id``.

    Symbols are upper-cased; duplicate pairs are kept once (a stock belongs to a concept or not).
    """
    path = Path(path)
    frame = read_frame(path)
    concept_column = "concept" if "concept" in frame.columns else "concept_id"
    missing = [c for c in ("symbol", concept_column) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a concept table needs symbol and "
                        "concept (or concept_id)")
    empty = frame["symbol"].isna() | frame[concept_column].isna()
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{path}: row {row} has an empty symbol or {concept_column}")
    return pd.DataFrame({"symbol": frame["symbol"].astype(str).str.strip().str.upper(),
                         "concept": frame[concept_column].astype(str).str.strip()}).drop_duplicates()


def concept_matrix(table: pd.DataFrame, instruments: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(float32 ``[len(instruments), K]`` 0/1 matrix, the K concept ids, sorted).

    Only concepts held by at least one of ``instruments`` are columns. A stock without concepts gets a zero
    row; table symbols that are not in ``instruments`` are not part of this dataset and do not appear.
    """
    position = np.searchsorted(instruments, table["symbol"].to_numpy(dtype=str))
    position = np.clip(position, 0, len(instruments) - 1)
    known = instruments[position] == table["symbol"].to_numpy(dtype=str)
    names, column = np.unique(table["concept"].to_numpy(dtype=str)[known], return_inverse=True)
    matrix = np.zeros((len(instruments), len(names)), dtype=np.float32)
    matrix[position[known], column] = 1.0
    return matrix, [str(name) for name in names]
