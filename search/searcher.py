"""Optuna behind Ray Tune: the sampler, the study in ``optuna.db``, and how finished trials are told to it.

Ray's ``OptunaSearch`` tells Optuna every trial as COMPLETE with its last reported value. Here a trial is told
by what really happened: COMPLETE with the searched metric at its best (checkpointed) epoch when it ran to its
own end; PRUNED (with that last value as an intermediate value) when ASHA stopped it; FAIL when it errored or
its metric was NaN/inf. Optuna would reject a NaN told as COMPLETE and leave the trial RUNNING in the database.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from spaces import Space


def make_sampler(name: str, seed: int | None, samples: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler ``name`` (tpe, random, cmaes, qmc) seeded with ``seed``.

    TPE starts modelling after ``max(2, samples // 4)`` trials (at most Optuna's usual 10), so a short search
    still gets guided proposals, and uses the constant liar (trials still running count as bad), so concurrent
    trials are not proposed the same point. CMA-ES samples categorical hyperparameters independently (at random).
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, samples // 4)),
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}; known: tpe, random, cmaes, qmc")


def storage_url(run_dir: Path) -> str:
    """The study database inside a run directory (``optuna-dashboard <this url>`` opens it)."""
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


class StudySearch(OptunaSearch):
    """``OptunaSearch`` over a ``Space`` (define-by-run, conditionals included), persisted in SQLite, the space's
    default enqueued as the first trial, and trials told COMPLETE / PRUNED / FAIL as they really ended."""

    def __init__(self, space: Space, metric: str, run_dir: Path, sampler: optuna.samplers.BaseSampler) -> None:
        self.best_metric = f"best_{metric}"
        super().__init__(space=space.suggest, metric=metric, mode="max", sampler=sampler,
                         points_to_evaluate=[space.optuna_params(space.default)], study_name=space.model,
                         storage=optuna.storages.RDBStorage(storage_url(run_dir)))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = (result or {}).get(self.best_metric)
        last = (result or {}).get(self.metric)
        broken = not (isinstance(last, (int, float)) and math.isfinite(last))
        if error or result is None or broken or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
        elif not result.get("final"):
            # Ray reports intermediate values by training_iteration, except the result that made ASHA stop.
            step = int(result.get("training_iteration", 0))
            frozen = next(t for t in self._ot_study.get_trials(deepcopy=False) if t.number == ot_trial.number)
            if step not in frozen.intermediate_values:
                ot_trial.report(float(last), step)
            self._ot_study.tell(ot_trial, None, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(ot_trial, float(value), state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)
