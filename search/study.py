"""A model's Optuna study: where it is kept, how it is opened, sampled and told, through Optuna's public API only.

The study is named after the model and kept in the run directory (``optuna.db``, SQLite; ``optuna-dashboard
sqlite:///RUN/optuna.db`` opens it). Its objective is named (``study.metric_names``: ``valid_ic`` or
``valid_loss``, what optuna-dashboard shows), its direction is the objective's, and a new study holds the space's
default (Qlib's published config) as its first, enqueued, point.

Each Optuna trial carries the Ray trial id and its TensorBoard run as user attributes (``ray_trial_id``,
``tensorboard_run``), the training seed drawn for it (``seed``) and, when it was taken over after an
interruption, the Tune trial it continues (``continues``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from alphatune.search.objective import Objective
from alphatune.spaces import Space

STUDY_FILE = "optuna.db"


def make_sampler(name: str, seed: int | None, samples: int, asked: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna's sampler ``name`` (tpe, random, cmaes, qmc) seeded with ``seed``; for a search that goes on with
    ``asked`` trials already in its study, seeded from ``seed`` and ``asked`` (``resumed_seed``), so that its draws
    go on instead of starting again (a sampler built again with the same seed would propose the trials it
    proposed before). QMC keeps ``seed``: its sequence is its scrambling's, and it goes on by counting the trials
    the study holds.

    TPE starts modelling after ``max(2, samples // 4)`` trials (at most Optuna's usual 10), so a short search
    still gets guided proposals, and uses the constant liar (trials still running count as bad), so concurrent
    trials are not proposed the same point. CMA-ES samples categorical hyperparameters independently (at random).
    """
    if name != "qmc":
        seed = resumed_seed(seed, asked)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, samples // 4)),
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}; known: tpe, random, cmaes, qmc")


_RESUMED = 0x72657375  # "resu": keeps a resumed sampler's seeds apart from the trials' (trial_seed)


def resumed_seed(search_seed: int | None, asked: int) -> int | None:
    """The seed of a sampler built for a search with ``asked`` trials in its study: ``search_seed`` itself for a
    new search (the same search proposes the same points), else one derived from both (``None`` stays ``None``)."""
    if search_seed is None or asked == 0:
        return search_seed
    return int(np.random.SeedSequence([search_seed, _RESUMED, asked]).generate_state(1)[0] >> 1)


def trial_seed(search_seed: int | None, number: int) -> int:
    """The training seed of Optuna trial ``number``: derived from the search's ``--seed`` (the same search draws the
    same seeds), or drawn from the operating system's entropy without one."""
    if search_seed is None:
        return int.from_bytes(os.urandom(4), "little") >> 1
    return int(np.random.SeedSequence([search_seed, number]).generate_state(1)[0] >> 1)


def storage_url(run_dir: Path) -> str:
    """The study database inside a run directory (``optuna-dashboard <this url>`` opens it)."""
    return f"sqlite:///{Path(run_dir).resolve() / STUDY_FILE}"


@dataclass(frozen=True)
class StudyPlace:
    """Where a run's study lives: an Optuna storage URL and the study's name in it."""

    url: str
    name: str

    @classmethod
    def of_run(cls, run_dir: Path, model: str, shared: str | None = None, search: str = "") -> "StudyPlace":
        """The run directory's own ``optuna.db`` (study named after the model), or, with ``shared``
        (``--study-storage``), that storage with the study named ``<search>/<model>``."""
        if shared:
            return cls(shared, f"{search}/{model}")
        return cls(storage_url(run_dir), model)


def unopenable(place: StudyPlace) -> str | None:
    """Why the study at ``place`` cannot be opened (a corrupted or missing file, another Optuna's schema, a
    storage that does not answer), or ``None`` when it can; creates nothing."""
    if place.url.startswith("sqlite:///") and not Path(place.url.removeprefix("sqlite:///")).is_file():
        return "its file does not exist"
    try:
        storage = optuna.storages.RDBStorage(place.url, skip_table_creation=True)
        try:
            storage.get_study_id_from_name(place.name)
        finally:
            storage.remove_session()
    except Exception as error:
        return cause_line(error)
    return None


