"""Qlib's Alpha360 LSTM (``qlib.contrib.model.pytorch_lstm.LSTMModel``): a stacked LSTM over the 60 days.

State_dict names are Qlib's (``rnn.*``, ``fc_out.*``), so a Qlib checkpoint loads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from alphatune.models.hyperparameters import Hyperparameters, d_feat, dropout, hidden_size, num_layers, weight_decay


@dataclass(frozen=True)
class LSTMHyperparameters(Hyperparameters):
    """Qlib's Alpha360 LSTM config (examples/benchmarks/LSTM/workflow_config_lstm_Alpha360.yaml): the training
    defaults of ``Hyperparameters`` (lr 1e-3, 200 epochs, early stop 20, batch 800, loss, Adam)."""

    model: ClassVar[str] = "lstm"
    d_feat: int = d_feat()
    hidden_size: int = hidden_size()
    num_layers: int = num_layers()
    dropout: float = dropout()
    weight_decay: float = weight_decay()


class LSTM(nn.Module):
    """``[N, d_feat * T]`` Alpha360 rows → ``[N]`` scores.

    A row is ``d_feat`` blocks of ``T`` days (oldest first), so it is read as ``[d_feat, T]`` and transposed to
    the sequence ``[T, d_feat]``. The score is a linear read-out of the top layer's last hidden state.
    ``dropout`` acts between stacked layers only (none with one layer). NaN inputs propagate to NaN scores.
    An empty batch gives ``[0]``; a row width that is not a multiple of ``d_feat`` raises ``RuntimeError``.
    ``RNN`` is the recurrent layer (Qlib's GRU is this network with ``nn.GRU``).
    """

    RNN: ClassVar[type[nn.RNNBase]] = nn.LSTM

    def __init__(self, d_feat: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.d_feat, self.hidden_size, self.num_layers, self.dropout = d_feat, hidden_size, num_layers, dropout
        self.rnn = self.RNN(d_feat, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x.unflatten(1, (self.d_feat, -1)).transpose(1, 2)  # [N, T, d_feat]
        _, state = self.rnn(sequence)                                  # LSTM: (hidden, cell); GRU: hidden
        hidden = state[0] if isinstance(state, tuple) else state       # [num_layers, N, H]
        return self.fc_out(hidden[-1]).squeeze(-1)                     # [N, H] → [N, 1] → [N]
