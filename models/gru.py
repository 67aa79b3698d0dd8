"""Qlib's Alpha360 GRU (``qlib.contrib.model.pytorch_gru.GRUModel``): a stacked GRU over the 60 days.

State_dict names are Qlib's (``rnn.*``, ``fc_out.*``), so a Qlib checkpoint loads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from alphatune.models.lstm import LSTM, LSTMHyperparameters


@dataclass(frozen=True)
class GRUHyperparameters(LSTMHyperparameters):
    """Qlib's Alpha360 GRU config (examples/benchmarks/GRU/workflow_config_gru_Alpha360.yaml): the LSTM's values."""

    model: ClassVar[str] = "gru"


class GRU(LSTM):
    """``[N, d_feat * T]`` Alpha360 rows → ``[N]`` scores: Qlib's LSTM network with a GRU layer (same state_dict
    names, same read-out of the top layer's last hidden state; see ``LSTM``)."""

    RNN = nn.GRU
