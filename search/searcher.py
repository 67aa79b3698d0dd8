"""Optuna behind Ray Tune, through Tune's public ``Searcher`` interface and Optuna's public ask/tell.

``StudySearcher.suggest`` hands Tune a configuration for each new trial: first the trials an interrupted run left
unfinished (``search.resume``: same Optuna trial, same values and seed, ``continues`` naming the Tune trial whose
saved state it goes on from), then new points asked of the study (its enqueued default first) until the study
has handed out ``samples`` of them; then ``FINISHED``.

The study sees what the search objective (``search.objective``) sees: after every epoch the trial's best value so
far (``best_valid_ic``) as the intermediate value at step ``epoch`` (the last epoch included), or with
walk-forward folds after every fold the mean over its folds so far at step ``fold``; at its end
COMPLETE with the best value over all its epochs when it ran to its own end, PRUNED when ASHA stopped it (Optuna
then takes its last intermediate value, the best so far), FAIL when it failed by itself (``search.trial``: its
model raised, a bad value) or its metric was NaN/inf. A trial Tune gave up on (its worker or node lost beyond
``--max-failures``) is the environment's fault: neither record ends it, and resume continues it. Each
of these is written to the run's ledger first (``search.ledger``): after any kill the ledger holds everything the
study does.

Each Tune trial's config carries its Optuna trial number (``optuna_trial``); each Optuna trial carries its Ray
trial id, TensorBoard run and training seed (user attributes ``ray_trial_id``, ``tensorboard_run``, ``seed``), so
a user can go from optuna-dashboard to the summary table, TensorBoard and ``best.yaml`` and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from alphatune.search.cluster import Slots
from alphatune.search.ledger import ERROR, TERMINATED, RunRecords
from alphatune.search.rundir import TENSORBOARD_DIR
from alphatune.search.objective import Objective, finite
from alphatune.search.scheduler import CONTINUES
from alphatune.search.study import SearchStudy, trial_seed
from alphatune.search.trial import ERROR as TRIAL_ERROR
from alphatune.search.trial import report_fields
from alphatune.storage import Location

OPTUNA_TRIAL = "optuna_trial"  # the key of a trial's Optuna number in its Tune config
TENSORBOARD_RUN = "tensorboard_run"  # a continuing trial's TensorBoard run (the first run of its Optuna trial)


def optuna_step(result: dict[str, Any]) -> int | None:
    """The step at which a report's value is an Optuna intermediate value: its epoch, or with walk-forward folds
    its fold once that fold ended (one intermediate value per fold: the mean over the folds so far); ``None`` for a
    report that is not one (within a fold, or without an epoch)."""
    if "fold" in result:
        return int(result["fold"]) if result.get("fold_final") else None
    epoch = result.get("epoch")
    return epoch if isinstance(epoch, int) else None


@dataclass(frozen=True)
class Continuation:
    """An Optuna trial an interrupted run left unfinished: its number, the Tune trial it last ran as (``None``:
    it never started), and the epochs the ledger already holds for it."""

    number: int
    trial_id: str | None
    epochs: frozenset[int] = frozenset()


class StudySearcher(Searcher):
    """Tune's searcher over a ``SearchStudy`` (see the module doc). ``continuations`` are handed out first."""

    def __init__(self, study: SearchStudy, ledger: RunRecords, run_root: Location | Path, samples: int, seed: int | None,
                 continuations: list[Continuation] | None = None, slots: Slots | None = None) -> None:
        super().__init__(metric=study.goal.best, mode=study.goal.mode)
        self.study, self.ledger, self.run_root = study, ledger, Location.of(run_root)
        self.samples, self.seed = samples, seed
        self.continuations = list(continuations or [])
        space = study.space
        self.draws_seed = "seed" not in space.params and space.fixed.get("seed") is None
        self.numbers: dict[str, int] = {}   # Tune trial id → Optuna number, of the trials this searcher made
        self.recorded: dict[str, set[int]] = {}  # Tune trial id → the epochs in the ledger
        self.ended: set[str] = set()
        self.interrupted: set[str] = set()  # ended in Tune by a fault of the environment, not in the records
        self.slots = slots  # elastic slots: no new trial while as many go as it says (None: Tune's cap decides)

    @property
    def goal(self) -> Objective:
        return self.study.goal

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the objective decides metric and mode (search.objective)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.slots is not None and len(self.numbers) - len(self.ended) >= self.slots.now():
            return None  # every slot has its trial (and the queue its share): Tune asks again later
        continues, epochs = None, frozenset()
        if self.continuations:
            continuation = self.continuations.pop(0)
            number, continues, epochs = continuation.number, continuation.trial_id, continuation.epochs
            values = self.study.values(number)
        elif self.study.drawn() >= self.samples:
            return Searcher.FINISHED
        else:
            number, values = self.study.ask()
        attrs = self.study.trial(number).user_attrs
        config = dict(values)
        if self.draws_seed:  # every trial trains with a seed of its own, recorded so that it can be reproduced
            config["seed"] = attrs.get("seed", trial_seed(self.seed, number))
        self.numbers[trial_id], self.recorded[trial_id] = number, set(epochs)
        self.ledger.created(trial_id, number, config, continues)
        # One TensorBoard run per Optuna trial: a trial that goes on with an interrupted one writes into its run.
        run = str(attrs.get("tensorboard_run") or "").rsplit("/", 1)[-1] if continues else ""
        self.study.set_attrs(number, ray_trial_id=trial_id,
                             tensorboard_run=str(self.run_root / TENSORBOARD_DIR / (run or trial_id)),
                             **({"seed": config["seed"]} if "seed" in config else {}),
                             **({"continues": continues} if continues else {}))
        return {**config, OPTUNA_TRIAL: number, **({CONTINUES: continues} if continues else {}),
                **({TENSORBOARD_RUN: run} if run else {})}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.numbers and trial_id not in self.ended:
            self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.numbers or trial_id in self.ended:
            return
        self.ended.add(trial_id)
        if error:  # Tune gave up on its worker (lost beyond --max-failures): the environment's fault, not the trial's
            self.interrupted.add(trial_id)
            return  # it stays unfinished in the ledger and the study; resume continues it from its saved epoch
        result = result or {}
        value = result.get(self.goal.best)
        failure = result.get(TRIAL_ERROR)  # the trial failed by itself (search.trial)
        if failure or not finite(result.get(self.goal.name)) or not finite(value):
            outcome = "failed"
        else:
            outcome = "finished" if result.get("final") else "pruned"  # not final: ASHA stopped it
        if result:
            self._record(trial_id, result)  # the stopping report: Tune gives it to the searcher only here
        self.ledger.ended(trial_id, ERROR if failure else TERMINATED, **({"error": failure} if failure else {}))
        self.study.tell(self.numbers[trial_id], outcome, float(value) if finite(value) else None)

    def _record(self, trial_id: str, result: dict[str, Any]) -> None:
        """The report into the ledger, then its best-so-far value into the study, once per epoch (a retried or
        resumed trial reports its saved epoch again; the report that stopped a trial comes again at its end)."""
        epoch, value = result.get("epoch"), result.get(self.goal.best)
        if not isinstance(epoch, int) or epoch in self.recorded[trial_id]:
            return
        self.recorded[trial_id].add(epoch)
        self.ledger.result(trial_id, report_fields(result))
        step = optuna_step(result)
        if step is not None and finite(value):
            self.study.report(self.numbers[trial_id], float(value), step)

    def all_handed_out(self) -> bool:
        """Whether every sample has been handed out (continuations included): no new trial will come."""
        return not self.continuations and self.study.drawn() >= self.samples

    def live(self) -> list[str]:
        """The trials this searcher made that have not ended in the records (those a fault interrupted included)."""
        return [trial_id for trial_id in self.numbers if trial_id not in self.ended or trial_id in self.interrupted]

    def save(self, checkpoint_path: str) -> None:
        """Nothing for Tune to keep: the run's ledger and study are this searcher's state (``search.resume``)."""

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("a search resumes from its run's own records (search.resume), not Tune's")
