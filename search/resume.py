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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from alphatune.search.ledger import ERROR, TERMINATED, Ledger, LedgerTrial, read_ledger
from alphatune.search.objective import finite
from alphatune.search.results import outcome
from alphatune.search.searcher import Continuation
from alphatune.search.study import SearchStudy


@dataclass
class ResumePlan:
    """What a resumed run starts from: the unfinished trials to hand out first, and every trial's reports so far
    (Tune trial id → its reports, for ASHA's rungs)."""

    continuations: list[Continuation] = field(default_factory=list)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def reconcile(run_dir: Path, study: SearchStudy, ledger: Ledger) -> ResumePlan:
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
            for epoch, row in sorted(trial.epochs().items()):
                if finite(row.get(goal.best)):
                    study.report(number, float(row[goal.best]), epoch)
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


def close_abandoned(run_dir: Path, study: SearchStudy, ledger: Ledger) -> None:
    """Once a search has ended (every sample handed out, none left running), end what neither record ended: a
    trial created but never heard of again stays RUNNING for no one (and TPE's constant liar would count it)."""
    for trial in read_ledger(run_dir) or []:
        if trial.status is None:
            ledger.ended(trial.trial_id, ERROR, error="abandoned: its search ended without it")
    for frozen in study.trials():
        if frozen.state == TrialState.RUNNING:
            study.set_attrs(frozen.number, closed="still running when its search ended")
            study.tell(frozen.number, "failed", None)
