"""A dataset's segment as the trainer holds it: its arrays as tensors on the training device, and its days.

``load_segment`` turns ``ds.segment(name)`` (numpy, possibly read-only views of Ray's object store or of memory
maps) into a ``Segment`` once per fit: on CPU ``torch.from_numpy`` without copying, elsewhere one copy to the
device. Nothing writes into the arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Segment:
    """One segment's arrays as tensors on the training device, plus its day offsets on both sides."""

    name: str
    features: torch.Tensor          # float32 [rows, d_feat * T]
    labels: torch.Tensor            # float32 [rows]
    instrument_index: torch.Tensor  # int64 [rows]
    offsets: np.ndarray             # int64 [days + 1], CPU, for slicing
    offsets_device: torch.Tensor    # the same on the device, for the metrics
    dates: np.ndarray               # datetime64 [days], the date of each day kept

    @property
    def n_rows(self) -> int:
        return len(self.labels)

    @property
    def n_days(self) -> int:
        return len(self.offsets) - 1


def to_tensor(array: np.ndarray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``: no copy on CPU when it already has the dtype and is contiguous."""
    array = np.ascontiguousarray(array, dtype=dtype)
    with warnings.catch_warnings():  # read-only arrays (ray.get, memory maps) are never written through
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    return tensor if device.type == "cpu" else tensor.to(device)


def load_segment(ds: Any, name: str, device: torch.device, labelled_only: bool) -> Segment:
    """Segment ``name`` of ``ds`` on ``device``; with ``labelled_only`` the rows without a finite label are left
    out (days left empty disappear). A segment with no row at all, or (``labelled_only``) no labelled row, is a
    ``ValueError``."""
    arrays = ds.segment(name)
    features, labels = arrays.features, arrays.labels
    instruments, offsets = arrays.instrument_index, np.asarray(arrays.day_offsets, dtype=np.int64)
    dates = np.asarray(arrays.dates)
    if len(labels) == 0:
        raise ValueError(f"segment {name!r} has no rows")
    if labelled_only:
        finite = np.isfinite(labels)
        if not finite.all():
            if not finite.any():
                raise ValueError(f"segment {name!r} has no row with a finite label")
            kept_before = np.concatenate([[0], np.cumsum(finite)])
            dates = dates[np.diff(kept_before[offsets]) > 0]
            offsets = np.unique(kept_before[offsets])
            features, labels, instruments = features[finite], labels[finite], instruments[finite]
    return Segment(name, to_tensor(features, np.float32, device), to_tensor(labels, np.float32, device),
                   to_tensor(instruments, np.int64, device), offsets, to_tensor(offsets, np.int64, device), dates)


def day_chunks(offsets: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive day ranges ``[start, stop)`` of at most ``max_rows`` rows each (at least one day each)."""
    chunks, start, n_days = [], 0, len(offsets) - 1
    while start < n_days:
        stop = int(np.searchsorted(offsets, offsets[start] + max_rows, side="right")) - 1
        stop = min(max(stop, start + 1), n_days)
        chunks.append((start, stop))
        start = stop
    return chunks
