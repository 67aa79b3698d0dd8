"""Qlib's eight Alpha360 networks, each with its typed hyperparameters; one registry; one shared trainer.

The registry (``REGISTRY``, ``get_spec``) imports nothing heavy; everything else (torch, the networks, the
trainer) is imported on first use, so that checking a model name stays light.
"""

from __future__ import annotations

if __name__ != "alphatune.models":  # a checkout's folder imported as a bare `models`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

import importlib
from typing import Any

from alphatune.models.registry import REGISTRY, ModelSpec, get_spec

_LAZY = {
    "Hyperparameters": ".hyperparameters", "TrainConfig": ".config",
    "build": ".factory", "train_config": ".factory", "from_hyperparameters": ".factory",
    "load_qlib_weights": ".qlib_weights", "read_state_dict": ".qlib_weights",
    "Base": ".bases", "load_base": ".bases", "pretrain_base": ".bases", "read_base": ".bases",
    "DayModel": ".days", "Trainer": ".trainer", "EpochMetrics": ".epochs", "FitResult": ".epochs",
    "initial_network": ".fitting", "fit": ".fitting", "read_training_state": ".state",
    "load_checkpoint": ".checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'alphatune.models' has no attribute {name!r}")


__all__ = ["REGISTRY", "ModelSpec", "get_spec", *_LAZY]