def cause_line(error: BaseException) -> str:
    """The first line of the innermost exception ``error`` was raised from (Optuna and SQLAlchemy wrap SQLite's
    "file is not a database" in words that say less)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


class SearchStudy:
    """One model's Optuna study as a search uses it: asked for new points, told how trials ended, given every
    epoch's value, through Optuna's public API (``Study.ask``/``tell`` and the storage interface)."""

    def __init__(self, storage: optuna.storages.BaseStorage, space: Space, goal: Objective,
                 sampler: optuna.samplers.BaseSampler | None = None, name: str | None = None,
                 enqueue_default: bool = True) -> None:
        self.storage, self.space, self.goal = storage, space, goal
        self.name = name or space.model
        self.study = optuna.create_study(study_name=self.name, storage=storage, sampler=sampler,
                                         direction=goal.direction, load_if_exists=True)
        self.study_id = storage.get_study_id_from_name(self.name)
        self._ids: dict[int, int] = {}           # Optuna number -> storage id: fixed once the trial exists
        self._reported: dict[int, set[int]] = {}  # a running trial's steps in the storage, read at its first report
        self._drawn: int | None = None           # samples handed out (``drawn``)
        if not self.study.metric_names:  # optuna-dashboard names the objective instead of "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([goal.name])
        if enqueue_default and not self.trials():  # a new study: Qlib's published config is the first point
            self.study.enqueue_trial(space.optuna_params(space.default))

    @classmethod
    def in_run(cls, run_dir: Path, space: Space, goal: Objective,
               sampler: optuna.samplers.BaseSampler | None = None, where: StudyPlace | None = None,
               enqueue_default: bool = True) -> "SearchStudy":
        """The run's study, created or loaded: in the run directory (``optuna.db``), or where ``where`` says
        (``--study-storage``). ``search.resume.open_study`` is the way to open one a search goes on with: it
        rebuilds a study that cannot be opened from the ledger."""
        where = where or StudyPlace.of_run(run_dir, space.model)
        return cls(optuna.storages.RDBStorage(where.url), space, goal, sampler, where.name, enqueue_default)

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def trial(self, number: int) -> FrozenTrial:
        return self.storage.get_trial(self._id(number))

    def _id(self, number: int) -> int:
        if number not in self._ids:
            self._ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self._ids[number]

    def drawn(self) -> int:
        """How many samples the study has handed out (an enqueued point not yet asked for is not one): counted in
        the storage once, then by this object's ``ask`` (one writer per run)."""
        if self._drawn is None:
            self._drawn = sum(trial.state != TrialState.WAITING for trial in self.trials())
        return self._drawn

    def ask(self) -> tuple[int, dict[str, object]]:
        """A new point (the enqueued default first): its Optuna number and the space's values by their names."""
        self.drawn()
        trial = self.study.ask()
        values = self.space.suggest(trial)
        self._drawn += 1
        return trial.number, values

    def values(self, number: int) -> dict[str, object]:
        """The space's values of an asked trial, from its Optuna parameters (conditional cases by their names)."""
        params = self.trial(number).params
        out: dict[str, object] = {}
        for name, param in self.space.params.items():
            key = name if name in params else next(key for key in params if key.startswith(f"{name}|"))
            out[name] = params[key]
        return out

    def report(self, number: int, value: float, step: int) -> bool:
        """Record ``value`` at ``step`` of a running trial, once (a step already there is left as it is); returns
        whether it was recorded. The trial's state and steps are read from the storage at its first report only
        (one writer per run: later steps are the ones this object wrote), which keeps a report to one write."""
        if number not in self._reported:
            frozen = self.trial(number)
            if frozen.state != TrialState.RUNNING:
                return False
            self._reported[number] = set(frozen.intermediate_values)
        if step in self._reported[number]:
            return False
        self.storage.set_trial_intermediate_value(self._id(number), step, value)
        self._reported[number].add(step)
        return True

    def tell(self, number: int, outcome: str, value: float | None) -> None:
        """End a running trial as the search saw it end: ``finished`` COMPLETE with ``value`` (the best over all its
        epochs), ``pruned`` PRUNED (Optuna keeps its last intermediate value, the best so far), ``failed`` FAIL (a
        NaN told as COMPLETE would be refused and leave the trial RUNNING). A trial already ended is left alone."""
        self._reported.pop(number, None)
        if self.trial(number).state.is_finished():
            return
        if outcome == "finished" and value is not None:
            self.study.tell(number, value, state=TrialState.COMPLETE)
        elif outcome == "pruned":
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, state=TrialState.FAIL)

    def set_attrs(self, number: int, **attrs: object) -> None:
        """Set user attributes of trial ``number``."""
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(self._id(number), key, value)

    def states(self) -> dict[int, str]:
        """Optuna trial number → its state's name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``)."""
        return {trial.number: trial.state.name for trial in self.trials()}
