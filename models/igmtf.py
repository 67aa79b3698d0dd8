"""Qlib's IGMTF (``qlib.contrib.model.pytorch_igmtf.IGMTFModel``): each day's stocks attend to the stocks of the
most similar training days, held in a memory of their hidden states.

State_dict names are Qlib's for every used layer (``rnn.*``, ``lins.linear0.*``, ``lins.linear1.*``,
``project1.weight``, ``project2.weight``, ``fc_out_pred.*``); Qlib's unused ``fc_output`` is not built. The memory
is not part of the state_dict: it is rebuilt from the training days with the current weights at the start of every
epoch and before predicting (``refresh``, which the trainer calls; ``set_memory``), as Qlib does.

Qlib's double ``lins`` is kept on purpose (faithful): the stored states are already ``lins`` outputs and the
forward applies ``lins`` to them a second time, with gradient.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from alphatune.models.days import DayBatch, DayModel, base_rnn, cosine, last_hidden
from alphatune.models.hyperparameters import (Hyperparameters, base_model, d_feat, dropout, hidden_size, num_layers,
                                              param, weight_decay)


@dataclass(frozen=True)
class IGMTFHyperparameters(Hyperparameters):
    """Qlib's Alpha360 IGMTF config (examples/benchmarks/IGMTF/workflow_config_igmtf_Alpha360.yaml): early stopping
    on the IC; ``batch_size`` is not used (one day per step); ``k_day`` and ``n_neighbor`` are the values Qlib's
    forward fixes."""

    model: ClassVar[str] = "igmtf"
    lr: float = param(1e-4, low=1e-7, high=1.0)
    metric: str = param("ic", choices=("loss", "ic"))
    d_feat: int = d_feat()
    hidden_size: int = hidden_size()
    num_layers: int = num_layers()
    dropout: float = dropout()
    base_model: str = base_model()
    k_day: int = param(10, low=1, high=1000, network=True)
    n_neighbor: int = param(10, low=1, high=10_000, network=True)
    weight_decay: float = weight_decay()


class IGMTF(DayModel):
    """Padded days ``[D, W, d_feat * T]`` → ``[D, W]`` scores.

    Each day takes the ``k_day`` training days whose mean hidden state is most similar to its own, and each of its
    stocks the ``n_neighbor`` most similar stocks among those days. When fewer days or stocks exist than asked
    for, all of them are used (Qlib's ``topk`` would raise); the neighbour weights are still divided by
    ``n_neighbor``, as Qlib's are.
    """

    needs_refresh = True

    def __init__(self, d_feat: int, hidden_size: int, num_layers: int, dropout: float, base_model: str, k_day: int,
                 n_neighbor: int):
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
        """Store the training days' encoded states ``hidden`` ``[rows, H]`` (detached), split by ``day_offsets``.

        A memory of the same shape is overwritten in place, so a CUDA graph that reads it sees the new one."""
        days = DayBatch(len(hidden), day_offsets, hidden.device)
        padded = days.pad(hidden.detach())                                  # [Dm, Wm, H]
        mask = days.mask if days.mask is not None else torch.ones(padded.shape[:2], dtype=torch.bool,
                                                                  device=hidden.device)
        mean = padded.sum(dim=1) / mask.sum(dim=1, keepdim=True)           # [Dm, H]
        if self.memory_hidden is not None and self.memory_hidden.shape == padded.shape \
                and self.memory_hidden.dtype == padded.dtype and self.memory_hidden.device == padded.device:
            self.memory_hidden.copy_(padded)
            self.memory_mask.copy_(mask)
            self.memory_mean.copy_(mean)
        else:
            self.memory_hidden, self.memory_mask, self.memory_mean = padded, mask, mean

    @torch.no_grad()
    def refresh(self, features: torch.Tensor, day_offsets: np.ndarray, rows_per_call: int) -> None:
        """Rebuild the memory from the training rows with the current weights (eval mode, no gradient)."""
        was_training = self.training
        self.eval()
        hidden = torch.cat([self.encode(features[start:start + rows_per_call]).float()
                            for start in range(0, len(features), rows_per_call)])
        self.set_memory(hidden, day_offsets)
        self.train(was_training)

    def forward_days(self, x: torch.Tensor, mask: torch.Tensor | None,
                     instruments: torch.Tensor | None) -> torch.Tensor:
        if self.memory_hidden is None:
            raise RuntimeError("IGMTF has no memory of training days yet: call set_memory (the trainer does)")
        n_days, width = x.shape[:2]
        hidden = self.encode(x.flatten(0, 1)).unflatten(0, (n_days, width))  # [D, W, H]
        rows = mask if mask is not None else torch.ones(hidden.shape[:2], dtype=torch.bool, device=x.device)
        day_mean = (hidden * rows[..., None]).sum(dim=1) / rows.sum(dim=1, keepdim=True)  # [D, H] real rows only

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

        return self.fc_out_pred(torch.cat([hidden, aggregated], dim=-1)).squeeze(-1)  # [D, W]
