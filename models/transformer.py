"""Qlib's Alpha360 Transformer (``qlib.contrib.model.pytorch_transformer.Transformer``).

Linear embedding of each day's fields, sinusoidal positions, a post-norm ``nn.TransformerEncoder`` (PyTorch's
layer defaults: feed-forward 2048, ReLU, LayerNorm eps 1e-5, no final norm, no mask) and a linear read-out of the
last day. Qlib runs it sequence-first; this runs batch-first, which is the same computation without the
transposes. Qlib's unused extra ``encoder_layer`` is not built (``models.load_qlib_weights`` drops it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from alphatune.models.hyperparameters import Hyperparameters, d_feat, dropout, num_layers, param


@dataclass(frozen=True)
class TransformerHyperparameters(Hyperparameters):
    """Qlib's Alpha360 Transformer config (examples/benchmarks/Transformer/workflow_config_transformer_Alpha360.yaml).

    Its weight decay is Qlib's ``reg``. ``d_model`` must be even (sinusoidal positions) and divisible by ``nhead``.
    """

    model: ClassVar[str] = "transformer"
    DECAY: ClassVar[str] = "reg"
    lr: float = param(1e-4, low=1e-7, high=1.0)
    n_epochs: int = param(100, low=1, high=10_000)
    early_stop: int = param(5, low=1, high=10_000)
    batch_size: int = param(2048, low=1, high=1_000_000)
    seed: int | None = param(0, low=0, high=2**32 - 1, optional=True)
    d_feat: int = d_feat()
    d_model: int = param(64, low=2, high=4096, network=True)
    nhead: int = param(2, low=1, high=64, network=True)
    num_layers: int = num_layers()
    dropout: float = dropout()
    reg: float = param(1e-3, low=0.0, high=1.0)

    def check(self) -> None:
        if self.d_model % self.nhead:
            raise ValueError(f"{self.model}: d_model={self.d_model} must be divisible by nhead={self.nhead}")
        if self.d_model % 2:
            raise ValueError(f"{self.model}: d_model={self.d_model} must be even (sinusoidal positions)")


class PositionalEncoding(nn.Module):
    """Adds ``pe[t]`` to day ``t``: ``pe[t, 2i] = sin(t·w_i)``, ``pe[t, 2i+1] = cos(t·w_i)``, ``w_i = 10000^(-2i/d)``.

    The table is a persistent buffer of shape ``[max_len, 1, d_model]`` (Qlib's name ``pe`` and layout), computed in
    float32. Sequences longer than ``max_len`` raise PyTorch's broadcasting error.
    """

    def __init__(self, d_model: int, max_len: int = 1000):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)                  # [max_len, 1]
        rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * rate)
        pe[:, 1::2] = torch.cos(position * rate)
        self.register_buffer("pe", pe.unsqueeze(1))                                          # [max_len, 1, d]

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return sequence + self.pe[: sequence.shape[1], 0]                                    # [N, T, d] + [T, d]


class Transformer(nn.Module):
    """``[N, d_feat * T]`` Alpha360 rows → ``[N]`` scores (``T`` ≤ 1000).

    An empty batch gives ``[0]``; a row width that is not a multiple of ``d_feat`` raises ``RuntimeError``.
    NaN in a row makes that row's score NaN (attention mixes days, never rows). Localformer is this network with
    another encoder and a GRU read-out (``_before_embedding``, ``_encoder``, ``_read_out``).
    """

    def __init__(self, d_feat: int, d_model: int, nhead: int, num_layers: int, dropout: float):
        super().__init__()
        self.d_feat, self.d_model, self.nhead = d_feat, d_model, nhead
        self.num_layers, self.dropout = num_layers, dropout
        # Built in Qlib's order (anything before the embedding, embedding, one layer cloned into the encoder,
        # read-out): same seed, same weights.
        self._before_embedding()
        self.feature_layer = nn.Linear(d_feat, d_model)
        self.pos_encoder = PositionalEncoding(d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dropout=dropout, batch_first=True)
        self.transformer_encoder = self._encoder(layer)
        self.decoder_layer = nn.Linear(d_model, 1)

    def _before_embedding(self) -> None:
        """Modules Qlib builds before the embedding (none here)."""

    def _encoder(self, layer: nn.TransformerEncoderLayer) -> nn.Module:
        return nn.TransformerEncoder(layer, self.num_layers, enable_nested_tensor=False)

    def _read_out(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[N, T, d_model]`` → ``[N, d_model]``: the last day."""
        return hidden[:, -1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x.unflatten(1, (self.d_feat, -1)).transpose(1, 2)     # [N, T, d_feat]
        hidden = self.pos_encoder(self.feature_layer(sequence))           # [N, T, d_model]
        hidden = self.transformer_encoder(hidden)                         # [N, T, d_model]
        return self.decoder_layer(self._read_out(hidden)).squeeze(-1)     # [N, d_model] → [N]
