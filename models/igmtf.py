"""Qlib's IGMTF (``qlib.contrib.model.pytorch_igmtf.IGMTFModel``): each day's stocks attend to the stocks of the
most similar training days, held in a memory of their hidden states.

State_dict names are Qlib's for every used layer (``rnn.*``, ``lins.linear0.*``, ``lins.linear1.*``,
``project1.weight``, ``project2.weight``, ``fc_out_pred.*``); Qlib's unused ``fc_output`` is not built. The memory
is not part of the state_dict: the trainer rebuilds it from the training days with the current weights at the
start of every epoch and before predicting (``set_memory``), as Qlib does.

Qlib's double ``lins`` is kept on purpose (faithful): the stored states are already ``lins`` outputs and the
forward applies ``lins`` to them a second time, with gradient.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from alphatune.models.days import DayBatch, base_rnn, cosine, last_hidden


class IGMTF(nn.Module):
    """``[N, d_feat * T]`` rows of one or several days → ``[N]`` scores (``day_offsets`` as in ``GATs``).

    Each day takes the ``k_day`` training days whose mean hidden state is most similar to its own, and each of its
    stocks the ``n_neighbor`` most similar stocks among those days. When fewer days or stocks exist than asked
    for, all of them are used (Qlib's ``topk`` would raise); the neighbour weights are still divided by
    ``n_neighbor``, as Qlib's are.
    """

    cross_sectional = True
    uses_train_memory = True

    def __init__(self, d_feat: int = 6, hidden_size: int = 64, num_layers: int = 2, dropout: float = 0.0,
                 base_model: str = "GRU", k_day: int = 10, n_neighbor: int = 10):
        super().__init__()
        self.d_feat, self.hidden_size, self.num_layers = d_feat, hidden_size, num_layers
        self.dropout, self.base_model, self.k_day, self.n_neighbor = dropout, base_model, k_day, n_neighbor
        self.rnn = base_rnn(base_model, d_feat, hidden_size, num_layers, dropout)
        self.lins = nn.Sequential(OrderedDict([
            ("linear0", nn.Linear(hidden_size, hidden_size)), ("leakyrelu0", nn.LeakyReLU()),
            ("linear1", nn.Linear(hidden_size, hidden_size)), ("leakyrelu1", nn.LeakyReLU())]))
        self.project1 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.project2 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.fc_out_pred = nn.Linear(hidden_size * 2, 1)
        self.register_buffer("memory_hidden", None, persistent=False)  # [days, width, H] training days, padded
        self.register_buffer("memory_mask", None, persistent=False)    # [days, width] real rows
        self.register_buffer("memory_mean", None, persistent=False)    # [days, H] each day's mean state

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, d_feat * T]`` → ``[N, H]``: ``lins`` over the RNN's last hidden state."""
        return self.lins(last_hidden(self.rnn, x, self.d_feat))

    def set_memory(self, hidden: torch.Tensor, day_offsets: Sequence[int] | np.ndarray | torch.Tensor) -> None:
        """Store the training days' encoded states ``hidden`` ``[rows, H]`` (detached), split by ``day_offsets``."""
        days = DayBatch(len(hidden), day_offsets, hidden.device)
        padded = days.pad(hidden.detach())                                  # [Dm, Wm, H]
        mask = days.mask if days.mask is not None else torch.ones(padded.shape[:2], dtype=torch.bool,
                                                                  device=hidden.device)
        self.memory_hidden, self.memory_mask = padded, mask
        self.memory_mean = padded.sum(dim=1) / mask.sum(dim=1, keepdim=True)  # [Dm, H]

    def forward(self, x: torch.Tensor, day_offsets: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        if self.memory_hidden is None:
            raise RuntimeError("IGMTF has no memory of training days yet: call set_memory (the trainer does)")
        days = DayBatch(len(x), day_offsets, x.device)
        hidden = days.pad(self.encode(x))                                   # [D, W, H]
        rows = days.mask if days.mask is not None else torch.ones(hidden.shape[:2], dtype=torch.bool,
                                                                  device=x.device)
        day_mean = hidden.sum(dim=1) / rows.sum(dim=1, keepdim=True)        # [D, H] (padding is zero)

        # The k most similar training days, by cosine of the day means.
        day_similarity = cosine(day_mean, self.memory_mean)                 # [D, Dm]
        top_days = day_similarity.topk(min(self.k_day, len(self.memory_mean)), dim=-1).indices  # [D, k]
        n_days, k = top_days.shape
        stored = self.memory_hidden[top_days].reshape(n_days, -1, self.hidden_size)  # [D, M = k * Wm, H]
        stored_mask = self.memory_mask[top_days].reshape(n_days, 1, -1)               # [D, 1, M]
        keys = self.project2(self.lins(stored))                             # [D, M, H] (lins applied again)

        # Each stock's n most similar stored stocks, weighted by cosine / n_neighbor.
        similarity = cosine(self.project1(hidden), keys).masked_fill(~stored_mask, float("-inf"))  # [D, W, M]
        values, neighbours = similarity.topk(min(self.n_neighbor, similarity.shape[-1]), dim=-1)   # [D, W, n]
        values = values.masked_fill(torch.isinf(values), 0.0) / self.n_neighbor
        weights = torch.zeros_like(similarity).scatter(-1, neighbours, values)  # [D, W, M], n non-zero per row
        aggregated = weights @ keys                                         # [D, W, H]

        out = self.fc_out_pred(torch.cat([hidden, aggregated], dim=-1))     # [D, W, 1]
        return days.unpad(out).squeeze(-1)                                  # [N]
