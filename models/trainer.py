"""One trainer for all eight networks, keeping Qlib's training contract (reference ``qlib-models.md`` §2).

Adam (or plain SGD) with the configured learning rate and weight decay; MSE over finite labels; every gradient
element clipped to ±``grad_clip`` (3.0) before each step; early stopping with patience on the validation score,
the best epoch's weights restored at the end. The score is −(validation loss) or the mean daily IC.

Batching, as Qlib:

* ``"rows"``: row indices shuffled each epoch and cut into ``batch_size`` slices; the last partial slice is
  dropped in training and in the validation loss (Qlib's ``test_epoch``), while ``predict`` scores every row.
  A segment smaller than one batch is used as one partial batch (Qlib would train on nothing and score NaN).
* ``"day"``: one trading day per optimizer step, days shuffled each epoch; evaluation in date order.

Where this trainer deliberately differs from Qlib:

* NaN-safe early stopping (Qlib #1794): a NaN/inf score counts as no improvement and is reported unchanged to the
  callback; if no epoch ever scores a finite value, the final weights are kept, ``best_epoch`` is 0 and
  ``best_score`` NaN. Qlib crashes there (its best weights are never set).
* A one-row batch gives a one-element prediction, never a 0-d scalar (networks return ``[N]``).
* ``metric="loss"`` works for HIST and IGMTF (Qlib's tuple comparison bug #2163), and ``"ic"`` for every model.
* The daily IC skips days where it is undefined (fewer than two labelled rows, constant prediction or label)
  instead of turning the whole score into NaN; any non-finite prediction still makes the IC score NaN.
* The training set is re-scored each epoch only with ``eval_train=True`` (Qlib always does it).
* Rows without a finite label are left out of training and validation (Qlib's ``DropnaLabel``); prepared
  train/valid segments have none, so this only copies data for hand-made datasets.

Beside it: what a fit reports (``models.epochs``), the segments as tensors (``models.segments``), the device and
precision policy (``models.precision``: amp, TF32, CUDA graphs, compile), the training state that lets a fit go
on exactly (``models.state``), checkpoints (``models.checkpoint``), static steps for CUDA graphs
(``models.steps``). The loop has no numpy→torch conversion or pandas; evaluation runs under
``torch.inference_mode`` in batches (day models: many days per call, padded and masked).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from alphatune.models.checkpoint import hyperparameters_of, save_checkpoint
from alphatune.models.config import TrainConfig
from alphatune.models.days import DayModel
from alphatune.models.epochs import Callback, EpochMetrics, FitResult
from alphatune.models.hyperparameters import Hyperparameters
from alphatune.models.metrics import daily_ic, daily_mse, masked_mse, mean_of_defined
from alphatune.models.precision import Precision
from alphatune.models.segments import Segment, day_chunks, load_segment
from alphatune.models.state import FitState, restore, snapshot
from alphatune.models.steps import StaticStep


class Trainer:
    """Fits one network under a ``TrainConfig``; predicts, saves and reports per epoch through a callback.

    It knows no model by name: a network is trained on rows, or, when it is a ``DayModel``, one trading day per
    step, given what it asks of the dataset (``attach``) and refreshed before each epoch (``refresh``).
    ``hyperparameters`` (the model's typed hyperparameters) are what ``save`` writes; without them they are read
    back from the network's attributes and the config (``models.checkpoint.hyperparameters_of``).
    """

    def __init__(self, net: torch.nn.Module, config: TrainConfig, hyperparameters: Hyperparameters | None = None):
        self.config = config
        self.device = torch.device(config.device)
        self.net = net.to(self.device)
        self._hyperparameters = hyperparameters
        self._day_model = isinstance(net, DayModel)
        if self._day_model and config.batch_mode != "day":
            raise ValueError(f"{type(net).__name__} mixes the stocks of one day: it needs batch_mode='day', "
                             f"not {config.batch_mode!r}")
        self.precision = Precision.of(config)
        self.precision.apply()
        self._scaler = torch.amp.GradScaler("cuda") if self.precision.loss_scaling else None
        self._train_net = torch.compile(net, dynamic=self._day_model) if self.precision.compile else net
        self._static: StaticStep | None = None
        self._generator = torch.Generator()
        self._fit: FitState | None = None
        self._daily_ic: dict[str, pd.Series] = {}

    # ------------------------------------------------------------------ training

    def fit(self, ds: Any, callback: Callback | None = None, resume: dict[str, Any] | None = None) -> FitResult:
        """Train on ``ds``'s train segment, early-stop on its valid segment, restore the best weights.

        ``callback(metrics, trainer)`` runs after every epoch; returning ``True`` stops training
        (``stopped_by="callback"``); inside it ``trainer.training_state()`` is the state after that epoch.
        ``resume`` is such a state (or one read back with ``read_training_state``): training continues after its
        epoch exactly as it would have without the interruption (same weights, optimizer moments, shuffling and
        dropout draws, best epoch and patience; bit for bit on CPU), and the returned ``history`` holds the epochs
        before it too. Returns a ``FitResult`` whose ``history`` holds every epoch run.
        """
        cfg = self.config
        self._seed()
        self._attach(ds)
        train = load_segment(ds, "train", self.device, labelled_only=True)
        valid = load_segment(ds, "valid", self.device, labelled_only=True)
        run = self._fit = FitState(self._optimizer())
        if resume is not None:
            restore(resume, self.net, run, self._generator, self.device, cfg.n_epochs, self._scaler)
        result = run.result
        if run.patience >= cfg.early_stop:
            result.stopped_by = "early_stop"
        for epoch in range(len(result.history) + 1, cfg.n_epochs + 1):
            if result.stopped_by != "n_epochs":
                break
            start = time.perf_counter()
            self._refresh(train)
            train_loss = self._train_epoch(train, run.optimizer)
            valid_loss, valid_ic = self._evaluate(valid)
            train_score = self._score(*self._evaluate(train)) if cfg.eval_train else None
            score = self._score(valid_loss, valid_ic)
            if math.isfinite(score) and not score <= result.best_score:  # NaN best_score: any finite wins
                result.best_score, result.best_epoch, run.patience = score, epoch, 0
                run.best_valid = (valid_loss, valid_ic)
                run.best_state = {key: value.detach().clone() for key, value in self.net.state_dict().items()}
            else:
                run.patience += 1
            metrics = EpochMetrics(epoch, train_loss, valid_loss, valid_ic, score, result.best_score,
                                   result.best_epoch, time.perf_counter() - start, train_score, *run.best_valid,
                                   final=epoch == cfg.n_epochs or run.patience >= cfg.early_stop)
            result.history.append(metrics)
            if callback is not None and callback(metrics, self):  # True (or any truthy value) stops
                result.stopped_by = "callback"
            elif run.patience >= cfg.early_stop:
                result.stopped_by = "early_stop"
        if run.best_state is not None and result.best_epoch != len(result.history):
            self.net.load_state_dict(run.best_state)
        return result

    def training_state(self) -> dict[str, Any]:
        """Everything ``fit(resume=...)`` needs to continue after the last finished epoch (``models.state``); only
        while ``fit`` runs or after it (``RuntimeError`` before)."""
        if self._fit is None:
            raise RuntimeError("training_state() needs a fit: call it from fit's callback or after fit")
        return snapshot(self.net, self._fit, self._generator, self.device, self._scaler)

    def _seed(self) -> None:
        """Seed numpy, torch and the shuffling generator from ``config.seed``; without a seed the generator
        draws its seed from torch's global generator, so a run seeded from outside is reproducible too."""
        seed = self.config.seed
        if seed is not None:
            np.random.seed(seed)
            torch.manual_seed(seed)
            self._generator.manual_seed(seed)
        else:
            self._generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))

    def _optimizer(self) -> torch.optim.Optimizer:
        params = self.net.parameters()
        cuda = self.device.type == "cuda"
        if self.config.optimizer == "adam":  # the fused kernel on CUDA: one launch per step, same update rule;
            return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay,  # capturable
                                    fused=cuda, capturable=cuda and self.precision.graphs)  # keeps its step on GPU
        return torch.optim.SGD(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _static_step(self, seg: Segment, optimizer: torch.optim.Optimizer) -> StaticStep:
        """This fit's static training step (``models.steps``), made on first use."""
        if self._static is None or self._static.segment is not seg or self._static.optimizer is not optimizer:
            cuda_graphs = self.device.type == "cuda"
            self._static = StaticStep(self._train_net, seg, optimizer, self.config.grad_clip,
                                      lambda: self._autocast(cache=not cuda_graphs), self._day_model,
                                      min(self.config.batch_size, seg.n_rows), graphs=cuda_graphs)
        return self._static

    def _autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """Autocast to the amp dtype, or nothing without amp (``cache=False`` inside a CUDA graph capture)."""
        if self.precision.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision.amp_dtype, cache_enabled=cache)

    def _forward(self, net: torch.nn.Module, seg: Segment, rows: slice | torch.Tensor,
                 day_offsets: np.ndarray | None = None) -> torch.Tensor:
        """Scores ``[n]`` of ``seg``'s ``rows`` (a slice of whole days for day models, with their offsets).

        ``net`` is the compiled network for training steps (when ``compile``), the plain one for evaluation,
        whose shapes vary from call to call."""
        x = seg.features[rows] if isinstance(rows, slice) else seg.features.index_select(0, rows)
        with self._autocast():
            out = net(x, day_offsets, seg.instrument_index[rows]) if self._day_model else net(x)
        return out.float()

    def _step(self, optimizer: torch.optim.Optimizer, seg: Segment, rows: slice | torch.Tensor) -> torch.Tensor:
        labels = seg.labels[rows] if isinstance(rows, slice) else seg.labels.index_select(0, rows)
        loss = masked_mse(self._forward(self._train_net, seg, rows), labels)
        optimizer.zero_grad(set_to_none=True)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_value_(self.net.parameters(), self.config.grad_clip)
            self._scaler.step(optimizer)
            self._scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_value_(self.net.parameters(), self.config.grad_clip)
            optimizer.step()
        return loss.detach()

    def _train_epoch(self, seg: Segment, optimizer: torch.optim.Optimizer) -> float:
        """One pass over ``seg``; returns the mean training loss of its steps."""
        self.net.train()
        total = torch.zeros((), device=self.device)
        static = self._static_step(seg, optimizer) if self.precision.graphs else None
        if self.config.batch_mode == "rows":
            size = self.config.batch_size
            order = torch.randperm(seg.n_rows, generator=self._generator).to(self.device)
            steps = max(seg.n_rows // size, 1)
            for step in range(steps):
                batch = order[step * size:(step + 1) * size]
                total += static(batch) if static is not None else self._step(optimizer, seg, batch)
        else:
            steps = seg.n_days
            order = torch.randperm(steps, generator=self._generator)
            if static is not None:
                days = order.to(self.device)
                for step in range(steps):
                    total += static(days[step:step + 1])
            else:
                for day in order.tolist():
                    total += self._step(optimizer, seg, slice(int(seg.offsets[day]), int(seg.offsets[day + 1])))
        return float(total) / steps

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def _predict_segment(self, seg: Segment) -> torch.Tensor:
        """Scores ``[rows]`` of every row of ``seg`` in eval mode, in large batches (many days per call)."""
        self.net.eval()
        rows_per_call = self.precision.eval_rows
        if not self._day_model:
            return torch.cat([self._forward(self.net, seg, slice(start, start + rows_per_call))
                              for start in range(0, seg.n_rows, rows_per_call)])
        parts = []
        for first, stop in day_chunks(seg.offsets, rows_per_call):
            rows = slice(int(seg.offsets[first]), int(seg.offsets[stop]))
            parts.append(self._forward(self.net, seg, rows, seg.offsets[first:stop + 1] - seg.offsets[first]))
        return torch.cat(parts)

    def daily_ic(self, segment: str = "valid") -> pd.Series:
        """The IC of every day of ``segment`` (``valid``, or ``train`` with ``eval_train``) as the last epoch
        evaluated it (during ``fit``'s callback: that epoch), indexed by date; NaN on a day where it is undefined
        (``models.metrics.daily_ic``). Its mean over the defined days is the epoch's ``valid_ic``. ``KeyError``
        before any epoch has evaluated ``segment``."""
        return self._daily_ic[segment]

    def _evaluate(self, seg: Segment) -> tuple[float, float]:
        """(loss, mean daily IC) of the network on ``seg``; the daily IC is kept (``daily_ic``).

        Loss as Qlib's ``test_epoch``: rows mode, the mean over the full ``batch_size`` batches in row order (the
        remainder dropped; a segment smaller than one batch is one batch); day mode, the mean of the daily MSEs.
        """
        pred = self._predict_segment(seg)
        if self.config.batch_mode == "rows":
            size = min(self.config.batch_size, seg.n_rows)
            full = seg.n_rows // size * size
            batch_mse = (pred[:full] - seg.labels[:full]).double().square().view(-1, size).mean(dim=1)
            loss = float(batch_mse.mean())
        else:
            loss = float(daily_mse(pred, seg.labels, seg.offsets_device).mean())
        daily = (daily_ic(pred, seg.labels, seg.offsets_device) if bool(torch.isfinite(pred).all())
                 else torch.full((seg.n_days,), math.nan, dtype=torch.float64))
        self._daily_ic[seg.name] = pd.Series(daily.cpu().numpy(), index=pd.DatetimeIndex(seg.dates, name="date"),
                                             name="ic")
        return loss, mean_of_defined(daily)

    def _score(self, loss: float, ic: float) -> float:
        return -loss if self.config.metric == "loss" else ic

    def predict(self, ds: Any, segment: str = "test") -> pd.Series:
        """Scores of every row of ``ds``'s ``segment`` (rows without a label included), as a float32 Series
        named ``score`` indexed by (datetime, instrument) in the segment's row order."""
        self._attach(ds)
        if getattr(self.net, "needs_refresh", False):
            self._refresh(load_segment(ds, "train", self.device, labelled_only=True))
        pred = self._predict_segment(load_segment(ds, segment, self.device, labelled_only=False))
        return pd.Series(pred.cpu().numpy(), index=ds.segment(segment).index(), name="score")

    # ------------------------------------------------------------------ day-model inputs

    def _attach(self, ds: Any) -> None:
        """Give a day model what it asks of the dataset besides the rows (``DayModel.attach``)."""
        if self._day_model:
            self.net.attach(ds)

    def _refresh(self, train: Segment) -> None:
        """Let a day model rebuild its state from the training days with the current weights
        (``DayModel.refresh``; IGMTF's memory), under this trainer's autocast."""
        if getattr(self.net, "needs_refresh", False):
            with self._autocast():
                self.net.refresh(train.features, train.offsets, self.precision.eval_rows)

    # ------------------------------------------------------------------ checkpoints

    def hyperparameters(self) -> Hyperparameters:
        """The model's typed hyperparameters that ``save`` writes: those given to the trainer, else read back from
        the network's attributes and this trainer's config."""
        return self._hyperparameters or hyperparameters_of(self.net, self.config)

    def save(self, path: str | Path) -> None:
        """Write the network's checkpoint (``models.checkpoint``) to ``path``."""
        save_checkpoint(path, self.net, self.hyperparameters())
