"""Mixed precision on every model: no float64 reaches a network's forward, and no op mixes two reduced
precisions (what CUDA autocast refuses: "Unexpected floating ScalarType in at::autocast::prioritize"); and amp
where the device cannot run it: said once, trained in float32, recorded as float32.

CUDA autocast runs cuDNN's LSTM and GRU in float16 even under bfloat16 autocast. These tests make the CPU's RNNs
do the same under autocast, then run every model's training step and padded evaluation under CPU bfloat16
autocast, recording the dtypes every torch function receives. They hold on every CPU: the RNNs are emulated in
float32 (oneDNN's bfloat16 LSTM needs AVX-512), and the other ops have bfloat16 kernels (or reference ones) on
any x86 CPU. ``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN behave as on an AVX2-only CPU, so the refusal is tested
on every machine in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from alphatune import models
from alphatune.models.config import TrainConfig
from alphatune.models.days import in_autocast_dtype
from alphatune.models.precision import Precision, amp_unavailable
from alphatune.models.metrics import masked_mse
from limits import HANG_SECONDS

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
    """Under autocast, an RNN returns float16, as cuDNN's does on CUDA. The RNN itself runs in float32 outside
    autocast, so this holds on every CPU: oneDNN has no bfloat16 LSTM below AVX-512, and what these tests check is
    the dtypes the rest of each network meets, not the CPU's RNN kernels."""
    for cls in (nn.LSTM, nn.GRU):
        original = cls.forward

        def forward(self, input, hx=None, _original=original):
            if not torch.is_autocast_enabled("cpu"):
                return _original(self, input, hx)
            with torch.autocast("cpu", enabled=False):
                output, state = _original(self, input.float(), hx)
            state = tuple(part.half() for part in state) if isinstance(state, tuple) else state.half()
            return output.half(), state

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


AVX2_ONLY = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_amp_where_the_cpu_cannot_run_it_trains_in_float32_says_so_once_and_reports_it() -> None:
    """On an AVX2-only CPU (oneDNN capped to AVX2 here) a bfloat16 LSTM does not run: the trainer trains in float32
    exactly as without amp, warns once for two fits, and its precision says float32."""
    script = textwrap.dedent("""
        import warnings
        import numpy as np
        import torch
        from alphatune import models
        from alphatune.models.precision import amp_unavailable
        from planted import planted_dataset
        torch.set_num_threads(1)
        print("unavailable:", amp_unavailable("cpu"))
        ds = planted_dataset(n_days=30, n_stocks=12, seed=1)
        hp = {"hidden_size": 8, "num_layers": 1, "n_epochs": 2, "batch_size": 64, "seed": 3}
        plain, _ = models.fit("lstm", ds, hp)
        mixed, _ = models.fit("lstm", ds, hp, amp=True)
        again, _ = models.fit("lstm", ds, hp, amp=True)
        print("precision:", mixed.precision.dtype, mixed.precision.amp)
        print("same:", np.array_equal(plain.predict(ds, "test").to_numpy(), mixed.predict(ds, "test").to_numpy()))
    """)
    tests = os.path.dirname(__file__)
    env = {**AVX2_ONLY, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert lines["unavailable"].startswith("this CPU has no bfloat16 kernels")
    said = [line for line in done.stderr.splitlines() if "amp asked for" in line]
    assert len(said) == 1, done.stderr[-3000:]
    assert "UserWarning: amp asked for, but this CPU has no bfloat16 kernels" in said[0]
    assert said[0].endswith("training in float32")
    assert lines["precision"] == "float32 False"
    assert lines["same"] == "True"


@pytest.mark.skipif(amp_unavailable("cpu") is not None,
                    reason=f"this CPU cannot train in bfloat16 ({amp_unavailable('cpu')})")
def test_amp_where_the_cpu_can_run_it_trains_in_bfloat16() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say
        precision = Precision.of(TrainConfig(amp=True))
    assert precision.amp and precision.dtype == "bfloat16" and precision.note is None


def test_without_amp_nothing_is_probed_or_said() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision = Precision.of(TrainConfig())
    assert not precision.amp and precision.dtype == "float32" and precision.note is None
