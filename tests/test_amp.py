"""Mixed precision on every model: no float64 reaches a network's forward, and no op mixes two reduced
precisions (what CUDA autocast refuses: "Unexpected floating ScalarType in at::autocast::prioritize").

CUDA autocast runs cuDNN's LSTM and GRU in float16 even under bfloat16 autocast. These tests make the CPU's RNNs
do the same under autocast, then run every model's training step and padded evaluation under CPU bfloat16
autocast, recording the dtypes every torch function receives.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from alphatune import models
from alphatune.models.days import in_autocast_dtype
from alphatune.models.metrics import masked_mse

REDUCED = {torch.float16, torch.bfloat16}


class DtypeRecorder(TorchFunctionMode):
    """Every torch function call's floating tensor dtypes, with the function's name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, set[torch.dtype]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtypes = {value.dtype for value in _tensors((args, kwargs)) if value.is_floating_point()}
        self.calls.append((getattr(func, "__name__", str(func)), dtypes))
        return func(*args, **kwargs)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


@pytest.fixture
def rnns_like_cudnn_under_autocast(monkeypatch):
    """Under autocast, an RNN returns float16, as cuDNN's does on CUDA."""
    for cls in (nn.LSTM, nn.GRU):
        original = cls.forward

        def forward(self, *args, _original=original, **kwargs):
            output, state = _original(self, *args, **kwargs)
            if torch.is_autocast_enabled("cpu"):
                output = output.half()
            return output, state

        monkeypatch.setattr(cls, "forward", forward)


def small(name: str) -> nn.Module:
    sizes = {"d_model": 8, "nhead": 2, "num_layers": 1} if name in ("transformer", "localformer") else (
        {"n_chans": 8, "num_layers": 2} if name == "tcn" else {"hidden_size": 8, "num_layers": 1})
    torch.manual_seed(0)
    return models.build(name, **sizes)


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_amp_never_mixes_precisions_nor_sees_float64(name, rnns_like_cudnn_under_autocast):
    net = small(name)
    rows, offsets = 12, [0, 5, 6, 12]
    x, labels, instruments = torch.randn(rows, 360), torch.randn(rows), torch.arange(rows)
    day_model = isinstance(net, models.DayModel)
    if name == "hist":
        net.set_concepts((torch.rand(rows, 4) < 0.5).float())
    if name == "igmtf":
        net.refresh(torch.randn(rows, 360), [0, 4, 12], rows_per_call=64)
    recorder = DtypeRecorder()
    with recorder, torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x[:5], None, instruments[:5]) if day_model else net(x)                # a training step's day/batch
        loss = masked_mse(out.float(), labels[: len(out)])
        with torch.no_grad():
            evaluated = net(x, offsets, instruments) if day_model else net(x)       # padded evaluation
    loss.backward()
    assert torch.isfinite(evaluated.float()).all()
    mixed = [(func, dtypes) for func, dtypes in recorder.calls if REDUCED <= dtypes]
    doubles = [(func, dtypes) for func, dtypes in recorder.calls if torch.float64 in dtypes]
    assert not mixed, f"{name}: ops given float16 and bfloat16 together: {mixed[:5]}"
    assert not doubles, f"{name}: float64 reached the network: {doubles[:5]}"


def test_float16_meeting_bfloat16_in_a_promoted_op_is_the_crash_amp_had(rnns_like_cudnn_under_autocast):
    """The RNN's float16 output next to a bfloat16 tensor in ``cat`` raises CUDA's error on CPU too; the models'
    RNN outputs go through ``in_autocast_dtype`` (without it the GATs and HIST cases above fail)."""
    net = small("gats")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = net.rnn(torch.randn(5, 60, 6))[0][:, -1]                      # float16, as cuDNN gives it
        assert hidden.dtype == torch.float16
        with pytest.raises(RuntimeError, match="Unexpected floating ScalarType in at::autocast::prioritize"):
            torch.cat([hidden, net.transformation(hidden)], dim=-1)
        cast = in_autocast_dtype(hidden)
        assert cast.dtype == torch.bfloat16 and torch.cat([cast, net.transformation(cast)], dim=-1).isfinite().all()
