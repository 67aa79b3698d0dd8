"""One searched hyperparameter: a ``Distribution`` (a number range, linear or log, or categorical choices) or a
``Conditional`` (one distribution per value of a categorical parent). Each can propose a value to an Optuna trial
(``suggest``) and say whether a value is one of its points (``contains``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

KINDS = ("int", "float", "categorical")
Scalar = Union[int, float, str, bool]


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's distribution: ``int``/``float`` over ``[low, high]`` (linear or log) or categorical."""

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = ()

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this distribution (type included: 2.0 is not an int choice)."""
        if self.kind == "categorical":
            return any(type(value) is type(choice) and value == choice for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is not None:
            offset = (value - self.low) / self.step
            return math.isclose(offset, round(offset), abs_tol=1e-9)
        return True

    def suggest(self, trial: Any, name: str) -> Scalar:
        """Ask an ``optuna.Trial`` (or Ray's wrapper around one) for a value under Optuna name ``name``."""
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def corners(self) -> tuple[Scalar, ...]:
        """Values worth checking against the model's rules: every choice, or both ends of a range."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        scale = " log" if self.log else ""
        step = f" step {self.step}" if self.step is not None else ""
        return f"{self.kind} [{self.low}, {self.high}]{scale}{step}"


@dataclass(frozen=True)
class Conditional:
    """A hyperparameter whose distribution depends on the value of a categorical parent (``given``)."""

    given: str
    cases: tuple[tuple[Scalar, Distribution], ...]

    def case(self, parent_value: Any) -> Distribution:
        for value, distribution in self.cases:
            if type(value) is type(parent_value) and value == parent_value:
                return distribution
        raise KeyError(parent_value)

    @staticmethod
    def optuna_name(name: str, parent: str, parent_value: Any) -> str:
        """The Optuna parameter name of one case: each case is its own parameter, so every Optuna parameter keeps
        one fixed distribution (Optuna refuses a categorical whose choices change between trials)."""
        return f"{name}|{parent}={parent_value}"

    def describe(self) -> str:
        return f"given {self.given}: " + "; ".join(f"{value} → {dist.describe()}" for value, dist in self.cases)


Param = Union[Distribution, Conditional]
