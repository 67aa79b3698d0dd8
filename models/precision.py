"""The trainer's device and precision policy: what ``amp``, ``tf32``, ``graphs`` and ``compile`` become on a device.

``Precision.of(config)`` decides once per trainer:

* **amp** (mixed precision): on CUDA, bfloat16 autocast (float16 with a loss scaler on a GPU without bfloat16);
  on a CPU, bfloat16 autocast only where oneDNN has bfloat16 kernels for every op the networks use: torch must
  say so (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) and a tiny LSTM must run forward and backward under
  autocast (oneDNN has no bfloat16 LSTM below AVX-512; ``ONEDNN_MAX_CPU_ISA=AVX2`` shows the same on any CPU).
  Where amp cannot run, training is float32 and ``note`` says why, in a warning once per process; whoever
  records a run records ``dtype``, what really ran, not what was asked.
* **tf32**: float32 matmuls and convolutions on TensorFloat-32, CUDA only (``None`` means on there).
* **graphs**: static steps captured in CUDA graphs, CUDA only (``None`` means on there; ``True`` elsewhere runs the
  same static steps eagerly); off with ``compile`` or a float16 loss scaler, which capture does not take.
* **compile**: ``torch.compile``, CUDA only.
* **eval_rows**: rows per evaluation call (512 on a CPU, where smaller calls are faster per row; large on CUDA).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from alphatune.models.config import TrainConfig

CPU_AMP_MISSING = ("this CPU has no bfloat16 kernels for the networks' ops (oneDNN needs AVX-512 for a "
                   "bfloat16 LSTM)")


@functools.lru_cache(maxsize=None)
def cpu_bf16_unavailable() -> str | None:
    """Why bfloat16 autocast cannot train the networks on this CPU, or ``None`` when it can (probed once)."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return CPU_AMP_MISSING
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rnn = torch.nn.LSTM(2, 2, batch_first=True)
            out, _ = rnn(torch.zeros(1, 2, 2))
        out.float().sum().backward()
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"{CPU_AMP_MISSING}: {first}"
    return None


def amp_unavailable(device: str | torch.device) -> str | None:
    """Why ``amp`` cannot run on ``device`` (a one-line reason), or ``None`` when it can."""
    kind = torch.device(device).type
    if kind == "cuda":
        return None
    if kind == "cpu":
        return cpu_bf16_unavailable()
    return f"amp is not supported on {kind}"


_said: set[str] = set()


@dataclass(frozen=True)
class Precision:
    """What a trainer's speed options became on its device (see the module doc)."""

    device: torch.device
    amp_dtype: torch.dtype | None   # the autocast dtype, None for float32
    note: str | None                # why amp is off although it was asked for
    graphs: bool                    # static steps (captured in CUDA graphs on CUDA)
    compile: bool
    tf32: bool | None               # None off CUDA
    eval_rows: int

    @property
    def amp(self) -> bool:
        """Whether training really runs in mixed precision."""
        return self.amp_dtype is not None

    @property
    def dtype(self) -> str:
        """The training precision by name: ``float32``, ``bfloat16`` or ``float16``."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")

    @property
    def loss_scaling(self) -> bool:
        """float16 needs a loss scaler (bfloat16 does not)."""
        return self.amp_dtype == torch.float16

    @classmethod
    def of(cls, config: TrainConfig, warn: bool = True) -> "Precision":
        """The policy for ``config`` on its device; with ``warn``, a refused amp or graphs is a ``UserWarning``."""
        device = torch.device(config.device)
        cuda = device.type == "cuda"
        amp_dtype, note = None, None
        if config.amp:
            note = amp_unavailable(device)
            if note is not None:
                note = f"amp asked for, but {note}: training in float32"
            elif cuda:
                amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                amp_dtype = torch.bfloat16
        if note is not None and warn and note not in _said:
            _said.add(note)  # once per process: a search or an evaluation builds many trainers
            warnings.warn(note, stacklevel=3)
        compile_ = bool(config.compile) and cuda
        graphs = config.graphs if config.graphs is not None else cuda
        if graphs and (compile_ or amp_dtype == torch.float16):
            why = "compile" if compile_ else "a float16 loss scaler (no bfloat16 on this GPU)"
            if warn:
                warnings.warn(f"CUDA graphs off: they do not combine with {why}", stacklevel=3)
            graphs = False
        if graphs and not cuda and warn:
            warnings.warn("CUDA graphs need a CUDA device: the same static steps run eagerly", stacklevel=3)
        tf32 = (config.tf32 is not False) if cuda else None
        if config.eval_batch_size is not None:
            eval_rows = int(config.eval_batch_size)
        else:  # measured on CPU: LSTM/GRU/TCN inference costs 1.3-2.7x more per row in 2048-row calls than in
            eval_rows = max(config.batch_size, 1024) * 4 if cuda else 512  # 256-512-row ones; a GPU wants more
        return cls(device, amp_dtype, note, bool(graphs), compile_, tf32, eval_rows)

    def apply(self) -> None:
        """Set the process-wide switches this policy needs (TF32 on CUDA; one trainer per trial process)."""
        if self.tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
