"""The day models (GATs, HIST, IGMTF): their one interface to the trainer, the day layout and the masked ops.

These networks mix the stocks of one trading day. ``DayModel`` is what the trainer knows of them: it feeds them
whole days; ``attach(ds)`` gives a network what it needs from the dataset besides the rows (HIST: its concept
matrix) and ``refresh(...)`` rebuilds state from the training days before each epoch and before predicting
(IGMTF: its memory). The trainer names no model.

Each network computes on padded days: ``forward_days(x [D, W, F], mask [D, W], instruments [D, W])`` with ``W``
the most rows any of the ``D`` days has and ``mask`` marking the real rows; the mask keeps the padding out of
every attention, softmax, top-k and sum, so each day's scores are what one call on that day alone gives (up to
float rounding). ``forward(x [N, F], day_offsets, instruments)`` on flat rows pads, calls it, and unpads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


class DayBatch:
    """How ``rows`` consecutive rows split into days, and the padding to ``[days, width]`` that batches them.

    ``day_offsets=None`` means all rows are one day: padding is then a free ``unsqueeze`` and ``mask`` is
    ``None`` (every slot is a real row). Otherwise ``day_offsets`` (``[days + 1]``, starting at 0, ending at
    ``rows``) gives each day's rows; a day may hold a single row but not none.
    """

    def __init__(self, rows: int, day_offsets: Sequence[int] | np.ndarray | torch.Tensor | None,
                 device: torch.device):
        if day_offsets is None:
            self.n_days, self.width = 1, rows
            self.mask = self._day = self._slot = None
            return
        offsets = torch.as_tensor(np.asarray(day_offsets, dtype=np.int64) if not isinstance(day_offsets, torch.Tensor)
                                  else day_offsets.detach().cpu().long())
        counts = torch.diff(offsets)
        if offsets[0] != 0 or offsets[-1] != rows or len(counts) == 0 or bool((counts <= 0).any()):
            raise ValueError(f"day_offsets must rise strictly from 0 to the {rows} rows given; "
                             f"got {offsets.tolist()[:5]}...{offsets.tolist()[-2:]}")
        self.n_days, self.width = len(counts), int(counts.max())
        day = torch.repeat_interleave(torch.arange(self.n_days), counts)
        self._day = day.to(device)
        self._slot = (torch.arange(rows) - offsets[day]).to(device)
        self.mask = (torch.arange(self.width)[None, :] < counts[:, None]).to(device)  # [days, width]

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """``[rows, ...]`` → ``[days, width, ...]``, zeros in the padding."""
        if self._day is None:
            return values.unsqueeze(0)
        padded = values.new_zeros((self.n_days, self.width, *values.shape[1:]))
        return padded.index_put((self._day, self._slot), values)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``[days, width, ...]`` → ``[rows, ...]`` in row order (the padding is dropped)."""
        if self._day is None:
            return padded[0]
        return padded[self._day, self._slot]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Qlib's HIST/IGMTF cosine similarity, batched: ``[..., N, H]``, ``[..., M, H]`` → ``[..., N, M]``.

    ``a·bᵀ / (‖a‖‖b‖ᵀ + 1e-6)``: a zero vector gives 0, not NaN.
    """
    norms = a.norm(dim=-1).unsqueeze(-1) * b.norm(dim=-1).unsqueeze(-2)
    return (a @ b.transpose(-1, -2)) / (norms + 1e-6)


def masked_softmax(logits: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim using only the keys where ``key_mask`` (broadcastable to ``logits``) is True.

    A row with no valid key gets all zeros (as a softmax over an empty set of keys, multiplied out, gives in
    Qlib), with finite gradients.
    """
    if key_mask is None:
        return torch.softmax(logits, dim=-1)
    key_mask = key_mask.expand_as(logits)
    has_key = key_mask.any(dim=-1, keepdim=True)
    logits = logits.masked_fill(~key_mask, float("-inf")).masked_fill(~has_key, 0.0)
    return torch.softmax(logits, dim=-1) * has_key


def base_rnn(base_model: str, d_feat: int, hidden_size: int, num_layers: int, dropout: float) -> nn.RNNBase:
    """The LSTM or GRU encoder Qlib's ``LSTMModel``/``GRUModel`` use (batch first; dropout between layers)."""
    kinds = {"LSTM": nn.LSTM, "GRU": nn.GRU}
    if base_model not in kinds:
        raise ValueError(f"base_model={base_model!r} is not one of LSTM, GRU")
    return kinds[base_model](d_feat, hidden_size, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)


def last_hidden(rnn: nn.RNNBase, x: torch.Tensor, d_feat: int) -> torch.Tensor:
    """``[N, d_feat * T]`` Alpha360 rows → the top layer's output at the last step ``[N, H]``.

    A row is ``d_feat`` blocks of ``T`` days, read as ``[d_feat, T]`` and transposed to ``[T, d_feat]``. Under
    autocast the output has autocast's dtype (``in_autocast_dtype``).
    """
    sequence = x.reshape(len(x), d_feat, -1).transpose(1, 2)  # [N, T, d_feat]
    output, _ = rnn(sequence)                                 # [N, T, H]
    return in_autocast_dtype(output[:, -1])


def in_autocast_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the active autocast dtype when it is of another reduced precision.

    On CUDA, autocast runs cuDNN's LSTM and GRU in float16 whatever its dtype (``_cudnn_rnn`` casts to half), so
    under bfloat16 autocast an RNN's output is float16 while everything around it is bfloat16; an op that autocast
    "promotes" (``index_put``, ``cat``, ``stack``, ...) then refuses the mix ("Unexpected floating ScalarType in
    at::autocast::prioritize"), which is how amp crashed GATs and HIST (their RNN output was padded into days
    with ``index_put``). A day model's hidden states go through this first."""
    device = tensor.device.type
    if tensor.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        if tensor.dtype != dtype:
            return tensor.to(dtype)
    return tensor


class DayModel(nn.Module):
    """A network that mixes the stocks of one trading day (``cross_sectional``); the trainer's one view of them.

    Subclasses implement ``forward_days`` and, when they need them, ``attach`` and ``refresh``.
    """

    cross_sectional = True
    needs_refresh = False  # whether ``refresh`` does anything (the trainer skips the work otherwise)

    def attach(self, ds: Any) -> None:
        """Take what the network needs from ``ds`` besides its rows; nothing by default."""

    @torch.no_grad()
    def refresh(self, features: torch.Tensor, day_offsets: np.ndarray, rows_per_call: int) -> None:
        """Rebuild state from the training segment (``features`` on the network's device, ``day_offsets``) with the
        current weights, ``rows_per_call`` rows at a time; nothing by default."""

    def forward_days(self, x: torch.Tensor, mask: torch.Tensor | None,
                     instruments: torch.Tensor | None) -> torch.Tensor:
        """``[D, W, F]`` padded days (``mask`` ``[D, W]``: real rows, ``None``: all real) → ``[D, W]`` scores."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, day_offsets: Sequence[int] | np.ndarray | torch.Tensor | None = None,
                instruments: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, F]`` rows of one day (``day_offsets=None``) or of several → ``[N]`` scores. ``instruments``
        (``[N]``, positions in the dataset's instruments) for the networks that look stocks up (HIST)."""
        days = DayBatch(len(x), day_offsets, x.device)
        padded_instruments = days.pad(instruments) if instruments is not None else None
        return days.unpad(self.forward_days(days.pad(x), days.mask, padded_instruments))
