"""Optuna behind Ray Tune: the sampler, the study in ``optuna.db``, and how trials are told to it.

Ray's ``OptunaSearch`` tells Optuna every trial as COMPLETE with its last reported value. Here the study sees
what the search objective (``search.objective``) sees: after every epoch the trial's best value so far
(``best_valid_ic``) as the intermediate value at step ``epoch`` (the last epoch included), and at its end COMPLETE
with the best value over all its epochs when it ran to its own end; PRUNED when ASHA stopped it (Optuna then
takes its last intermediate value, the best so far); FAIL when it errored or its metric was NaN/inf (Optuna would
reject a NaN told as COMPLETE and leave the trial RUNNING in the database).

Each Optuna trial carries the Ray trial id and its TensorBoard run as user attributes (``ray_trial_id``,
``tensorboard_run``), and each Tune trial's config carries its Optuna trial number (``optuna_trial``), so a user
can go from optuna-dashboard to the summary table, TensorBoard and ``best.yaml`` and back.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from alphatune.search.objective import Objective, finite
from alphatune.search.rundir import TENSORBOARD_DIR
from alphatune.spaces import Space

OPTUNA_TRIAL = "optuna_trial"  # the key of a trial's Optuna number in its Tune config
CONTINUES = "continues"  # the key of the Tune trial a trial takes over (see StudySearch._reconcile)


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


def trial_seed(search_seed: int | None, number: int) -> int:
    """The training seed of Optuna trial ``number``: derived from the search's ``--seed`` (the same search draws the
    same seeds), or drawn from the operating system's entropy without one."""
    if search_seed is None:
        return int.from_bytes(os.urandom(4), "little") >> 1
    return int(np.random.SeedSequence([search_seed, number]).generate_state(1)[0] >> 1)


def storage_url(run_dir: Path) -> str:
    """The study database inside a run directory (``optuna-dashboard <this url>`` opens it)."""
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


class StudySearch(OptunaSearch):
    """``OptunaSearch`` over a ``Space`` (define-by-run, conditionals included), persisted in SQLite, the space's
    default enqueued as the first trial, and trials told as they really ended (see the module doc)."""

    def __init__(self, space: Space, goal: Objective, run_dir: Path, sampler: optuna.samplers.BaseSampler,
                 samples: int, seed: int | None = None) -> None:
        self.goal = goal
        self.seed = seed
        self.draws_seed = "seed" not in space.params and space.fixed.get("seed") is None
        self.run_dir = Path(run_dir)
        self.samples = samples
        self._reported: dict[str, set[int]] = {}
        self._orphans: list[optuna.trial.FrozenTrial] = []
        storage = optuna.storages.RDBStorage(storage_url(run_dir))
        try:  # a study with trials: a search started again after dying before Tune saved anything
            started = bool(optuna.load_study(study_name=space.model, storage=storage).get_trials(deepcopy=False))
        except KeyError:
            started = False
        super().__init__(space=space.suggest, metric=goal.best, mode=goal.mode, sampler=sampler,
                         points_to_evaluate=[] if started else [space.optuna_params(space.default)],
                         study_name=space.model, storage=storage)
        if not self._ot_study.metric_names:  # optuna-dashboard names the objective instead of "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names([goal.name])
        if started:
            self._reconcile()

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved searcher state, then reconciled with the study (``_reconcile``)."""
        super().restore(checkpoint_path)
        self._reconcile()

    def _reconcile(self) -> None:
        """Make the restored state agree with the study, which is written at once, while Tune saves its own state
        (this searcher's with it) seconds later: what happened in between is in the study and the ledger only.

        * A trial Tune knows that the study holds as finished is not told again.
        * A study trial Tune does not know (its Tune trial was created after Tune's last save) counts as a
          sample: finished, it stays as it is; left RUNNING (the driver died while it ran), the next new Tune trial
          takes it over (same Optuna number and values; ``continues`` in its config names the old Tune trial,
          whose saved state the new trial resumes: ``search.trial``). So the study never holds more trials than
          ``samples`` (``suggest`` ends the search there) and no trial stays RUNNING for TPE's constant liar."""
        stored = {trial.number: trial for trial in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot_trial in self._ot_trials.items():
            frozen = stored.get(ot_trial.number)
            if frozen is not None and frozen.state.is_finished():
                self._completed_trials.add(trial_id)
        known = {ot_trial.number for ot_trial in self._ot_trials.values()}
        self._orphans = [trial for number, trial in sorted(stored.items())
                         if number not in known and trial.state == TrialState.RUNNING]

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        continues = None
        if self._orphans and trial_id not in self._ot_trials:
            orphan = self._orphans.pop(0)
            continues = orphan.user_attrs.get("ray_trial_id")
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, orphan._trial_id)
        elif trial_id not in self._ot_trials and self._drawn() >= self.samples:
            return Searcher.FINISHED  # every sample drawn (some by a run before an interruption)
        config = super().suggest(trial_id)
        if config is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        if self.draws_seed:  # every trial trains with a seed of its own, recorded so that it can be reproduced
            if "seed" not in ot_trial.user_attrs:
                ot_trial.set_user_attr("seed", trial_seed(self.seed, ot_trial.number))
            config["seed"] = ot_trial.user_attrs["seed"]
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        ot_trial.set_user_attr("tensorboard_run", str(self.run_dir / TENSORBOARD_DIR / trial_id))
        if continues:
            ot_trial.set_user_attr("continues", continues)
        return {**config, OPTUNA_TRIAL: ot_trial.number, **({CONTINUES: continues} if continues else {})}

    def _drawn(self) -> int:
        """How many samples the study has handed out (an enqueued point not yet asked for is not one)."""
        return sum(trial.state != TrialState.WAITING for trial in self._ot_study.get_trials(deepcopy=False))

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        """Record the trial's best value so far at step ``epoch`` (once per step: a resumed trial repeats some)."""
        value, step = result.get(self.goal.best), result.get("epoch")
        reported = self._reported.setdefault(trial_id, set())
        if isinstance(step, int) and step not in reported and finite(value):
            with warnings.catch_warnings():  # a step already in the database (resumed search) is ignored
                warnings.simplefilter("ignore")
                try:
                    self._ot_trials[trial_id].report(float(value), step)
                except optuna.exceptions.UpdateFinishedTrialError:  # told already (see _reconcile)
                    self._completed_trials.add(trial_id)
            reported.add(step)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        result = result or {}
        value = result.get(self.goal.best)
        if error or not finite(result.get(self.goal.name)) or not finite(value):
            self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
        else:
            self._report(trial_id, result)
            if result.get("final"):
                self._ot_study.tell(ot_trial, float(value), state=TrialState.COMPLETE)
            else:  # ASHA stopped it: Optuna records the last intermediate value, the best so far
                self._ot_study.tell(ot_trial, None, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def close_abandoned(run_dir: Path, study_name: str) -> int:
    """Once a search has ended, tell FAIL any trial the study still holds RUNNING (one whose Tune trial ended while
    the driver could not tell the study, e.g. on a full disk), so no trial stays RUNNING for TPE's constant liar.
    Returns how many."""
    study = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(storage_url(run_dir)))
    left = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.RUNNING]
    for trial in left:
        optuna.Trial(study, trial._trial_id).set_user_attr("closed", "still running when its search ended")
        study.tell(trial.number, state=TrialState.FAIL)
    return len(left)


def study_states(run_dir: Path, study_name: str) -> dict[int, str]:
    """Optuna trial number → its state's name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``)."""
    study = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(storage_url(run_dir)))
    return {trial.number: trial.state.name for trial in study.get_trials(deepcopy=False)}
