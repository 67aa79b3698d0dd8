"""The explicit registry of the eight Qlib models: defaults, bounds, batch mode and Qlib's class for each.

Defaults are Qlib's published Alpha360 values (the benchmark YAMLs), keyed by Qlib's constructor argument names
so that a configuration moves between this project and Qlib's ``qrun`` unchanged. Network classes are named by
import path and imported on first use, so ``alphatune models list`` and the search driver stay light.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

BatchMode = Literal["rows", "day"]

# Training hyperparameters shared by every model (Qlib's names). ``reg`` is the weight decay of Qlib's
# Transformer/Localformer; the other models take ``weight_decay`` (Qlib uses 0 for them).
TRAINING_KEYS = ("lr", "n_epochs", "early_stop", "batch_size", "metric", "optimizer", "weight_decay", "seed")

# name -> (low, high) inclusive, or a tuple of allowed values for categorical hyperparameters.
_COMMON_BOUNDS: dict[str, Any] = {
    "d_feat": (1, 64),
    "lr": (1e-7, 1.0),
    "n_epochs": (1, 10_000),
    "early_stop": (1, 10_000),
    "batch_size": (1, 1_000_000),
    "metric": ("loss", "ic"),
    "optimizer": ("adam", "gd"),
    "weight_decay": (0.0, 1.0),
    "reg": (0.0, 1.0),
    "dropout": (0.0, 0.99),
    "hidden_size": (1, 4096),
    "num_layers": (1, 16),
    "d_model": (2, 4096),
    "nhead": (1, 64),
    "n_chans": (1, 4096),
    "kernel_size": (2, 15),
    "base_model": ("LSTM", "GRU"),
    "k_day": (1, 1000),
    "n_neighbor": (1, 10_000),
    "seed": (0, 2**32 - 1),
}


@dataclass(frozen=True)
class ModelSpec:
    """One model: where its network lives, its Qlib defaults, and how it is batched."""

    name: str
    network: str  # "module:Class"
    defaults: dict[str, Any]
    network_keys: tuple[str, ...]
    batch_mode: BatchMode
    qlib_class: str
    qlib_module: str
    pretrained_base: bool = False  # GATs, HIST, IGMTF start from an LSTM/GRU base
    uses_concepts: bool = False  # HIST needs the dataset's stock→concept matrix
    bounds: dict[str, Any] = field(default_factory=dict)

    def network_class(self) -> type["torch.nn.Module"]:
        module_name, class_name = self.network.split(":")
        return getattr(importlib.import_module(module_name), class_name)

    def bound(self, key: str) -> Any:
        return self.bounds.get(key, _COMMON_BOUNDS.get(key))


_RNN_NET = {"d_feat": 6, "hidden_size": 64, "num_layers": 2, "dropout": 0.0}
_RNN_TRAIN = {"lr": 1e-3, "n_epochs": 200, "early_stop": 20, "batch_size": 800, "metric": "loss",
              "optimizer": "adam", "weight_decay": 0.0}
_FORMER_NET = {"d_feat": 6, "d_model": 64, "nhead": 2, "num_layers": 2, "dropout": 0.0}
_FORMER_TRAIN = {"lr": 1e-4, "n_epochs": 100, "early_stop": 5, "batch_size": 2048, "metric": "loss",
                 "optimizer": "adam", "reg": 1e-3, "seed": 0}
_DAY_TRAIN = {"lr": 1e-4, "n_epochs": 200, "early_stop": 20, "batch_size": 800, "optimizer": "adam",
              "weight_decay": 0.0}

REGISTRY: dict[str, ModelSpec] = {
    "lstm": ModelSpec(
        name="lstm", network="alphatune.models.lstm:LSTM", defaults={**_RNN_NET, **_RNN_TRAIN},
        network_keys=tuple(_RNN_NET), batch_mode="rows",
        qlib_class="LSTM", qlib_module="qlib.contrib.model.pytorch_lstm"),
    "gru": ModelSpec(
        name="gru", network="alphatune.models.gru:GRU", defaults={**_RNN_NET, **_RNN_TRAIN},
        network_keys=tuple(_RNN_NET), batch_mode="rows",
        qlib_class="GRU", qlib_module="qlib.contrib.model.pytorch_gru"),
    "transformer": ModelSpec(
        name="transformer", network="alphatune.models.transformer:Transformer", defaults={**_FORMER_NET, **_FORMER_TRAIN},
        network_keys=tuple(_FORMER_NET), batch_mode="rows",
        qlib_class="TransformerModel", qlib_module="qlib.contrib.model.pytorch_transformer"),
    "localformer": ModelSpec(
        name="localformer", network="alphatune.models.localformer:Localformer", defaults={**_FORMER_NET, **_FORMER_TRAIN},
        network_keys=tuple(_FORMER_NET), batch_mode="rows",
        qlib_class="LocalformerModel", qlib_module="qlib.contrib.model.pytorch_localformer"),
    "tcn": ModelSpec(
        name="tcn", network="alphatune.models.tcn:TCN",
        defaults={"d_feat": 6, "n_chans": 128, "num_layers": 5, "kernel_size": 3, "dropout": 0.5,
                  "lr": 1e-3, "n_epochs": 200, "early_stop": 20, "batch_size": 2000, "metric": "loss",
                  "optimizer": "adam", "weight_decay": 0.0},
        network_keys=("d_feat", "n_chans", "num_layers", "kernel_size", "dropout"), batch_mode="rows",
        qlib_class="TCN", qlib_module="qlib.contrib.model.pytorch_tcn"),
    "gats": ModelSpec(
        name="gats", network="alphatune.models.gats:GATs",
        defaults={**_RNN_NET, "dropout": 0.7, "base_model": "LSTM", **_DAY_TRAIN, "metric": "loss"},
        network_keys=(*_RNN_NET, "base_model"), batch_mode="day", pretrained_base=True,
        qlib_class="GATs", qlib_module="qlib.contrib.model.pytorch_gats"),
    "hist": ModelSpec(
        name="hist", network="alphatune.models.hist:HIST",
        defaults={**_RNN_NET, "base_model": "LSTM", **_DAY_TRAIN, "metric": "ic"},
        network_keys=(*_RNN_NET, "base_model"), batch_mode="day", pretrained_base=True, uses_concepts=True,
        qlib_class="HIST", qlib_module="qlib.contrib.model.pytorch_hist"),
    "igmtf": ModelSpec(
        name="igmtf", network="alphatune.models.igmtf:IGMTF",
        defaults={**_RNN_NET, "base_model": "LSTM", "k_day": 10, "n_neighbor": 10, **_DAY_TRAIN, "metric": "ic"},
        network_keys=(*_RNN_NET, "base_model", "k_day", "n_neighbor"), batch_mode="day", pretrained_base=True,
        qlib_class="IGMTF", qlib_module="qlib.contrib.model.pytorch_igmtf"),
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (case-insensitive); a clear error lists the known names."""
    spec = REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")
    return spec


