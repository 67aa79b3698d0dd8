"""Qlib's GATs (``qlib.contrib.model.pytorch_gats.GATModel``): an RNN encoder, then attention over one day's stocks.

State_dict names are Qlib's (``rnn.*``, ``transformation.*``, ``a``, ``fc.*``, ``fc_out.*``); Qlib registers no
unused layer here. Dense attention with no graph mask: every stock of the day attends to every other one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from alphatune.models.days import DayModel, base_rnn, last_hidden, masked_softmax
from alphatune.models.hyperparameters import (Hyperparameters, base_model, d_feat, dropout, hidden_size, num_layers,
                                              param, weight_decay)


@dataclass(frozen=True)
class GATsHyperparameters(Hyperparameters):
    """Qlib's Alpha360 GATs config (examples/benchmarks/GATs/workflow_config_gats_Alpha360.yaml); ``batch_size`` is
    not used (one day per step), ``base_model`` is the encoder of the pretrained base."""

    model: ClassVar[str] = "gats"
    lr: float = param(1e-4, low=1e-7, high=1.0)
    d_feat: int = d_feat()
    hidden_size: int = hidden_size()
    num_layers: int = num_layers()
    dropout: float = dropout(0.7)
    base_model: str = base_model()
    weight_decay: float = weight_decay()


class GATs(DayModel):
    """Padded days ``[D, W, d_feat * T]`` → ``[D, W]`` scores, attention within each day over its real rows.

    A single-stock day attends to itself only (softmax over one key = 1).
    """

    def __init__(self, d_feat: int, hidden_size: int, num_layers: int, dropout: float, base_model: str):
        super().__init__()
        self.d_feat, self.hidden_size, self.num_layers = d_feat, hidden_size, num_layers
        self.dropout, self.base_model = dropout, base_model
        self.rnn = base_rnn(base_model, d_feat, hidden_size, num_layers, dropout)
        self.transformation = nn.Linear(hidden_size, hidden_size)
        self.a = nn.Parameter(torch.randn(hidden_size * 2, 1))  # [2H, 1]: first half scores key j, second query i
        self.fc = nn.Linear(hidden_size, hidden_size)
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward_days(self, x: torch.Tensor, mask: torch.Tensor | None,
                     instruments: torch.Tensor | None) -> torch.Tensor:
        n_days, width = x.shape[:2]
        hidden = last_hidden(self.rnn, x.flatten(0, 1), self.d_feat).unflatten(0, (n_days, width))  # [D, W, H]
        z = self.transformation(hidden)                                     # [D, W, H]
        key_score = z @ self.a[: self.hidden_size]                          # [D, W, 1]: a[:H]·z_j
        query_score = z @ self.a[self.hidden_size:]                         # [D, W, 1]: a[H:]·z_i
        logits = F.leaky_relu(query_score + key_score.transpose(1, 2))      # [D, W(i), W(j)]
        keys = None if mask is None else mask[:, None, :]                   # [D, 1, W]
        attended = masked_softmax(logits, keys) @ hidden + hidden           # [D, W, H]
        return self.fc_out(F.leaky_relu(self.fc(attended))).squeeze(-1)     # [D, W]
