"""Qlib's eight Alpha360 networks, one registry, one shared trainer.

The registry (``REGISTRY``, ``get_spec``, ``validate``) imports nothing heavy; everything else (torch, the
networks, the trainer) is imported on first use, so that checking a model name or a hyperparameter stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import REGISTRY, TRAINING_KEYS, ModelSpec, get_spec, validate

_LAZY = {
    "TrainConfig": "models.config",
    "build": "models.factory", "train_config": "models.factory", "from_hyperparameters": "models.factory",
    "load_qlib_weights": "models.qlib_weights", "read_state_dict": "models.qlib_weights",
    "Trainer": "models.trainer", "EpochMetrics": "models.trainer", "FitResult": "models.trainer",
    "fit": "models.trainer", "read_training_state": "models.trainer",
    "load_checkpoint": "models.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = ["REGISTRY", "TRAINING_KEYS", "ModelSpec", "get_spec", "validate", *_LAZY]
