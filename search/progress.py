"""What a search shows while it runs: each running trial's place in its budget, the counts, the best so far and
the time left, as a bar on a terminal and as plain lines in a log (``alphatune.progress``).

``SearchProgress`` is a Tune callback in the driver. The status reads::

    [lstm 03:10] 14/33 epochs · about 2 min left · running: 3a1f 4/6, 9bc0 2/6 · 3 finished · 2 pruned · 2 pending · best valid_ic 0.0412 (3a1f)

With walk-forward folds a running trial shows its fold and the epoch within it (``3a1f f2/4 e1/3``). The time
left is the epochs still expected (each running trial's up to its budget, each trial not yet started as many as
the ended ones trained on average, or its budget before any has ended) times the measured wall time of an epoch,
shared among the trial slots. Trial ends (finished, pruned, failed, interrupted, retried) are lines of their own.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from alphatune.progress import Progress
from alphatune.search.callbacks import trial_error_line
from alphatune.search.objective import Objective, finite
from alphatune.search.results import outcome
from alphatune.search.trial import ERROR

COUNTED = ("finished", "pruned", "failed", "interrupted", "pending")


class SearchProgress(Callback):
    """The search's progress (see the module doc): ``samples`` trials of at most ``budget`` epochs each
    (``max_epochs`` × ``folds``), ``slots`` at a time (a number, or what to ask: elastic slots); ``every`` seconds
    between plain status lines. A resumed search passes what it had before: ``done``, the epochs its trials reported; ``ended_before``, each trial that
    ended in an earlier process as (its outcome, the epochs it trained): they are counted with this process's
    trials, and are neither expected again nor left out of the time left."""

    def __init__(self, model: str, goal: Objective, samples: int, max_epochs: int, folds: int,
                 slots: int | Callable[[], int],
                 every: float = 10.0, stream: TextIO | None = None, done: int = 0,
                 terminal: bool | None = None, ended_before: list[tuple[str, int]] | None = None) -> None:
        self.model, self.goal, self.samples = model, goal, samples
        self.max_epochs, self.folds, self.every = max_epochs, folds, every
        # trials training at once: asked each time (elastic slots); a number as a callable that gives it back
        self.slots = slots if callable(slots) else functools.partial(int, slots)
        self.stream, self.terminal = stream, terminal
        self.epochs_before = done
        self.ended_before = list(ended_before or [])
        self.seen: dict[str, set[int]] = {}       # trial → epochs reported (once each)
        self.last_report: dict[str, float] = {}   # trial → when its last epoch was reported
        self.epoch_wall: list[float] = []         # measured wall seconds of one epoch, per report
        self.ended_epochs = sum(epochs for _, epochs in self.ended_before)  # epochs of every ended trial, summed
        self.ended_here = 0                          # Tune's trials ended in this process
        self.counts = dict.fromkeys(COUNTED, 0)      # how the ended trials ended
        for state, _ in self.ended_before:
            if state in self.counts:
                self.counts[state] += 1
        self.running: dict[str, Trial] = {}         # started and not ended: what a status names
        self.best: tuple[float, str] | None = None  # the best value reported in this process, and its trial
        self._progress: Progress | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None, "_progress": None}

    @property
    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(None, self.model, "epoch", self.stream, self.every, self.terminal)
            self._progress.update(self.epochs_before)
        return self._progress

    @property
    def budget(self) -> int:
        return self.max_epochs * self.folds

    # ------------------------------------------------------------------ Tune's hooks

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.running[trial.trial_id] = trial

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        epoch = result.get("epoch")
        if not isinstance(epoch, int) or epoch in self.seen.setdefault(trial.trial_id, set()):
            return
        self.running[trial.trial_id] = trial
        self.seen[trial.trial_id].add(epoch)
        now = time.monotonic()
        if trial.trial_id in self.last_report:
            self.epoch_wall.append(now - self.last_report[trial.trial_id])
        elif finite(result.get("seconds")):
            self.epoch_wall.append(float(result["seconds"]))
        del self.epoch_wall[:-20]  # the time left is judged on the last 20 epochs
        self.last_report[trial.trial_id] = now
        value = result.get(self.goal.best)
        if finite(value) and (self.best is None or self.goal.better(value, self.best[0])):
            self.best = (value, trial.trial_id)
        self.progress.update(1)
        self._status(len(trials))

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._status(len(trials))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._ended(trials, trial, Trial.TERMINATED)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._ended(trials, trial, Trial.ERROR)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.progress.event(f"[{self.model}] trial {trial.trial_id}: its worker was lost after epoch "
                            f"{(trial.last_result or {}).get('epoch', 0)}{_why(trial)}; Tune retries it from its "
                            f"last epoch")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.progress.close()
        self._progress = None

    # ------------------------------------------------------------------ what it says

    def _ended(self, trials: list[Trial], trial: Trial, status: str) -> None:
        result = trial.last_result or {}
        self.ended_epochs += len(self.seen.get(trial.trial_id, ())) or int(result.get("epoch", 0) or 0)
        self.ended_here += 1
        self.last_report.pop(trial.trial_id, None)
        self.running.pop(trial.trial_id, None)
        how = "interrupted" if status == Trial.ERROR else outcome(status, result, self.goal.name)
        if how in self.counts:
            self.counts[how] += 1
        if status == Trial.ERROR:
            self.progress.event(f"[{self.model}] trial {trial.trial_id} interrupted {self._where(result)}: its worker "
                                f"was lost beyond --max-failures{_why(trial)}; not failed: it continues from its "
                                f"last saved epoch when the search is resumed")
        else:
            value = result.get(self.goal.best)
            shown = f"{value:.4f}" if finite(value) else str(value)
            why = (f": {result[ERROR]}" + (f" (traceback: {result['traceback']})" if result.get("traceback") else "")
                   if result.get(ERROR) else "")
            kept = (f"mean best {self.goal.name} over its folds {shown}" if "fold" in result else
                    f"best {self.goal.name} {shown} at epoch {result.get('best_epoch', 0)}")
            self.progress.event(f"[{self.model}] trial {trial.trial_id} {how} {self._where(result)} ({kept}){why}")
        self._status(len(trials), force=True)

    def _where(self, result: dict[str, Any]) -> str:
        if "fold" in result:
            done = int(result["fold"]) - (0 if result.get("fold_final") else 1)
            return f"after fold {done} of {result['folds']}"
        return f"after epoch {result.get('epoch', 0)}"

    def _status(self, created: int, force: bool = False) -> None:
        """The status line, from what the hooks kept: its cost grows with the running trials, not with the search's
        (``created``: the trials Tune holds in this process)."""
        counts = dict(self.counts)
        running = list(self.running.values())
        counts["pending"] = max(0, created - self.ended_here - len(running))
        parts = []
        if running:
            parts.append("running: " + ", ".join(self._place(trial) for trial in running))
        parts += [f"{counts[key]} {key}" for key in COUNTED if counts[key] or key in ("finished", "pruned")]
        if self.best is not None:
            parts.append(f"best {self.goal.name} {self.best[0]:.4f} ({self.best[1][:4]})")
        remaining = self._remaining(running, created)
        self.progress.set_total(self.progress.done + remaining)
        self.progress.status(" · ".join(parts), self._eta(remaining), force=force)

    def _place(self, trial: Trial) -> str:
        result = trial.last_result or {}
        if "fold" in result:
            fold_epoch = int(result.get("fold_epoch", 0)) if not result.get("fold_final") else 0
            fold = int(result["fold"]) + (1 if result.get("fold_final") else 0)
            return f"{trial.trial_id[:4]} f{min(fold, self.folds)}/{self.folds} e{fold_epoch}/{self.max_epochs}"
        return f"{trial.trial_id[:4]} {int(result.get('epoch', 0) or 0)}/{self.max_epochs}"

    def _remaining(self, running: list[Trial], created: int) -> float:
        """Epochs still expected: each running trial up to what a trial trains (the ended ones' mean, its budget
        before any ended), and as many for every sample neither created by this process nor ended before it."""
        ended = len(self.ended_before) + self.ended_here
        expected = self.ended_epochs / ended if ended else float(self.budget)
        left = sum(max(0.0, min(float(self.budget), max(expected, len(self.seen.get(trial.trial_id, ())))) -
                       len(self.seen.get(trial.trial_id, ()))) for trial in running)
        return left + max(0, self.samples - len(self.ended_before) - created) * expected

    def _eta(self, remaining: float) -> float | None:
        if not self.epoch_wall:
            return None
        return remaining * statistics.fmean(self.epoch_wall) / max(1, self.slots())


def _why(trial: Trial) -> str:
    line = trial_error_line(trial)
    return f": {line[:300]} (traceback: {trial.error_file})" if line else ""
