"""Driver-side Tune plug-ins: the stopper (NaN, a trial's own failure, a fault of the environment), the ledger's
worker events, and TensorBoard logging (the progress display is ``search.progress``).

They run in the driver process (never in a trial), so a trial's worker stays free of logging work, and the
TensorBoard files of all trials land in one place: ``RUN/tensorboard/<trial id>/``. What only Tune's callbacks
see of the workers (starts, error texts) goes to the run's ledger through ``WorkerEvents``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.stopper import Stopper

from alphatune.search.ledger import RunRecords
from alphatune.search.objective import Objective, finite
from alphatune.search.results import outcome
from alphatune.search.rundir import EnvironmentFault
from alphatune.search.searcher import OPTUNA_TRIAL, TENSORBOARD_RUN
from alphatune.search.trial import ERROR, FAULT
from alphatune.spaces import Conditional, Space

class TrialStopper(Stopper):
    """Stops a trial at the first report whose searched metric is NaN or infinite (ASHA never cuts those), or that
    says the trial failed by itself (``error``, ``search.trial``). A report of a fault of the environment
    (``fault``) stops the whole search: it raises ``EnvironmentFault``, which ends Tune's run at once and reaches
    the driver's ``fault_guard``; nothing of that report is recorded against the trial.

    Tune consults the stopper before the scheduler and the searcher, so neither sees these reports' values.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get(FAULT):
            raise EnvironmentFault(str(result[FAULT]), trial_id=trial_id, node=result.get("node"),
                                   full=bool(result.get("full")))
        if result.get(ERROR):
            return True
        return self.metric in result and not finite(result[self.metric])

    def stop_all(self) -> bool:
        return False


