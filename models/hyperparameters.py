"""Typed hyperparameters: each model declares its own, beside its network, with Qlib's Alpha360 values as defaults.

A model's hyperparameters are one frozen dataclass (``LSTMHyperparameters`` in ``models/lstm.py``, ...) derived
from ``Hyperparameters``, whose fields carry Qlib's constructor argument names, so a configuration moves between
this project and Qlib's ``qrun`` unchanged. Each field (``param``) says its default (Qlib's published Alpha360
value), its valid range or choices, and whether the network takes it. Values are checked once, when the object
is made (``from_dict`` for a flat dict: a space file's point, best.yaml, a Python call); everything downstream
takes the object and trusts it. A whole number given for a float is made a float, and a float that is a whole
number given for an integer is made an integer; anything else out of place is a ``ValueError`` naming the model,
the hyperparameter and what it may be.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar


def param(default: Any, *, low: float | None = None, high: float | None = None,
          choices: tuple[Any, ...] | None = None, network: bool = False, optional: bool = False) -> Any:
    """A hyperparameter field: a number in ``[low, high]`` (an integer when both bounds are), or one of ``choices``;
    ``network``: the network's constructor takes it; ``optional``: ``None`` is allowed (no value)."""
    kind = "choice" if choices is not None else "int" if isinstance(low, int) and isinstance(high, int) else "float"
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "choices": choices,
                                                        "network": network, "optional": optional, "kind": kind})


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """The training hyperparameters every model has (Qlib's names and its most common defaults).

    Subclasses add the network's fields and the weight decay (``weight_decay``; Qlib's Transformer and
    Localformer call it ``reg``: ``DECAY`` names the field) and override defaults where Qlib's config differs.
    ``check`` holds rules across fields (``d_model`` divisible by ``nhead``, ...).
    """

    model: ClassVar[str] = ""
    DECAY: ClassVar[str] = "weight_decay"

    lr: float = param(1e-3, low=1e-7, high=1.0)
    n_epochs: int = param(200, low=1, high=10_000)
    early_stop: int = param(20, low=1, high=10_000)
    batch_size: int = param(800, low=1, high=1_000_000)
    metric: str = param("loss", choices=("loss", "ic"))
    optimizer: str = param("adam", choices=("adam", "gd"))
    seed: int | None = param(None, low=0, high=2**32 - 1, optional=True)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, self.check_value(field.name, getattr(self, field.name)))
        self.check()

    @classmethod
    def check_value(cls, name: str, value: Any) -> Any:
        """``value`` as hyperparameter ``name`` holds it, checked against its declaration (the one rule: instances
        and search spaces both ask it): one of its choices; ``None`` where it is optional; else a finite number in
        its range, a whole number made an integer where the field is one, an integer made a float where it is a
        float. ``ValueError`` naming the model, the hyperparameter and what it may be."""
        meta = cls.field_info(name)
        who = f"{cls.model}: " if cls.model else ""
        if meta["kind"] == "choice":
            if value not in meta["choices"] or isinstance(value, bool) != isinstance(meta["choices"][0], bool):
                raise ValueError(f"{who}{name}={value!r} is not one of "
                                 f"{', '.join(map(str, meta['choices']))}")
            return value
        if value is None and meta["optional"]:
            return None
        low, high = meta["low"], meta["high"]
        integer = meta["kind"] == "int"
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (integer and not float(value).is_integer())):
            raise ValueError(f"{who}{name}={value!r} must be {'an integer' if integer else 'a number'} in "
                             f"[{low}, {high}]" + (" or null" if meta["optional"] else ""))
        if not low <= value <= high:
            raise ValueError(f"{who}{name}={value!r} is out of range [{low}, {high}]")
        return int(value) if integer else float(value)

    def check(self) -> None:
        """Rules across hyperparameters (``ValueError``); none here."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every hyperparameter, in declaration order (the training ones first)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def field_info(cls, name: str) -> dict[str, Any]:
        """``{"default", "low", "high", "choices", "network", "optional", "kind"}`` of one hyperparameter."""
        for field in dataclasses.fields(cls):
            if field.name == name:
                return {"default": field.default, **field.metadata}
        raise KeyError(name)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None) -> "Hyperparameters":
        """The hyperparameters ``values`` sets (Qlib's names), the defaults for the rest; ``ValueError`` naming an
        unknown name or a bad value."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"{cls.model}: unknown hyperparameter {unknown[0]!r}; known: {', '.join(cls.names())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every hyperparameter by its Qlib name (what best.yaml and a checkpoint hold)."""
        return {name: getattr(self, name) for name in self.names()}

    def replace(self, **changes: Any) -> "Hyperparameters":
        """A copy with ``changes`` (checked like any other)."""
        return dataclasses.replace(self, **changes)

    def network_kwargs(self) -> dict[str, Any]:
        """The values the network's constructor takes."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.metadata["network"]}

    @property
    def weight_decay_value(self) -> float:
        """The optimizer's weight decay, whatever Qlib calls it for this model."""
        return float(getattr(self, self.DECAY))


# Fields several models declare alike (each model still lists them, with its own default where Qlib's differs).
def d_feat(default: int = 6) -> Any:
    return param(default, low=1, high=64, network=True)


def hidden_size(default: int = 64) -> Any:
    return param(default, low=1, high=4096, network=True)


def num_layers(default: int = 2) -> Any:
    return param(default, low=1, high=16, network=True)


def dropout(default: float = 0.0) -> Any:
    return param(default, low=0.0, high=0.99, network=True)


def weight_decay(default: float = 0.0) -> Any:
    return param(default, low=0.0, high=1.0)


def base_model(default: str = "LSTM") -> Any:
    return param(default, choices=("LSTM", "GRU"), network=True)
