"""Resuming a search from the run's own records only: the ledger, the Optuna study and each trial's saved state.

Nothing Ray Tune saved is read (its experiment state holds pickles, and a run directory is what a team shares):
a resumed search is a fresh Tune run whose searcher and scheduler start from these records.

``reconcile`` makes the two records agree, whatever moment a kill came at. The searcher writes to the ledger
before it tells the study (``search.searcher``), so the ledger can only be ahead:

* a trial the ledger has ended and the study still holds RUNNING is told as the ledger says (its missing
  intermediate values first);
* a trial the study has ended and the ledger has not (a ledger of an earlier version, or a line lost on a full
  disk) gets its end in the ledger from the study;
* a trial RUNNING in both (it was training when the driver died) continues: the next Tune trial takes over its
  Optuna trial (same values, same seed) and goes on from its saved ``state.pt`` (``search.trial``); one never
  started starts afresh with the same values;
* an enqueued point never asked for is asked for again.

A trial either record has ended is never run again. ``ResumePlan`` says what a resumed run hands out first and
what ASHA's rungs held before the interruption.

**A study that cannot be opened** (a corrupted or deleted ``optuna.db``, one written by an Optuna whose schema this
one does not read, a shared study someone deleted) is rebuilt from the ledger by ``open_study``: every trial's
values, seed, intermediate values and state are there. The run's own damaged file is kept beside the new one
(``optuna.db.damaged-<UTC time>``), and the note says so. A shared storage that cannot be reached is one line.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

from alphatune.search.ledger import ERROR, TERMINATED, LedgerTrial, RunRecords, read_ledger
from alphatune.search.objective import Objective, finite
from alphatune.search.results import outcome
from alphatune.search.rundir import TENSORBOARD_DIR, RunDirError
from alphatune.search.searcher import Continuation, optuna_step
from alphatune.search.study import STUDY_FILE, SearchStudy, StudyPlace, cause_line
from alphatune.spaces import Space


@dataclass
class ResumePlan:
    """What a resumed run starts from: the unfinished trials to hand out first, and every trial's reports so far
    (Tune trial id → its reports, for ASHA's rungs)."""

    continuations: list[Continuation] = field(default_factory=list)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def reconcile(run_dir: Path, study: SearchStudy, ledger: RunRecords) -> ResumePlan:
    """Bring the study and the ledger of ``run_dir`` to one truth (see the module doc) and return the plan."""
    goal = study.goal
    trials = read_ledger(run_dir) or []
    by_number: dict[int, LedgerTrial] = {trial.optuna_trial: trial for trial in trials
                                         if trial.optuna_trial is not None}
    plan = ResumePlan(results={trial.trial_id: trial.results for trial in trials})
    for frozen in study.trials():
        number, trial = frozen.number, by_number.get(frozen.number)
        if frozen.state == TrialState.WAITING:
            continue
        if trial is not None and frozen.state == TrialState.RUNNING:  # the ledger's epochs the study lacks
            for _, row in sorted(trial.epochs().items()):
                step = optuna_step(row)
                if step is not None and finite(row.get(goal.best)):
                    study.report(number, float(row[goal.best]), step)
        if frozen.state.is_finished():
            if trial is not None and trial.status is None:
                ended = frozen.state in (TrialState.COMPLETE, TrialState.PRUNED)
                ledger.ended(trial.trial_id, TERMINATED if ended else ERROR,
                             **({} if ended else {"error": f"ended in the study as {frozen.state.name}"}))
        elif trial is not None and trial.status is not None:
            how = outcome(trial.status, trial.last_result, goal.name)
            value = trial.last_result.get(goal.best)
            study.tell(number, how, float(value) if finite(value) else None)
        else:
            plan.continuations.append(Continuation(number, trial.trial_id if trial else None,
                                                   frozenset(trial.epochs()) if trial else frozenset()))
    return plan


def close_abandoned(run_dir: Path, study: SearchStudy, ledger: RunRecords) -> None:
    """Once a search has ended (every sample handed out, none left running), end what neither record ended: a
    trial created but never heard of again stays RUNNING for no one (and TPE's constant liar would count it)."""
    for trial in read_ledger(run_dir) or []:
        if trial.status is None:
            ledger.ended(trial.trial_id, ERROR, error="abandoned: its search ended without it")
    for frozen in study.trials():
        if frozen.state == TrialState.RUNNING:
            study.set_attrs(frozen.number, closed="still running when its search ended")
            study.tell(frozen.number, "failed", None)


def open_study(run_dir: Path, space: Space, goal: Objective, place: StudyPlace,
               sampler: optuna.samplers.BaseSampler | None = None) -> tuple[SearchStudy, str | None]:
    """The run's study, and a note when it had to be rebuilt from the ledger (see the module doc): it could not be
    opened, or it holds fewer trials than the ledger knows (deleted, replaced by an empty one). ``RunDirError``
    (one line) for a shared storage that cannot be reached."""
    trials = [trial for trial in read_ledger(run_dir) or [] if trial.optuna_trial is not None]
    own = place.url == StudyPlace.of_run(run_dir, space.model).url
    try:
        study = SearchStudy.in_run(run_dir, space, goal, sampler, place, enqueue_default=not trials)
        known = len(study.trials())
    except Exception as error:
        if not own:
            raise RunDirError(f"the study {place.name} in --study-storage cannot be opened: {cause_line(error)}") \
                from None
        why, aside = cause_line(error), _set_aside(Path(run_dir) / STUDY_FILE, move=True)
    else:
        if known > max((trial.optuna_trial for trial in trials), default=-1):
            return study, None
        why = f"it holds {known} trials and the ledger {len(trials)}"
        aside = _set_aside(Path(run_dir) / STUDY_FILE, move=False) if own and known else None
        study.storage.remove_session()
    rebuilt = rebuild(trials, Path(run_dir), space, goal, place, sampler)
    note = f"the study {place.url} could not be used ({why}); rebuilt it from the ledger ({len(trials)} trials)"
    return rebuilt, note + (f", the damaged file kept as {aside}" if aside else "")


def rebuild(trials: list[LedgerTrial], run_dir: Path, space: Space, goal: Objective, place: StudyPlace,
            sampler: optuna.samplers.BaseSampler | None = None) -> SearchStudy:
    """A new study at ``place`` holding the ledger's trials as they stand, under their own Optuna numbers: values,
    seed and the other user attributes, every epoch's best-so-far value as an intermediate value, and the state
    (COMPLETE with its best value, PRUNED, FAIL, or RUNNING for a trial that has not ended, which resume continues).
    A number the ledger never recorded (asked just before a kill) is a WAITING trial: it is asked for again."""
    storage = optuna.storages.RDBStorage(place.url)
    if place.name in {summary.study_name for summary in optuna.get_all_study_summaries(storage)}:
        optuna.delete_study(study_name=place.name, storage=storage)
    study = SearchStudy(storage, space, goal, sampler, place.name, enqueue_default=False)
    by_number = {trial.optuna_trial: trial for trial in trials}
    for number in range(max(by_number, default=-1) + 1):
        trial = by_number.get(number)
        if trial is None:
            study.study.add_trial(create_trial(state=TrialState.WAITING))
            continue
        fixed = optuna.trial.FixedTrial(space.optuna_params({**space.default, **trial.config}))
        space.suggest(fixed)
        steps = {optuna_step(row): float(row[goal.best]) for _, row in sorted(trial.epochs().items())
                 if optuna_step(row) is not None and finite(row.get(goal.best))}
        how = outcome(trial.status, trial.last_result, goal.name)
        state = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}.get(
            how, TrialState.RUNNING)
        value = trial.last_result.get(goal.best) if state == TrialState.COMPLETE else (
            list(steps.values())[-1] if state == TrialState.PRUNED and steps else None)
        attrs = {"ray_trial_id": trial.trial_id, "tensorboard_run": str(run_dir / TENSORBOARD_DIR / trial.tensorboard_run),
                 "rebuilt_from_ledger": True, **({"seed": trial.config["seed"]} if "seed" in trial.config else {}),
                 **({"continues": trial.continues} if trial.continues else {})}
        study.study.add_trial(create_trial(
            state=state, value=float(value) if value is not None and finite(value) else None, params=fixed.params,
            distributions=fixed.distributions, intermediate_values=steps, user_attrs=attrs))
    return study


def _set_aside(path: Path, move: bool) -> Path | None:
    """Keep a damaged study file for a person to look at: moved out of the way (it cannot be opened), or copied (it
    opens, and is rebuilt in place); where it went."""
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.damaged-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}")
    if move:
        os.replace(path, target)
    else:
        shutil.copy2(path, target)
    return target


