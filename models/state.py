"""A fit's training state: everything ``Trainer.fit(resume=...)`` needs to continue exactly where a fit stopped.

``snapshot`` makes the state after the last finished epoch: the epochs so far, the current and best weights, the
optimizer's state, the shuffling generator and torch's random state (CPU, and the device's on CUDA), the loss
scaler's. It holds plain tensors, numbers and strings only (``torch.load(weights_only=True)`` reads it back) and is
a copy: training may go on while it is being written. ``restore`` loads one into a new fit; ``read_training_state``
reads one from a file, safely.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphatune.models.epochs import EpochMetrics, FitResult
from alphatune.storage import load_tensors

TRAINING_STATE_FORMAT = 1


@dataclass
class FitState:
    """What one fit carries from epoch to epoch (and what a training state saves besides the weights)."""

    optimizer: torch.optim.Optimizer
    result: FitResult = field(default_factory=FitResult)
    patience: int = 0
    best_valid: tuple[float, float] = (math.nan, math.nan)  # (valid_loss, valid_ic) of the best epoch
    best_state: dict[str, torch.Tensor] | None = None


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy on the CPU (never a view of the live tensors: training goes on while a copy is being written)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _copy(value: Any) -> Any:
    """A copy of an optimizer's ``state_dict`` whose tensors training will not change underneath."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def snapshot(net: torch.nn.Module, fit: FitState, generator: torch.Generator, device: torch.device,
             scaler: Any = None) -> dict[str, Any]:
    """The training state after ``fit``'s last finished epoch (see the module doc)."""
    result = fit.result
    return {"format": TRAINING_STATE_FORMAT, "history": [asdict(metrics) for metrics in result.history],
            "best_epoch": result.best_epoch, "best_score": result.best_score, "patience": fit.patience,
            "best_valid": list(fit.best_valid),
            "net": _cpu(net.state_dict()), "best_net": _cpu(fit.best_state) if fit.best_state else None,
            "optimizer": _copy(fit.optimizer.state_dict()), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "scaler": scaler.state_dict() if scaler is not None else None}


def restore(state: dict[str, Any], net: torch.nn.Module, fit: FitState, generator: torch.Generator,
            device: torch.device, n_epochs: int, scaler: Any = None) -> None:
    """Load a training state into the network, the optimizer, the generators and ``fit``; ``ValueError`` when it
    is not one, does not fit the network, or holds more epochs than ``n_epochs``."""
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"not a training state of format {TRAINING_STATE_FORMAT}")
    try:
        net.load_state_dict(state["net"])
        fit.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"the training state does not fit this network: {error}") from None
    history = [EpochMetrics(**metrics) for metrics in state["history"]]
    if len(history) > n_epochs:
        raise ValueError(f"the training state has {len(history)} epochs, more than n_epochs {n_epochs}")
    fit.result.history = history
    fit.result.best_epoch, fit.result.best_score = int(state["best_epoch"]), float(state["best_score"])
    fit.patience, fit.best_valid = int(state["patience"]), tuple(state["best_valid"])
    fit.best_state = ({key: value.to(device) for key, value in state["best_net"].items()}
                      if state["best_net"] is not None else None)
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def read_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A state written by ``torch.save(trainer.training_state(), path)`` (a local path or a URI), read safely
    (``weights_only``) with its tensors on ``device``. ``ValueError`` naming the file when it is not such a state."""
    try:
        state = load_tensors(path, device)
    except Exception as error:  # a torn or foreign file: many exception types, all meaning "not loadable"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a training state ({first})") from None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"{path}: not a training state of format {TRAINING_STATE_FORMAT}")
    return state
