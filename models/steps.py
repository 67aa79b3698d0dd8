"""Training steps with static shapes, which a CUDA graph captures whole.

At Qlib's sizes a GPU training step is launch-bound: hundreds of small kernels, each waiting on the CPU. A
``StaticStep`` makes every step the same work on the same buffers, so the whole step (gather the batch, forward,
loss, backward, gradient clipping, optimizer step) is captured once as a CUDA graph and replayed with one launch:

* row models take ``batch_size`` rows of the device-resident segment through a static index buffer (the last
  partial batch is dropped, as Qlib drops it, so every step has the same shape);
* day models take one day padded to the segment's widest day, with a mask that the network (``forward_days``:
  attention, concept and stock modules, memory attention) and the loss honour: padding changes no real row's
  score, loss or gradient (tests check it against the unpadded step).

The first ``WARMUP`` steps run eagerly (on a side stream on CUDA: cuDNN and the optimizer set themselves up),
then the step is captured, its first replay is checked against the eager step from the same state (loss and
gradients' norm within ``REPLAY_TOLERANCE``: ``check_replay``), and every later step replays it. Capture needs a
capturable optimizer (``Adam(..., capturable=True)``) and no loss scaler; if capture fails or the first replay
disagrees, the step runs eagerly from then on, after one warning naming the model and the reason. Off CUDA the
same static step runs eagerly (what the CPU tests exercise, the replay check with a deliberately wrong step).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from alphatune.models.metrics import masked_mse

WARMUP = 3


def pad_days(offsets: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows [days, width], mask [days, width])`` of a segment's days: each day's row numbers, padded to the
    widest day with the day's first row (masked out), and which slots are real."""
    counts = np.diff(offsets)
    width = int(counts.max())
    slots = np.arange(width)[None, :]
    mask = slots < counts[:, None]
    rows = np.where(mask, offsets[:-1, None] + slots, offsets[:-1, None])
    return torch.as_tensor(rows, device=device), torch.as_tensor(mask, device=device)


class StaticStep:
    """One training step on fixed buffers; called with a batch (row indices ``[batch_size]``, or a day number
    ``[1]``, on the device), it fills the buffers, runs (or replays) the step and returns the step's loss.

    ``segment`` holds ``features``, ``labels``, ``instrument_index`` (and, for day models, ``offsets``) as device
    tensors; ``autocast`` gives the step's autocast context (``nullcontext`` without amp); ``graphs``: try to
    capture it in a CUDA graph.
    """

    def __init__(self, net: torch.nn.Module, segment: Any, optimizer: torch.optim.Optimizer, grad_clip: float,
                 autocast: Callable[[], contextlib.AbstractContextManager], day_model: bool, batch_rows: int,
                 graphs: bool) -> None:
        self.net, self.segment, self.optimizer = net, segment, optimizer
        self.grad_clip, self.autocast, self.day_model = grad_clip, autocast, day_model
        device = segment.features.device
        if day_model:
            self.day_rows, self.day_mask = pad_days(segment.offsets, device)
            self.index = torch.zeros(1, dtype=torch.int64, device=device)
        else:
            self.index = torch.zeros(batch_rows, dtype=torch.int64, device=device)
        self.graphs = graphs and device.type == "cuda"
        self.calls = 0
        self.graph: Any = None
        self.loss: torch.Tensor | None = None  # the captured step's loss (read after each replay)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(x, labels, mask, instruments)`` of the batch in ``self.index``: rows ``[B, F]`` and ``[B]``, or one
        padded day ``[1, W, F]`` and ``[1, W]`` (padding: zero features, NaN labels, masked)."""
        seg = self.segment
        if not self.day_model:
            return seg.features.index_select(0, self.index), seg.labels.index_select(0, self.index), None, None
        rows = self.day_rows.index_select(0, self.index)[0]                       # [W]
        mask = self.day_mask.index_select(0, self.index)                          # [1, W]
        x = seg.features.index_select(0, rows) * mask[0, :, None]                 # [W, F], padding zero
        labels = torch.where(mask[0], seg.labels.index_select(0, rows), math.nan)
        instruments = seg.instrument_index.index_select(0, rows)
        return x[None], labels[None], mask, instruments[None]

    def forward_loss(self) -> torch.Tensor:
        """The batch's loss (Qlib's masked MSE) with the network in its current mode."""
        x, labels, mask, instruments = self.batch()
        with self.autocast():
            out = self.net.forward_days(x, mask, instruments) if self.day_model else self.net(x)
        return masked_mse(out.float(), labels)

    def run(self) -> torch.Tensor:
        """The whole step, eagerly, on the buffers: forward, loss, backward, clip, optimizer step."""
        loss = self.forward_loss()
        loss.backward()
        torch.nn.utils.clip_grad_value_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.index.copy_(batch)
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.loss
        if self.graphs and self.calls > WARMUP:
            graph = self.capture()
            if graph is not None:
                return self.adopt(graph)
        self.optimizer.zero_grad(set_to_none=True)
        if self.graphs:  # warm-up on a side stream, as CUDA graph capture wants it
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.run()
            torch.cuda.current_stream().wait_stream(side)
            return loss
        return self.run()

    def capture(self) -> Any:
        """The step captured in a CUDA graph (its loss in ``self.loss``), or ``None`` after one warning when capture
        fails (the step then runs eagerly)."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(graph):
                self.loss = self.run()
        except Exception as error:  # an op that cannot be captured, a non-capturable optimizer, ...
            self._fall_back(f"capture failed: {_first_line(error)}")
            return None
        return graph

    def adopt(self, graph: Any) -> torch.Tensor:
        """Replay ``graph`` (anything with ``replay()`` that runs the step on the buffers and leaves its loss in
        ``self.loss``) once and check it against the eager step from the same state (``check_replay``): when they
        agree the graph serves every later step, else the step stays eager after one warning naming the model.
        Either way the batch is trained once, and its loss returned."""
        try:
            problem, loss = check_replay(lambda: (graph.replay(), self.loss)[1], self._eager_step,
                                         self.net, self.optimizer)
        except Exception as error:
            problem, loss = f"its first replay failed: {_first_line(error)}", self._eager_step()
        if problem is not None:
            self._fall_back(problem)
            return loss
        self.graph = graph
        return loss

    def _eager_step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=False)
        return self.run()

    def _fall_back(self, why: str) -> None:
        self.graphs, self.graph, self.loss = False, None, None
        warnings.warn(f"CUDA graphs off for {type(self.net).__name__} in this fit, the step runs eagerly: {why}",
                      stacklevel=4)


