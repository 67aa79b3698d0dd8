"""Driver-side Tune plug-ins: the NaN stopper, a concise progress line, and TensorBoard logging.

They run in the driver process (never in a trial), so a trial's worker stays free of logging work, and the
TensorBoard files of all trials land in one place: ``RUN/tensorboard/<trial id>/``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.stopper import Stopper

from spaces import Space

OUTCOMES = ("running", "pending", "finished", "pruned", "failed")
EPOCH_SCALARS = ("train_loss", "valid_loss", "valid_ic")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def outcome(status: str, last_result: dict[str, Any] | None, metric: str) -> str:
    """How a trial ended (or stands): running, pending, finished, pruned or failed.

    failed: Tune's ERROR, a non-finite searched metric in its last report, or no report at all once ended.
    finished: it ended by its own budget or early stopping (its last report says ``final``). pruned: ASHA
    stopped it before that.
    """
    last_result = last_result or {}
    if status == Trial.ERROR:
        return "failed"
    if status in (Trial.RUNNING, Trial.PENDING, Trial.PAUSED):
        if metric in last_result and not finite(last_result[metric]):
            return "failed"
        return "running" if status == Trial.RUNNING else "pending"
    if metric not in last_result or not finite(last_result[metric]):
        return "failed"
    return "finished" if last_result.get("final") else "pruned"


class NonFiniteStopper(Stopper):
    """Stops a trial at the first report whose searched metric is NaN or infinite (ASHA never cuts those).

    Tune consults the stopper before the scheduler and the searcher, so neither sees the bad value.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.metric in result and not finite(result[self.metric])

    def stop_all(self) -> bool:
        return False


class ProgressPrinter(Callback):
    """A line every ``every`` seconds (and one per ended trial) with the counts and the best so far::

        [lstm 01:25] 2 running · 3 finished · 2 pruned · 1 failed · 0 pending | best valid_ic 0.0412 (trial 3a1f, epoch 4)
    """

    def __init__(self, model: str, metric: str, every: float = 10.0, stream: TextIO | None = None) -> None:
        self.model, self.metric, self.every = model, metric, every
        self.stream = stream
        self.start = time.monotonic()
        self.last_print = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A restored printer (resumed search) counts time from the resume."""
        self.__dict__.update(state, start=time.monotonic(), last_print=0.0)

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def line(self, trials: list[Trial], ended: tuple[Trial, str] | None = None) -> str:
        """The counts and the best so far; ``ended`` is a trial Tune still lists as running, with its outcome."""
        counts = dict.fromkeys(OUTCOMES, 0)
        best: tuple[float, Trial] | None = None
        for trial in trials:
            if ended is not None and trial is ended[0]:
                counts[ended[1]] += 1
            else:
                counts[outcome(trial.status, trial.last_result, self.metric)] += 1
            value = (trial.last_result or {}).get(f"best_{self.metric}")
            if finite(value) and (best is None or value > best[0]):
                best = (value, trial)
        elapsed = int(time.monotonic() - self.start)
        text = f"[{self.model} {elapsed // 60:02d}:{elapsed % 60:02d}] " + " · ".join(
            f"{counts[key]} {key}" for key in OUTCOMES)
        if best is not None:
            text += (f" | best {self.metric} {best[0]:.4f} (trial {best[1].trial_id}, "
                     f"epoch {best[1].last_result.get('best_epoch')})")
        return text

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        if now - self.last_print >= self.every:
            self.last_print = now
            self._write(self.line(trials))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._ended(trials, trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._ended(trials, trial)

    def _ended(self, trials: list[Trial], trial: Trial) -> None:
        result = trial.last_result or {}
        status = Trial.ERROR if trial.status == Trial.ERROR else Trial.TERMINATED
        how = outcome(status, result, self.metric)
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        self._write(f"[{self.model}] trial {trial.trial_id} {how} after epoch {result.get('epoch', 0)} "
                    f"({self.metric} {shown})")
        self.last_print = time.monotonic()
        self._write(self.line(trials, ended=(trial, how)))


class TensorBoardLogger(Callback):
    """Per-epoch ``train_loss``/``valid_loss``/``valid_ic`` of every trial, and one HParams entry per ended trial
    (its searched hyperparameters, outcome, best-epoch metrics), under ``logdir/<trial id>/``."""

    def __init__(self, logdir: Path, space: Space, metric: str) -> None:
        self.logdir = Path(logdir)
        self.space = space
        self.metric = metric
        self._writers: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_writers": {}}

    def _writer(self, trial: Trial) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        if trial.trial_id not in self._writers:
            self._writers[trial.trial_id] = SummaryWriter(log_dir=str(self.logdir / trial.trial_id))
        return self._writers[trial.trial_id]

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        writer = self._writer(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        for key in EPOCH_SCALARS:
            if key in result:
                writer.add_scalar(key, float(result[key]), epoch)
        writer.flush()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._hparams(trial, Trial.TERMINATED)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._hparams(trial, Trial.ERROR)

    def _hparams(self, trial: Trial, status: str) -> None:
        result = trial.last_result or {}
        hparams = {}
        for name in self.space.params:
            value = trial.config.get(name)
            hparams[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
        hparams["outcome"] = outcome(status, result, self.metric)
        metrics = {f"hparams/{key}": float(result.get(key, math.nan))
                   for key in ("best_valid_ic", "best_valid_loss", "best_score", "best_epoch", "epoch")}
        writer = self._writer(trial)
        writer.add_hparams(hparams, metrics, run_name=".")
        writer.close()
        del self._writers[trial.trial_id]

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
