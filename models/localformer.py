"""Qlib's Alpha360 Localformer (``qlib.contrib.model.pytorch_localformer``): a Transformer whose layers each see
the sequence plus a local (kernel 3) convolution of it, followed by a GRU.

Per layer ``i``: ``local = Conv1d_i(h)`` over time (model dims are the conv's channels), ``h = layer_i(h + local)``;
the encoder returns ``h + local`` of the last layer. Qlib runs it sequence-first; this runs batch-first, the same
computation with fewer transposes. Qlib's unused extra ``encoder_layer`` is not built.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from alphatune.models.transformer import Transformer, TransformerHyperparameters


@dataclass(frozen=True)
class LocalformerHyperparameters(TransformerHyperparameters):
    """Qlib's Alpha360 Localformer config (examples/benchmarks/Localformer/...Alpha360.yaml): the Transformer's."""

    model: ClassVar[str] = "localformer"


class LocalformerEncoder(nn.Module):
    """``num_layers`` copies of ``layer`` and of one ``Conv1d(d_model, d_model, 3, padding=1)``; ``[N, T, d]`` in/out.

    The copies start from identical weights (Qlib deep-copies one layer and one conv).
    """

    def __init__(self, layer: nn.TransformerEncoderLayer, num_layers: int, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        conv = nn.Conv1d(d_model, d_model, kernel_size=3, stride=1, padding=1)
        self.conv = nn.ModuleList(copy.deepcopy(conv) for _ in range(num_layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        local = hidden
        for layer, conv in zip(self.layers, self.conv):
            local = conv(hidden.transpose(1, 2)).transpose(1, 2)   # [N, d, T] → conv over time → [N, T, d]
            hidden = layer(hidden + local)                         # [N, T, d]
        return hidden + local


class Localformer(Transformer):
    """``[N, d_feat * T]`` Alpha360 rows → ``[N]`` scores (``T`` ≤ 1000): the Transformer with the local
    encoder, read out through a GRU over its output (the top layer's last hidden state).

    An empty batch gives ``[0]``; a row width that is not a multiple of ``d_feat`` raises ``RuntimeError``.
    NaN in a row makes that row's score NaN (attention mixes days, never rows).
    """

    def _before_embedding(self) -> None:
        # Qlib builds its GRU first: same seed, same weights.
        self.rnn = nn.GRU(self.d_model, self.d_model, self.num_layers, batch_first=True,
                          dropout=self.dropout if self.num_layers > 1 else 0.0)

    def _encoder(self, layer: nn.TransformerEncoderLayer) -> nn.Module:
        return LocalformerEncoder(layer, self.num_layers, self.d_model)

    def _read_out(self, hidden: torch.Tensor) -> torch.Tensor:
        _, last = self.rnn(hidden)                                        # [num_layers, N, d_model]
        return last[-1]
