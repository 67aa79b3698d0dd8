"""Qlib's Alpha360 GRU (``qlib.contrib.model.pytorch_gru.GRUModel``): a stacked GRU over the 60 days.

State_dict names are Qlib's (``rnn.*``, ``fc_out.*``), so a Qlib checkpoint loads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from alphatune.models.lstm import LSTMHyperparameters


@dataclass(frozen=True)
class GRUHyperparameters(LSTMHyperparameters):
    """Qlib's Alpha360 GRU config (examples/benchmarks/GRU/workflow_config_gru_Alpha360.yaml): the LSTM's values."""

    model: ClassVar[str] = "gru"


class GRU(nn.Module):
    """``[N, d_feat * T]`` Alpha360 rows → ``[N]`` scores.

    A row is ``d_feat`` blocks of ``T`` days (oldest first), so it is read as ``[d_feat, T]`` and transposed to
    the sequence ``[T, d_feat]``. The score is a linear read-out of the top layer's last hidden state.
    ``dropout`` acts between stacked layers only (none with one layer). NaN inputs propagate to NaN scores.
    An empty batch gives ``[0]``; a row width that is not a multiple of ``d_feat`` raises ``RuntimeError``.
    """

    def __init__(self, d_feat: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.d_feat, self.hidden_size, self.num_layers, self.dropout = d_feat, hidden_size, num_layers, dropout
        self.rnn = nn.GRU(d_feat, hidden_size, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x.unflatten(1, (self.d_feat, -1)).transpose(1, 2)  # [N, T, d_feat]
        _, hidden = self.rnn(sequence)                                 # [num_layers, N, H]
        return self.fc_out(hidden[-1]).squeeze(-1)                     # [N, H] → [N, 1] → [N]
