"""Qlib's Alpha360 TCN (``qlib.contrib.model.pytorch_tcn.TCNModel`` over locuslab's ``TemporalConvNet``).

The 6 fields are the channels and the 60 days the length. ``num_layers`` residual blocks with dilation ``2^i``;
each block is twice (weight-normalised causal conv → ReLU → dropout), plus a 1×1 conv on the residual where the
channel count changes (the first block), then ReLU. The last day's channels feed a linear read-out.

Differences from Qlib that keep the computation: the causal conv pads on the left only instead of padding both
sides and chomping the right end (no output columns computed only to be cut off); weight norm is the current
``torch.nn.utils.parametrizations.weight_norm`` (dim 0), so ``weight_g``/``weight_v`` are named
``parametrizations.weight.original0``/``original1`` (``models.load_qlib_weights`` maps them). Qlib's
``normal(0, 0.01)`` init of the weight-normalised convs never takes effect there, so only the 1×1 conv gets it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.parametrizations import weight_norm

from alphatune.models.hyperparameters import Hyperparameters, d_feat, dropout, param, weight_decay


@dataclass(frozen=True)
class TCNHyperparameters(Hyperparameters):
    """Qlib's Alpha360 TCN config (examples/benchmarks/TCN/workflow_config_tcn_Alpha360.yaml)."""

    model: ClassVar[str] = "tcn"
    batch_size: int = param(2000, low=1, high=1_000_000)
    d_feat: int = d_feat()
    n_chans: int = param(128, low=1, high=4096, network=True)
    num_layers: int = param(5, low=1, high=16, network=True)
    kernel_size: int = param(3, low=2, high=15, network=True)
    dropout: float = dropout(0.5)
    weight_decay: float = weight_decay()


class CausalConv1d(nn.Conv1d):
    """A dilated ``Conv1d`` whose output at ``t`` sees inputs ``≤ t`` only: ``[N, C_in, T] → [N, C_out, T]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_padding = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(functional.pad(x, (self.left_padding, 0)))


class TemporalBlock(nn.Module):
    """One residual block: ``[N, C_in, T] → [N, C_out, T]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = weight_norm(CausalConv1d(in_channels, out_channels, kernel_size, dilation), dim=0)
        self.conv2 = weight_norm(CausalConv1d(out_channels, out_channels, kernel_size, dilation), dim=0)
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None
        if self.downsample is not None:
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(torch.relu(self.conv1(x)))                       # [N, C_out, T]
        out = self.dropout(torch.relu(self.conv2(out)))                     # [N, C_out, T]
        residual = x if self.downsample is None else self.downsample(x)     # [N, C_out, T]
        return torch.relu(out + residual)


class TemporalConvNet(nn.Module):
    """``len(channels)`` blocks, block ``i`` with dilation ``2^i``: ``[N, C_in, T] → [N, channels[-1], T]``."""

    def __init__(self, in_channels: int, channels: list[int], kernel_size: int, dropout: float):
        super().__init__()
        widths = [in_channels, *channels]
        self.network = nn.Sequential(*(TemporalBlock(widths[i], widths[i + 1], kernel_size, 2**i, dropout)
                                       for i in range(len(channels))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class TCN(nn.Module):
    """``[N, d_feat * T]`` Alpha360 rows → ``[N]`` scores. NaN inputs propagate to NaN scores.

    An empty batch gives ``[0]``; a row width that is not a multiple of ``d_feat`` raises ``RuntimeError``.
    """

    def __init__(self, d_feat: int, n_chans: int, num_layers: int, kernel_size: int, dropout: float):
        super().__init__()
        self.d_feat, self.n_chans, self.num_layers = d_feat, n_chans, num_layers
        self.kernel_size, self.dropout = kernel_size, dropout
        self.tcn = TemporalConvNet(d_feat, [n_chans] * num_layers, kernel_size, dropout)
        self.linear = nn.Linear(n_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.tcn(x.unflatten(1, (self.d_feat, -1)))         # [N, d_feat, T] → [N, n_chans, T]
        return self.linear(channels[:, :, -1]).squeeze(-1)              # [N, n_chans] → [N]
