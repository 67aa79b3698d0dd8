"""ASHA whose rungs survive an interrupted search.

Ray Tune 2.60 neither saves nor restores a scheduler's state: a resumed search gets the ASHA pickled when the
search started, with empty rungs, and would let a trial go on that the results recorded before the interruption
would have stopped. ``ResumableASHA`` rebuilds its rungs from the run's own ledger (``search.ledger``) the first
time it is used in a process: for every trial, the value ASHA recorded at each rung is the trial's value at the
first epoch reaching that rung, which the ledger holds. In a new search the ledger is empty and nothing changes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from alphatune.search.ledger import read_ledger
from alphatune.search.objective import finite
from alphatune.search.searcher import CONTINUES


class ResumableASHA(ASHAScheduler):
    """``ASHAScheduler`` (one bracket) that replays ``RUN/trials.jsonl`` into its rungs before its first decision."""

    def __init__(self, run_dir: Path, **asha: Any) -> None:
        super().__init__(brackets=1, **asha)
        self.run_dir = str(run_dir)
        self._replayed = False

    def replay(self) -> int:
        """Record every ledger result in the rungs, once per process; returns how many trials it recorded."""
        if self._replayed:
            return 0
        self._replayed = True
        [bracket] = self._brackets
        trials = read_ledger(self.run_dir) or []
        for trial in trials:
            stub = SimpleNamespace(trial_id=trial.trial_id)
            for epoch, row in sorted(trial.epochs().items()):
                value = row.get(self._metric)
                if finite(value):
                    bracket.on_result(stub, epoch, self._metric_op * value)
        return len(trials)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.replay()
        super().on_trial_add(tune_controller, trial)
        earlier = (getattr(trial, "config", None) or {}).get(CONTINUES)
        if earlier:  # it takes over an interrupted trial: that trial's rung records are its own
            for _, recorded in self._brackets[0]._rungs:
                if earlier in recorded:
                    recorded[trial.trial_id] = recorded.pop(earlier)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self.replay()
        return super().on_trial_result(tune_controller, trial, result)