def validate(spec: ModelSpec, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """Check names and ranges of ``hyperparameters`` for ``spec``; return them merged over the defaults.

    Raises ``ValueError`` naming the model, the hyperparameter and the allowed range.
    """
    merged = dict(spec.defaults)
    allowed = set(spec.defaults) | set(TRAINING_KEYS)
    for key, value in hyperparameters.items():
        if key not in allowed:
            raise ValueError(f"{spec.name}: unknown hyperparameter {key!r}; known: {', '.join(sorted(allowed))}")
        bound = spec.bound(key)
        if isinstance(bound, tuple) and bound and isinstance(bound[0], str):
            if value not in bound:
                raise ValueError(f"{spec.name}: {key}={value!r} is not one of {', '.join(bound)}")
        elif bound is not None and value is not None:
            low, high = bound
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{spec.name}: {key}={value!r} must be a number in [{low}, {high}]")
            if isinstance(low, int) and isinstance(high, int) and not float(value).is_integer():
                raise ValueError(f"{spec.name}: {key}={value!r} must be an integer in [{low}, {high}]")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{spec.name}: {key}={value!r} is out of range [{low}, {high}]")
        merged[key] = value
    if "nhead" in merged and merged["d_model"] % merged["nhead"]:
        raise ValueError(f"{spec.name}: d_model={merged['d_model']} must be divisible by nhead={merged['nhead']}")
    if "d_model" in merged and merged["d_model"] % 2:
        raise ValueError(f"{spec.name}: d_model={merged['d_model']} must be even (sinusoidal positions)")
    return merged
