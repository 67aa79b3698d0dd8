"""``alphatune models list [--json]``: every registered model with its Qlib defaults and valid ranges (``name=default
[low, high]``, ``{choices}``), batch mode and size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from alphatune import models
from alphatune.arguments import option
from alphatune.models.registry import ModelSpec


def describe(spec: ModelSpec) -> dict[str, Any]:
    """One model as plain data: Qlib's class, batch mode, parameter count and every hyperparameter with its default
    and valid range or choices (from the model's declaration)."""
    cls = spec.hyperparameters_class()
    hyperparameters = {}
    for name in cls.names():
        info = cls.field_info(name)
        entry: dict[str, Any] = {"default": info["default"], "network": info["network"]}
        if info["choices"] is not None:
            entry["choices"] = list(info["choices"])
        else:
            entry["range"] = [info["low"], info["high"]]
        hyperparameters[name] = entry
    net = models.build(spec.name)
    return {
        "name": spec.name,
        "network": spec.network,
        "qlib_class": f"{spec.qlib_module}.{spec.qlib_class}",
        "batch_mode": spec.batch_mode,
        "pretrained_base": spec.pretrained_base,
        "parameters": sum(parameter.numel() for parameter in net.parameters()),
        "hyperparameters": hyperparameters,
    }


def as_text(entry: dict[str, Any]) -> str:
    """A few aligned lines for one model."""
    def settings(network: bool) -> str:
        return "  ".join(f"{key}={value['default']} {_valid(value)}" for key, value in entry["hyperparameters"].items()
                         if value["network"] is network)

    batch = "one trading day per batch" if entry["batch_mode"] == "day" else "random minibatches of rows"
    base = "; starts from a pretrained LSTM/GRU base" if entry["pretrained_base"] else ""
    return (f"{entry['name']:<12} {entry['parameters']:>9,} parameters  {batch}{base}  (Qlib: {entry['qlib_class']})\n"
            f"  network   {settings(True)}\n"
            f"  training  {settings(False)}")


def _valid(entry: dict[str, Any]) -> str:
    """A hyperparameter's valid values: ``{a,b}`` or ``[low, high]`` (an open end is ``-inf``/``inf``)."""
    if "choices" in entry:
        return "{" + ",".join(map(str, entry["choices"])) + "}"
    low, high = entry["range"]
    return f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"


@dataclass
class ListOptions:
    """``alphatune models list``."""

    json: bool = option(False, "print a JSON list instead of text", action="store_true")


def list_main(options: ListOptions) -> int:
    entries = [describe(spec) for spec in models.REGISTRY.values()]
    print(json.dumps(entries, indent=2) if options.json else "\n\n".join(as_text(entry) for entry in entries))
    return 0
