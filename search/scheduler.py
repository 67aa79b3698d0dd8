"""ASHA (asynchronous successive halving, one bracket) over Tune's public scheduler interface, with rungs rebuilt
from the run's own ledger.

Rungs stand at ``grace_epochs · reduction_factor^k`` epochs below ``max_epochs``. A trial reaching a rung for the
first time is judged against the values the rung has recorded so far: below the ``1 - 1/reduction_factor``
quantile of them (NaN ignored) it is stopped; either way its value is recorded there. A trial reaching
``max_epochs`` is stopped (its budget is spent). This is Ray Tune's ``ASHAScheduler`` with one bracket and
``stop_last_trials``, decision for decision; it is written here so that its bookkeeping is ours: a resumed search
(a fresh Tune run, ``search.resume``) gives it the results recorded before the interruption (``replay``), and a
trial that takes over an interrupted one takes over its rung records (``continues`` in its config).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from alphatune.search.objective import Objective, finite

CONTINUES = "continues"  # the key of the interrupted Tune trial a trial takes over, in its config


class SuccessiveHalving(FIFOScheduler):
    """ASHA on the search objective's best-so-far value (``Objective.best``), its resource the epoch (after every
    epoch) or, with walk-forward folds, the fold (``resource="fold"``: judged when a fold ends, on the mean over the
    folds so far; ``max_t`` and ``grace`` then count folds)."""

    def __init__(self, goal: Objective, max_t: int, grace: int, reduction_factor: float,
                 resource: str = "epoch") -> None:
        super().__init__()
        self.goal, self.max_t, self.reduction_factor, self.resource = goal, max_t, reduction_factor, resource
        count = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
        self.rungs: list[tuple[float, dict[str, float]]] = [  # highest rung first
            (grace * reduction_factor ** k, {}) for k in reversed(range(count))]

    def _time(self, result: dict[str, Any]) -> int | None:
        """How much of its resource the trial has spent at this report; ``None`` when the report does not count
        (within a fold, for the fold resource)."""
        if self.resource == "fold":
            return result.get("fold") if result.get("fold_final") else None
        epoch = result.get("epoch")
        return epoch if isinstance(epoch, int) else None

    def _value(self, result: dict[str, Any]) -> float | None:
        """The objective's best-so-far value, as higher-is-better (``None`` when the report lacks it)."""
        value = result.get(self.goal.best)
        if value is None:
            return None
        return float(value) if self.goal.mode == "max" else -float(value)

    def judge(self, trial_id: str, spent: int, value: float) -> str:
        """Record ``value`` at the highest rung ``spent`` reaches that has none for the trial yet; ``STOP`` when it
        falls below that rung's cutoff, else ``CONTINUE``."""
        for milestone, recorded in self.rungs:
            if spent < milestone or trial_id in recorded:
                continue
            values = [v for v in recorded.values() if not math.isnan(v)]
            cutoff = np.percentile(values, (1 - 1 / self.reduction_factor) * 100) if values else None
            recorded[trial_id] = value
            return TrialScheduler.STOP if cutoff is not None and value < cutoff else TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE

    def replay(self, results: dict[str, list[dict[str, Any]]]) -> None:
        """Record the epochs of trials that ran before (trial id → its reports, in order), as they were judged."""
        for trial_id, rows in results.items():
            for row in rows:
                value, spent = self._value(row), self._time(row)
                if spent is not None and value is not None and finite(value):
                    self.judge(trial_id, spent, value)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        earlier = (getattr(trial, "config", None) or {}).get(CONTINUES)
        if earlier:  # it takes over an interrupted trial: that trial's rung records are its own
            for _, recorded in self.rungs:
                if earlier in recorded:
                    recorded[trial.trial_id] = recorded.pop(earlier)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        value, spent = self._value(result), self._time(result)
        if value is None or spent is None:
            return TrialScheduler.CONTINUE
        if spent >= self.max_t:
            return TrialScheduler.STOP
        return self.judge(trial.trial_id, spent, value)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        value, spent = self._value(result or {}), self._time(result or {})
        if value is not None and spent is not None:
            self.judge(trial.trial_id, spent, value)

    def debug_string(self) -> str:
        return "ASHA rungs: " + ", ".join(f"{milestone:g} epochs: {len(recorded)} trials"
                                          for milestone, recorded in reversed(self.rungs))