REPLAY_TOLERANCE = 1e-3  # relative, on the step's loss and its gradients' norm (TF32 and amp round differently)


def check_replay(replay: Callable[[], torch.Tensor], eager: Callable[[], torch.Tensor], net: torch.nn.Module,
                 optimizer: torch.optim.Optimizer) -> tuple[str | None, torch.Tensor]:
    """Run a captured step once (``replay``) and the same step eagerly (``eager``) from the same weights, optimizer
    state and random state; ``(why they differ or None, the eager step's loss)``. They must agree on the loss and
    on the gradients' norm within ``REPLAY_TOLERANCE`` (relative, plus 1e-6 absolute). Afterwards the network and
    the optimizer hold the eager step's result: the batch is trained once."""
    params = [parameter for parameter in net.parameters() if parameter.requires_grad]
    tensors = [*params, *(value for state in optimizer.state.values() for value in state.values()
                          if isinstance(value, torch.Tensor))]  # weights and optimizer moments, kept in place:
    saved = [tensor.detach().clone() for tensor in tensors]       # a CUDA graph holds their memory
    cuda = any(parameter.is_cuda for parameter in params)
    rng = (torch.cuda.get_rng_state() if cuda else None, torch.get_rng_state())
    replayed = float(replay())
    replayed_norm = _grad_norm(params)
    with torch.no_grad():
        for tensor, value in zip(tensors, saved):
            tensor.copy_(value)
    if cuda:
        torch.cuda.set_rng_state(rng[0])
    torch.set_rng_state(rng[1])
    loss = eager()
    eager_loss, eager_norm = float(loss), _grad_norm(params)
    for what, got, expected in (("loss", replayed, eager_loss), ("gradient norm", replayed_norm, eager_norm)):
        if not math.isclose(got, expected, rel_tol=REPLAY_TOLERANCE, abs_tol=1e-6):
            return (f"its first replay gave {what} {got:.6g}, the eager step {expected:.6g} from the same state "
                    f"(tolerance {REPLAY_TOLERANCE:g} relative)"), loss
    return None, loss


def _grad_norm(params: list[torch.Tensor]) -> float:
    grads = [parameter.grad.detach().double().norm() for parameter in params if parameter.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