class WorkerEvents(Callback):
    """What only Tune's callbacks see, into the run's ledger (``search.ledger``): each time a worker starts a trial
    (retries included), and a trial Tune gave up on (its worker or node lost beyond ``--max-failures``:
    interrupted by the environment, with the error's last line; the trial has not ended)."""

    def __init__(self, ledger: RunRecords) -> None:
        self.ledger = ledger

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.ledger.started(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.ledger.interrupted(trial.trial_id, trial_error_line(trial) or "its worker was lost")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.ledger.close()


def tensorboard_run(trial: Trial) -> str:
    """The TensorBoard run a trial writes into (``RUN/tensorboard/<run>``): its own id, or the run of the trial it
    took over (``tensorboard_run`` in its config: one run per Optuna trial)."""
    return str((trial.config or {}).get(TENSORBOARD_RUN) or trial.trial_id)


def trial_error_line(trial: Trial) -> str | None:
    """The last line of the error Tune wrote for a trial (the exception itself), if it can be read."""
    path = trial.error_file
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").strip().splitlines() if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else None


def written_steps(run: Path) -> set[int]:
    """The epochs whose scalars a TensorBoard run folder already holds (none when it has no event file)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    steps: set[int] = set()
    for path in sorted(run.glob("events.out.tfevents.*")) if run.is_dir() else []:
        try:
            for event in EventFileLoader(str(path)).Load():
                if any(value.tag in EPOCH_SCALARS for value in event.summary.value):
                    steps.add(int(event.step))
        except Exception:  # a file torn by a kill: what was read before the tear counts
            continue
    return steps


# TensorBoard scalar tags, per epoch: the epoch's own numbers, and those of the epoch the trial keeps so far (step
# curves whose last point is the trial's result: the HParams table shows each curve's last point). With walk-forward
# folds, each fold's curves are ``fold<k>/<tag>`` over its own epochs, and the kept values (``FOLD_MEANS``) are also
# the trial's: the mean over its folds so far, over all its epochs.
EPOCH_SCALARS = {"train_loss": "train_loss", "valid_loss": "valid_loss", "valid_ic": "valid_ic",
                 "kept_epoch": "best_epoch", "kept_valid_ic": "best_valid_ic", "kept_valid_loss": "best_valid_loss"}
FOLD_MEANS = ("kept_valid_ic", "kept_valid_loss")


def _column(name: str, values: tuple[Any, ...] = (), numeric: bool = False, differs: bool = False) -> Any:
    """An HParams column: numbers, or the discrete ``values`` (strings, booleans or numbers), or free strings."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2
    if values and all(isinstance(value, bool) for value in values):
        kind = api_pb2.DATA_TYPE_BOOL
    elif numeric or (values and not any(isinstance(value, str) for value in values)):
        kind, values = api_pb2.DATA_TYPE_FLOAT64, tuple(float(value) for value in values)
    else:
        kind = api_pb2.DATA_TYPE_STRING
    info = api_pb2.HParamInfo(name=name, type=kind, differs=differs)
    if values:
        domain = struct_pb2.ListValue()
        domain.extend(list(values))
        info.domain_discrete.CopyFrom(domain)
    return info


TICKED = 5  # the columns TensorBoard's HParams table ticks by default


def _searched_column(name: str, param: Any, differs: bool = False) -> Any:
    dist = param.cases[0][1] if isinstance(param, Conditional) else param
    return _column(name, dist.choices, differs=differs) if dist.kind == "categorical" else \
        _column(name, numeric=True, differs=differs)


def write_experiment(logdir: Path, model_spaces: dict[str, Space], goal: Objective, folds: int = 1) -> None:
    """The HParams experiment of a search, written into one model's ``logdir`` (``RUN/tensorboard``): every
    searched model's hyperparameters (the union, so the table at the search's root shows them all, whichever
    model's experiment TensorBoard reads), then ``model``, ``outcome`` and ``trial``, and the metrics named for what
    they are: the kept epoch's numbers first (the trial's result; the objective's own first), then the last epoch's.
    With walk-forward ``folds``, the trial's kept numbers are the means over its folds, and each fold's kept
    objective is a column of its own (``fold<k>/kept_<objective>``): the curves a trial writes then.

    TensorBoard ticks the first five columns by default, after sorting them by ``differs`` (true first) and by
    name: the searched hyperparameters say they differ (the first five in the spaces' own order, so that ``lr``,
    ``hidden_size`` and ``num_layers`` are not hidden behind ``batch_size`` and ``dropout``), the rest do not."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter
    from alphatune.search.results import OUTCOMES
    columns: dict[str, Any] = {}
    for space in model_spaces.values():
        for name, param in space.params.items():
            if name not in columns:
                columns[name] = _searched_column(name, param, differs=len(columns) < TICKED)
    columns.update({"model": _column("model", tuple(model_spaces)), "outcome": _column("outcome", OUTCOMES),
                    "trial": _column("trial")})
    columns["optuna_trial"] = _column("optuna_trial", numeric=True)
    other = goal.other
    if folds > 1:
        metrics = [(f"kept_{goal.name}", f"{goal.name}, mean over folds",
                    f"the objective: the mean over the trial's folds of each fold's kept {goal.name}"),
                   (f"kept_{other}", f"{other}, mean over folds", f"the mean over the trial's folds of each fold's "
                                                                  f"{other} at its kept epoch")]
        metrics += [(f"fold{fold}/kept_{goal.name}", f"{goal.name}, fold {fold}",
                     f"{goal.name} of the epoch the trial keeps on fold {fold} (empty: pruned before it)")
                    for fold in range(1, folds + 1)]
    else:
        metrics = [(f"kept_{goal.name}", f"{goal.name} at the kept epoch",
                    f"the objective: {goal.name} of the epoch the trial keeps (its best by {goal.name})"),
                   (f"kept_{other}", f"{other} at the kept epoch", f"{other} of the epoch the trial keeps"),
                   ("kept_epoch", "kept epoch", f"the epoch the trial keeps, its best by {goal.name}"),
                   ("valid_ic", "valid_ic (last epoch)", "valid_ic of the trial's last epoch, kept or not"),
                   ("valid_loss", "valid_loss (last epoch)", "valid_loss of the trial's last epoch, kept or not"),
                   ("train_loss", "train_loss (last epoch)", "train_loss of the trial's last epoch")]
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=shown, description=text)
                    for tag, shown, text in metrics]
    experiment = api_pb2.Experiment(hparam_infos=list(columns.values()), metric_infos=metric_infos,
                                    time_created_secs=time.time())
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment))
    writer = SummaryWriter(log_dir=str(logdir))
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=content)]))
    writer.close()


class TensorBoardLogger(Callback):
    """Every trial's curves and its HParams session, under ``logdir/<trial id>/``.

    Per epoch: ``train_loss``, ``valid_loss``, ``valid_ic`` of the epoch, and the numbers of the epoch the trial
    keeps so far (``kept_epoch``, ``kept_valid_ic``, ``kept_valid_loss``: step curves whose last point is the
    trial's result). When the trial ends, its session: ``model``, ``outcome``, ``trial`` (the Ray trial id), the
    searched hyperparameters and ``optuna_trial``. The columns of the HParams table are the search's experiment
    (``write_experiment``, written when the search starts): its metric columns are the last points of the curves
    above, named for what they are.

    Each epoch is written once per run, whatever retries and resumes happened: a retried trial reports its saved
    epoch again, and a trial that takes over an interrupted one (``search.resume``) writes into that trial's run
    (``tensorboard_run`` in its config), whose steps already written are read back from its event files first. A
    trial a fault interrupted gets no session: it has not ended.
    """

    def __init__(self, logdir: Path, space: Space, goal: Objective) -> None:
        self.logdir = Path(logdir)
        self.space = space
        self.goal = goal
        self._writers: dict[str, Any] = {}
        self._steps: dict[str, set[int]] = {}  # run name → the epochs written there

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_writers": {}, "_steps": {}}

    def _run(self, trial: Trial) -> str:
        return tensorboard_run(trial)

    def _writer(self, trial: Trial) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        run = self._run(trial)
        if run not in self._writers:
            self._steps.setdefault(run, written_steps(self.logdir / run))
            self._writers[run] = SummaryWriter(log_dir=str(self.logdir / run))
        return self._writers[run]

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        if not isinstance(result.get("epoch"), int):  # a trial's failure: no epoch of its own
            return
        writer, written = self._writer(trial), self._steps[self._run(trial)]
        if result["epoch"] in written:
            return
        fold = result.get("fold")
        for tag, key in EPOCH_SCALARS.items():
            if key not in result:
                continue
            if fold is None:
                writer.add_scalar(tag, float(result[key]), result["epoch"])
                continue
            if tag in FOLD_MEANS:  # the trial's value: the mean over its folds so far, over all its epochs
                writer.add_scalar(tag, float(result[key]), result["epoch"])
            # a curve per fold, over the fold's own epochs
            writer.add_scalar(f"fold{fold}/{tag}", float(result[f"fold_{key}" if tag.startswith("kept_") else key]),
                              result["fold_epoch"])
        writer.flush()
        written.add(result["epoch"])

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._session(trial, Trial.TERMINATED)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        writer = self._writers.pop(self._run(trial), None)  # interrupted by the environment: no session yet
        if writer is not None:
            writer.close()

    def _session(self, trial: Trial, status: str) -> None:
        from torch.utils.tensorboard.summary import hparams
        hparams_dict: dict[str, Any] = {"model": self.space.model,
                                        "outcome": outcome(status, trial.last_result or {}, self.goal.name),
                                        "trial": trial.trial_id}
        if isinstance(trial.config.get(OPTUNA_TRIAL), int):
            hparams_dict["optuna_trial"] = trial.config[OPTUNA_TRIAL]
        for name in self.space.params:
            value = trial.config.get(name)
            if value is not None:
                hparams_dict[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
        _, session_start, session_end = hparams(hparams_dict, {})
        writer = self._writer(trial)
        writer.file_writer.add_summary(session_start)
        writer.file_writer.add_summary(session_end)
        writer.close()
        del self._writers[self._run(trial)]

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
