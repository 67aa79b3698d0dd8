"""The registry of the eight Qlib models: a name → where its hyperparameters and network are declared, how it is
batched, and Qlib's class for it.

Each model's hyperparameters (names, types, Qlib's Alpha360 defaults, valid ranges) are declared once, beside its
network, as a typed dataclass (``models.hyperparameters``); this registry only names them, by import path, so that
checking a model name imports nothing heavy. ``ModelSpec.hyperparameters`` turns a flat dict into the checked
object (the one place values are validated).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from alphatune.models.hyperparameters import Hyperparameters

BatchMode = Literal["rows", "day"]


def _load(path: str) -> Any:
    module_name, name = path.split(":")
    return getattr(importlib.import_module(module_name), name)


@dataclass(frozen=True)
class ModelSpec:
    """One model: its declarations (``"module:Name"``), how it is batched, what it needs, Qlib's class for it."""

    name: str
    network: str
    hyperparameter_class: str
    batch_mode: BatchMode
    qlib_class: str
    qlib_module: str
    pretrained_base: bool = False  # GATs, HIST, IGMTF start from an LSTM/GRU base
    uses_concepts: bool = False    # HIST needs the dataset's stock→concept matrix

    def network_class(self) -> type["torch.nn.Module"]:
        return _load(self.network)

    def hyperparameters_class(self) -> type["Hyperparameters"]:
        return _load(self.hyperparameter_class)

    def hyperparameters(self, values: dict[str, Any] | None = None) -> "Hyperparameters":
        """The model's checked hyperparameters: ``values`` (Qlib's names) over Qlib's Alpha360 defaults;
        ``ValueError`` naming the model, the hyperparameter and what it may be."""
        return self.hyperparameters_class().from_dict(values)

    @property
    def defaults(self) -> dict[str, Any]:
        """Qlib's Alpha360 values of every hyperparameter (a view of the declaration)."""
        return self.hyperparameters().to_dict()

    def check_dataset(self, ds: Any) -> None:
        """``ValueError`` when ``ds`` lacks what this model needs besides its rows: HIST's stock→concept matrix,
        linking at least one of its instruments to a concept."""
        if not self.uses_concepts:
            return
        if getattr(ds, "concepts", None) is None:
            raise ValueError(f"{self.name} needs a stock→concept table and {ds.source} has none: pass --concepts FILE "
                             f"(CSV or Parquet with symbol and concept columns) with the source; a prepared "
                             f"directory keeps the concepts it was prepared with")
        if ds.concepts.shape[1] == 0 or not ds.concepts.any():
            raise ValueError(f"{self.name}: the concept table links none of the {len(ds.instruments)} instruments of "
                             f"{ds.source} to a concept (symbols like {ds.instruments[0]} expected)")


def _spec(name: str, module: str, network: str, hyperparameters: str, **rest: Any) -> ModelSpec:
    return ModelSpec(name=name, network=f"alphatune.models.{module}:{network}",
                     hyperparameter_class=f"alphatune.models.{module}:{hyperparameters}", **rest)


REGISTRY: dict[str, ModelSpec] = {
    "lstm": _spec("lstm", "lstm", "LSTM", "LSTMHyperparameters", batch_mode="rows",
                  qlib_class="LSTM", qlib_module="qlib.contrib.model.pytorch_lstm"),
    "gru": _spec("gru", "gru", "GRU", "GRUHyperparameters", batch_mode="rows",
                 qlib_class="GRU", qlib_module="qlib.contrib.model.pytorch_gru"),
    "transformer": _spec("transformer", "transformer", "Transformer", "TransformerHyperparameters", batch_mode="rows",
                         qlib_class="TransformerModel", qlib_module="qlib.contrib.model.pytorch_transformer"),
    "localformer": _spec("localformer", "localformer", "Localformer", "LocalformerHyperparameters", batch_mode="rows",
                         qlib_class="LocalformerModel", qlib_module="qlib.contrib.model.pytorch_localformer"),
    "tcn": _spec("tcn", "tcn", "TCN", "TCNHyperparameters", batch_mode="rows",
                 qlib_class="TCN", qlib_module="qlib.contrib.model.pytorch_tcn"),
    "gats": _spec("gats", "gats", "GATs", "GATsHyperparameters", batch_mode="day", pretrained_base=True,
                  qlib_class="GATs", qlib_module="qlib.contrib.model.pytorch_gats"),
    "hist": _spec("hist", "hist", "HIST", "HISTHyperparameters", batch_mode="day", pretrained_base=True,
                  uses_concepts=True, qlib_class="HIST", qlib_module="qlib.contrib.model.pytorch_hist"),
    "igmtf": _spec("igmtf", "igmtf", "IGMTF", "IGMTFHyperparameters", batch_mode="day", pretrained_base=True,
                   qlib_class="IGMTF", qlib_module="qlib.contrib.model.pytorch_igmtf"),
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (case-insensitive); a clear error lists the known names."""
    spec = REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")
    return spec
