"""Qlib's GATs (``qlib.contrib.model.pytorch_gats.GATModel``): an RNN encoder, then attention over one day's stocks.

State_dict names are Qlib's (``rnn.*``, ``transformation.*``, ``a``, ``fc.*``, ``fc_out.*``); Qlib registers no
unused layer here. Dense attention with no graph mask: every stock of the day attends to every other one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from alphatune.models.days import DayBatch, base_rnn, last_hidden, masked_softmax


class GATs(nn.Module):
    """``[N, d_feat * T]`` rows of one or several days → ``[N]`` scores, attention within each day.

    ``day_offsets=None``: all rows are one day (how training calls it); otherwise ``day_offsets`` ``[days + 1]``
    splits the rows into days, which are padded and masked so each day gets what a call on it alone gives.
    A single-stock day attends to itself only (softmax over one key = 1).
    """

    cross_sectional = True

    def __init__(self, d_feat: int = 6, hidden_size: int = 64, num_layers: int = 2, dropout: float = 0.0,
                 base_model: str = "GRU"):
        super().__init__()
        self.d_feat, self.hidden_size, self.num_layers = d_feat, hidden_size, num_layers
        self.dropout, self.base_model = dropout, base_model
        self.rnn = base_rnn(base_model, d_feat, hidden_size, num_layers, dropout)
        self.transformation = nn.Linear(hidden_size, hidden_size)
        self.a = nn.Parameter(torch.randn(hidden_size * 2, 1))  # [2H, 1]: first half scores key j, second query i
        self.fc = nn.Linear(hidden_size, hidden_size)
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor, day_offsets: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        days = DayBatch(len(x), day_offsets, x.device)
        hidden = days.pad(last_hidden(self.rnn, x, self.d_feat))           # [D, W, H]
        z = self.transformation(hidden)                                     # [D, W, H]
        key_score = z @ self.a[: self.hidden_size]                          # [D, W, 1]: a[:H]·z_j
        query_score = z @ self.a[self.hidden_size:]                         # [D, W, 1]: a[H:]·z_i
        logits = F.leaky_relu(query_score + key_score.transpose(1, 2))      # [D, W(i), W(j)]
        keys = None if days.mask is None else days.mask[:, None, :]         # [D, 1, W]
        attended = masked_softmax(logits, keys) @ hidden + hidden           # [D, W, H]
        out = self.fc_out(F.leaky_relu(self.fc(attended)))                  # [D, W, 1]
        return days.unpad(out).squeeze(-1)                                  # [N]
