"""Networks and training configs from flat hyperparameter dicts (Qlib's names), checked against the registry."""

from __future__ import annotations

from typing import Any

import torch

from alphatune.models.config import TrainConfig
from alphatune.models.registry import TRAINING_KEYS, get_spec, validate


def build(name: str, **hyperparameters: Any) -> torch.nn.Module:
    """The network of model ``name`` with Qlib's Alpha360 defaults for every hyperparameter not given.

    Only network hyperparameters are accepted (``ModelSpec.network_keys``); a training hyperparameter such as
    ``lr`` gets an error that points to ``train_config``. Unknown names and out-of-range values raise
    ``ValueError``.
    """
    spec = get_spec(name)
    training = [key for key in hyperparameters if key not in spec.network_keys and key in spec.defaults]
    if training:
        raise ValueError(f"{spec.name}: {', '.join(training)} are training hyperparameters; "
                         f"pass them to models.train_config, not models.build")
    merged = validate(spec, hyperparameters)
    return spec.network_class()(**{key: merged[key] for key in spec.network_keys})


def train_config(name: str, **overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` with model ``name``'s Qlib defaults, updated by ``overrides``.

    ``overrides`` may hold training hyperparameters in Qlib's names (``lr``, ``reg``, ...) and any other
    ``TrainConfig`` field (``device``, ``eval_train``, ...).
    """
    spec = get_spec(name)
    options = {key: overrides.pop(key) for key in list(overrides) if key in TrainConfig.__dataclass_fields__
               and key not in spec.defaults and key not in TRAINING_KEYS}
    merged = validate(spec, overrides)
    return TrainConfig(
        n_epochs=int(merged["n_epochs"]), lr=float(merged["lr"]), early_stop=int(merged["early_stop"]),
        batch_size=int(merged["batch_size"]), metric=merged["metric"], optimizer=merged["optimizer"],
        weight_decay=float(merged.get("reg", merged.get("weight_decay", 0.0))),
        batch_mode=spec.batch_mode, seed=merged.get("seed"), **options)


def from_hyperparameters(name: str, hyperparameters: dict[str, Any], **options: Any
                         ) -> tuple[torch.nn.Module, TrainConfig]:
    """Split one flat hyperparameter dict (as a search space or ``best.yaml`` holds it) into network and config."""
    spec = get_spec(name)
    validate(spec, hyperparameters)
    net_hp = {key: value for key, value in hyperparameters.items() if key in spec.network_keys}
    train_hp = {key: value for key, value in hyperparameters.items() if key not in spec.network_keys}
    return build(name, **net_hp), train_config(name, **train_hp, **options)
