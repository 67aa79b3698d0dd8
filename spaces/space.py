"""A validated search space for one model (``spaces.load`` makes one from a YAML file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphatune.spaces.distributions import Conditional, Distribution, Param


@dataclass(frozen=True)
class Space:
    """A validated search space for one model.

    ``params``: searched hyperparameters (name → ``Distribution`` or ``Conditional``), in file order, parents
    before their conditionals. ``fixed``: hyperparameters held constant. ``default``: the full flat
    hyperparameter dict of the first point evaluated (``fixed`` plus the searched values, Qlib's published
    Alpha360 config for the shipped spaces). ``source``: the file it was read from.
    """

    model: str
    params: dict[str, Param]
    fixed: dict[str, Any]
    default: dict[str, Any]
    source: str

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: draw every searched hyperparameter from ``trial``; returns them by their own names."""
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if isinstance(param, Conditional):
                parent_value = values[param.given]
                values[name] = param.case(parent_value).suggest(
                    trial, Conditional.optuna_name(name, param.given, parent_value))
            else:
                values[name] = param.suggest(trial, name)
        return values

    def optuna_params(self, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """The Optuna parameter names and values of a point (to enqueue it as a trial)."""
        out: dict[str, Any] = {}
        for name, param in self.params.items():
            if isinstance(param, Conditional):
                out[Conditional.optuna_name(name, param.given, hyperparameters[param.given])] = hyperparameters[name]
            else:
                out[name] = hyperparameters[name]
        return out

    def hyperparameters(self, config: dict[str, Any]) -> dict[str, Any]:
        """The flat hyperparameter dict of a trial: ``fixed`` plus the searched values from a trial ``config``.

        ``config`` is what Tune hands a trial: the searched values by name (plus Optuna's names of conditional
        cases, which are ignored). A searched name missing from ``config`` raises ``KeyError``.
        """
        missing = [name for name in self.params if name not in config]
        if missing:
            raise KeyError(f"trial config lacks searched hyperparameters {missing}; got {sorted(config)}")
        return {**self.fixed, **{name: config[name] for name in self.params}}

    def to_dict(self) -> dict[str, Any]:
        """The space as plain YAML-ready data (``load_dict`` reads it back)."""
        def dist(d: Distribution) -> dict[str, Any]:
            if d.kind == "categorical":
                return {"type": "categorical", "choices": list(d.choices)}
            out: dict[str, Any] = {"type": d.kind, "low": d.low, "high": d.high}
            if d.log:
                out["log"] = True
            if d.step is not None:
                out["step"] = d.step
            return out

        params: dict[str, Any] = {}
        for name, param in self.params.items():
            if isinstance(param, Conditional):
                params[name] = {"given": param.given, "cases": {value: dist(d) for value, d in param.cases}}
            else:
                params[name] = dist(param)
        return {"model": self.model, "params": params, "fixed": dict(self.fixed),
                "default": {name: self.default[name] for name in self.params}}

    def describe(self) -> str:
        """A few human-readable lines: one per searched hyperparameter with its default."""
        return "\n".join(f"  {name}: {param.describe()} (default {self.default[name]!r})"
                         for name, param in self.params.items())
