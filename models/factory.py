"""Networks and training configs from a model's typed hyperparameters (or a flat dict of them, Qlib's names)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alphatune.models.config import RUN_OPTIONS, TrainConfig
from alphatune.models.hyperparameters import Hyperparameters
from alphatune.models.registry import get_spec


def checked_hyperparameters(name: str, values: dict[str, Any] | Hyperparameters | None = None) -> Hyperparameters:
    """Model ``name``'s checked hyperparameters: a flat dict over Qlib's Alpha360 defaults, or an object as is."""
    spec = get_spec(name)
    if isinstance(values, Hyperparameters):
        if values.model != spec.name:
            raise ValueError(f"{spec.name}: hyperparameters of {values.model} given")
        return values
    return spec.hyperparameters(values)


def build(name: str | Hyperparameters, **network_values: Any) -> torch.nn.Module:
    """The network of a model: from its hyperparameters object, or from its name and network hyperparameters
    (Qlib's defaults for the rest). A training hyperparameter such as ``lr`` is refused with a pointer to
    ``train_config``."""
    if isinstance(name, Hyperparameters):
        if network_values:
            raise ValueError("build(hyperparameters) takes no further values")
        hp = name
    else:
        spec = get_spec(name)
        cls = spec.hyperparameters_class()
        training = [key for key in network_values if key in cls.names() and not cls.field_info(key)["network"]]
        if training:
            raise ValueError(f"{spec.name}: {', '.join(training)} are training hyperparameters; pass them to "
                             f"models.train_config, not models.build")
        hp = cls.from_dict(network_values)
    return get_spec(hp.model).network_class()(**hp.network_kwargs())


def train_config(name: str | Hyperparameters, **overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` from a model's hyperparameters (or its name and training hyperparameters, Qlib's defaults
    for the rest) and run options (``device``, ``eval_train``, ``amp``, ...)."""
    options = {key: overrides.pop(key) for key in list(overrides) if key in RUN_OPTIONS}
    hp = name if isinstance(name, Hyperparameters) else checked_hyperparameters(name, overrides)
    if isinstance(name, Hyperparameters) and overrides:
        raise ValueError(f"train_config(hyperparameters) takes run options only; got {sorted(overrides)}")
    return TrainConfig(n_epochs=hp.n_epochs, lr=hp.lr, early_stop=hp.early_stop, batch_size=hp.batch_size,
                       metric=hp.metric, optimizer=hp.optimizer, weight_decay=hp.weight_decay_value,
                       batch_mode=get_spec(hp.model).batch_mode, seed=hp.seed, **options)


def from_hyperparameters(name: str, values: dict[str, Any] | Hyperparameters, **options: Any
                         ) -> tuple[torch.nn.Module, TrainConfig]:
    """The network and the training config of one flat hyperparameter dict (as a search space or ``best.yaml``
    holds it), checked once; ``options`` are run options."""
    hp = checked_hyperparameters(name, values)
    return build(hp), train_config(hp, **options)


def seeded_network(hp: Hyperparameters) -> torch.nn.Module:
    """The network of ``hp``, built after seeding numpy and torch with ``hp.seed`` (when it has one): the same seed
    gives the same initial weights."""
    if hp.seed is not None:
        np.random.seed(hp.seed)
        torch.manual_seed(hp.seed)
    return build(hp)
