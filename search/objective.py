"""What a search optimises: one validation metric that decides everything (``--metric``).

The objective's metric chooses, in one consistent way:

* the epoch a trial keeps: the trainer early-stops and restores on it (its ``metric`` set to ``ic`` or ``loss``),
  and the trial checkpoints the epoch that is best by it;
* the value ASHA judges at each rung and Optuna records after each epoch: ``best_<metric>``, the best value of the
  metric over the trial's epochs so far (the value of the epoch the trial keeps, so it never gets worse);
* the value a finished trial tells Optuna (the best over all its epochs) and the winner in ``best.yaml``.

Every number printed or written next to it carries the metric's name (``best valid_ic 0.0412``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Objective:
    """A validation metric as the search uses it: the per-epoch name, its direction, the trainer's metric."""

    name: Literal["valid_ic", "valid_loss"]
    mode: Literal["max", "min"]
    trainer_metric: Literal["ic", "loss"]

    @property
    def best(self) -> str:
        """The report key of the best value so far (``best_valid_ic``): what ASHA and Optuna see."""
        return f"best_{self.name}"

    @property
    def other(self) -> str:
        """The other validation metric, reported beside the objective (``valid_loss`` beside ``valid_ic``)."""
        return "valid_loss" if self.name == "valid_ic" else "valid_ic"

    @property
    def direction(self) -> str:
        """Optuna's study direction."""
        return "maximize" if self.mode == "max" else "minimize"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b`` (a NaN never beats anything; anything finite beats NaN)."""
        if not finite(a):
            return False
        if not finite(b):
            return True
        return a > b if self.mode == "max" else a < b

    def sort_key(self, value: Any) -> float:
        """Ascending order puts the best first and NaN/missing last."""
        if not finite(value):
            return math.inf
        return -value if self.mode == "max" else value


def finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number (not a bool, not NaN or infinite, not missing)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


OBJECTIVES: dict[str, Objective] = {
    "valid_ic": Objective("valid_ic", "max", "ic"),
    "valid_loss": Objective("valid_loss", "min", "loss"),
}


def objective(name: str) -> Objective:
    """The objective called ``name`` (``KeyError`` for an unknown one; options are validated before this)."""
    return OBJECTIVES[name]
