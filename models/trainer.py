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

Speed: each segment's arrays become tensors on the training device once per ``fit`` (on CPU
``torch.from_numpy`` without copying; read-only arrays from ``ray.get`` are fine, nothing writes into them), the
loop has no numpy→torch conversion or pandas, and evaluation runs under ``torch.inference_mode`` in batches
(day models: many days per call, padded and masked). ``amp`` is bf16 autocast (on CUDA fp16 with a
``GradScaler`` where bf16 is missing; on CPU only where oneDNN has bf16 kernels, else ignored; on an AVX512-BF16
CPU it made an LSTM/GRU training step 1.7-2x faster). ``compile`` (``torch.compile``) is used on CUDA only.
On CUDA, training steps have static shapes and are captured whole in CUDA graphs (``graphs``, on by default
there; ``models.steps``), and float32 matmuls use TensorFloat-32 (``tf32``, on by default there).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from alphatune.models.config import TrainConfig
from alphatune.models.metrics import daily_mse, mean_daily_ic, masked_mse
from alphatune.models.days import DayModel
from alphatune.models.precision import Precision
from alphatune.models.hyperparameters import Hyperparameters
from alphatune.models.registry import get_spec
from alphatune.models.steps import StaticStep


@dataclass
class EpochMetrics:
    """What one epoch measured, as the callback receives it.

    ``score`` is the early-stopping score (−``valid_loss`` or ``valid_ic``, higher is better, NaN allowed);
    ``best_score``/``best_epoch`` include this epoch (``best_epoch`` 0 and ``best_score`` NaN while no epoch has
    scored a finite value), and ``best_valid_loss``/``best_valid_ic`` are that best epoch's numbers (NaN while there
    is none). ``train_score`` is the same score on the training set, only with ``eval_train``. ``final``: by the
    trainer's own rules no epoch follows this one (``n_epochs`` reached, or early stopping's patience used up).
    """

    epoch: int
    train_loss: float
    valid_loss: float
    valid_ic: float
    score: float
    best_score: float
    best_epoch: int
    seconds: float
    train_score: float | None = None
    best_valid_loss: float = math.nan
    best_valid_ic: float = math.nan
    final: bool = False


@dataclass
class FitResult:
    """The outcome of ``Trainer.fit``: one ``EpochMetrics`` per epoch run, and why training stopped."""

    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.nan
    stopped_by: Literal["early_stop", "callback", "n_epochs"] = "n_epochs"


Callback = Callable[[EpochMetrics, "Trainer"], "bool | None"]


@dataclass
class _Segment:
    """One segment's arrays as tensors on the training device, plus its day offsets on both sides."""

    name: str
    features: torch.Tensor          # float32 [rows, d_feat * T]
    labels: torch.Tensor            # float32 [rows]
    instrument_index: torch.Tensor  # int64 [rows]
    offsets: np.ndarray             # int64 [days + 1], CPU, for slicing
    offsets_device: torch.Tensor    # the same on the device, for the metrics

    @property
    def n_rows(self) -> int:
        return len(self.labels)

    @property
    def n_days(self) -> int:
        return len(self.offsets) - 1


def _tensor(array: np.ndarray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``: no copy on CPU when it already has the dtype and is contiguous."""
    array = np.ascontiguousarray(array, dtype=dtype)
    with warnings.catch_warnings():  # read-only arrays (ray.get, memory maps) are never written through
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    return tensor if device.type == "cpu" else tensor.to(device)


def _segment(ds: Any, name: str, device: torch.device, labelled_only: bool) -> _Segment:
    """Segment ``name`` of ``ds`` on ``device``; with ``labelled_only`` the rows without a finite label are left
    out (days left empty disappear). A segment with no row at all is refused with a clear error."""
    arrays = ds.segment(name)
    features, labels = arrays.features, arrays.labels
    instruments, offsets = arrays.instrument_index, np.asarray(arrays.day_offsets, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError(f"segment {name!r} has no rows")
    if labelled_only:
        finite = np.isfinite(labels)
        if not finite.all():
            if not finite.any():
                raise ValueError(f"segment {name!r} has no row with a finite label")
            kept_before = np.concatenate([[0], np.cumsum(finite)])
            offsets = np.unique(kept_before[offsets])
            features, labels, instruments = features[finite], labels[finite], instruments[finite]
    return _Segment(name, _tensor(features, np.float32, device), _tensor(labels, np.float32, device),
                    _tensor(instruments, np.int64, device), offsets, _tensor(offsets, np.int64, device))


def _day_chunks(offsets: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive day ranges ``[start, stop)`` of at most ``max_rows`` rows each (at least one day each)."""
    chunks, start, n_days = [], 0, len(offsets) - 1
    while start < n_days:
        stop = int(np.searchsorted(offsets, offsets[start] + max_rows, side="right")) - 1
        stop = min(max(stop, start + 1), n_days)
        chunks.append((start, stop))
        start = stop
    return chunks


TRAINING_STATE_FORMAT = 1


@dataclass
class _Run:
    """What one ``fit`` carries from epoch to epoch (and what ``training_state`` saves besides the weights)."""

    optimizer: torch.optim.Optimizer
    result: FitResult = field(default_factory=FitResult)
    patience: int = 0
    best_valid: tuple[float, float] = (math.nan, math.nan)  # (valid_loss, valid_ic) of the best epoch
    best_state: dict[str, torch.Tensor] | None = None


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy on the CPU (never a view of the live tensors: training goes on while a copy is being written)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _snapshot(value: Any) -> Any:
    """A copy of an optimizer's ``state_dict`` whose tensors training will not change underneath."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_snapshot(item) for item in value]
    return value


def read_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A state written by ``torch.save(trainer.training_state(), path)``, read safely (``weights_only``) with its
    tensors on ``device``. ``ValueError`` naming the file when it is not such a state."""
    try:
        state = torch.load(Path(path), map_location=device, weights_only=True)
    except Exception as error:  # a torn or foreign file: many exception types, all meaning "not loadable"
        raise ValueError(f"{path}: not a training state ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"{path}: not a training state of format {TRAINING_STATE_FORMAT}")
    return state


class Trainer:
    """Fits one network under a ``TrainConfig``; predicts, saves and reports per epoch through a callback.

    It knows no model by name: a network is trained on rows, or, when it is a ``DayModel``, one trading day per
    step, given what it asks of the dataset (``attach``) and refreshed before each epoch (``refresh``).
    ``hyperparameters`` (the model's typed hyperparameters) are what ``save`` writes; without them they are read
    back from the network's attributes and the config (``models.fit`` always passes them).
    """

    def __init__(self, net: torch.nn.Module, config: TrainConfig, hyperparameters: Hyperparameters | None = None):
        self.config = config
        self.device = torch.device(config.device)
        self.net = net.to(self.device)
        self._hyperparameters = hyperparameters
        self._day_model = isinstance(net, DayModel)
        if config.batch_mode not in ("rows", "day"):
            raise ValueError(f"batch_mode={config.batch_mode!r} is not one of rows, day")
        if config.metric not in ("loss", "ic"):
            raise ValueError(f"metric={config.metric!r} is not one of loss, ic")
        if config.optimizer not in ("adam", "gd"):
            raise ValueError(f"optimizer={config.optimizer!r} is not one of adam, gd")
        if self._day_model and config.batch_mode != "day":
            raise ValueError(f"{type(net).__name__} mixes the stocks of one day: it needs batch_mode='day', "
                             f"not {config.batch_mode!r}")
        self.precision = Precision.of(config)
        self.precision.apply()
        self._amp_dtype = self.precision.amp_dtype
        self._scaler = torch.amp.GradScaler("cuda") if self.precision.loss_scaling else None
        self._train_net = torch.compile(net, dynamic=self._day_model) if self.precision.compile else net
        self._graphs = self.precision.graphs
        self._static: StaticStep | None = None
        self._eval_rows = self.precision.eval_rows
        self._generator = torch.Generator()

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
        train = _segment(ds, "train", self.device, labelled_only=True)
        valid = _segment(ds, "valid", self.device, labelled_only=True)
        optimizer = self._optimizer()
        run = _Run(optimizer)
        if resume is not None:
            self._restore(resume, run)
        self._run = run
        result = run.result
        if run.patience >= cfg.early_stop:
            result.stopped_by = "early_stop"
        for epoch in range(len(result.history) + 1, cfg.n_epochs + 1):
            if result.stopped_by != "n_epochs":
                break
            start = time.perf_counter()
            self._refresh(train)
            train_loss = self._train_epoch(train, optimizer)
            valid_loss, valid_ic = self._evaluate(valid)
            train_score = None
            if cfg.eval_train:
                train_score = self._score(*self._evaluate(train))
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
        """Everything ``fit(resume=...)`` needs to continue after the last finished epoch: the epochs so far, the
        current and best weights, the optimizer's state, the shuffling generator and torch's random state (CPU,
        and the device's on CUDA). Plain tensors, numbers and strings, so ``torch.load(weights_only=True)`` reads it
        back. It is a snapshot: training can go on while it is being written. Only while ``fit`` runs or after it
        (``RuntimeError`` before)."""
        run = getattr(self, "_run", None)
        if run is None:
            raise RuntimeError("training_state() needs a fit: call it from fit's callback or after fit")
        result = run.result
        state: dict[str, Any] = {
            "format": TRAINING_STATE_FORMAT, "history": [asdict(metrics) for metrics in result.history],
            "best_epoch": result.best_epoch, "best_score": result.best_score, "patience": run.patience,
            "best_valid": list(run.best_valid),
            "net": _cpu(self.net.state_dict()), "best_net": _cpu(run.best_state) if run.best_state else None,
            "optimizer": _snapshot(run.optimizer.state_dict()), "generator": self._generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "scaler": self._scaler.state_dict() if self._scaler is not None else None}
        return state

    def _restore(self, state: dict[str, Any], run: "_Run") -> None:
        """Load a ``training_state`` into the network, the optimizer and ``run`` (``ValueError`` if it does not fit)."""
        if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
            raise ValueError(f"not a training state of format {TRAINING_STATE_FORMAT}")
        try:
            self.net.load_state_dict(state["net"])
            run.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"the training state does not fit this network: {error}") from None
        history = [EpochMetrics(**metrics) for metrics in state["history"]]
        if len(history) > self.config.n_epochs:
            raise ValueError(f"the training state has {len(history)} epochs, more than n_epochs "
                             f"{self.config.n_epochs}")
        run.result.history = history
        run.result.best_epoch, run.result.best_score = int(state["best_epoch"]), float(state["best_score"])
        run.patience, run.best_valid = int(state["patience"]), tuple(state["best_valid"])
        run.best_state = ({key: value.to(self.device) for key, value in state["best_net"].items()}
                          if state["best_net"] is not None else None)
        self._generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self._scaler is not None and state.get("scaler"):
            self._scaler.load_state_dict(state["scaler"])

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
                                    fused=cuda, capturable=cuda and self._graphs)  # keeps its step on the GPU
        return torch.optim.SGD(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _static_step(self, seg: _Segment, optimizer: torch.optim.Optimizer) -> StaticStep:
        """This fit's static training step (``models.steps``), made on first use."""
        if self._static is None or self._static.segment is not seg or self._static.optimizer is not optimizer:
            cuda_graphs = self.device.type == "cuda"
            autocast = (lambda: self._autocast(cache=not cuda_graphs))
            self._static = StaticStep(self._train_net, seg, optimizer, self.config.grad_clip, autocast,
                                      self._day_model, min(self.config.batch_size, seg.n_rows), graphs=cuda_graphs)
        return self._static

    def _autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """Autocast to the amp dtype, or nothing without amp (``cache=False`` inside a CUDA graph capture)."""
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype, cache_enabled=cache)

    def _forward(self, net: torch.nn.Module, seg: _Segment, rows: slice | torch.Tensor,
                 day_offsets: np.ndarray | None = None) -> torch.Tensor:
        """Scores ``[n]`` of ``seg``'s ``rows`` (a slice of whole days for day models, with their offsets).

        ``net`` is the compiled network for training steps (when ``compile``), the plain one for evaluation,
        whose shapes vary from call to call."""
        x = seg.features[rows] if isinstance(rows, slice) else seg.features.index_select(0, rows)
        with self._autocast():
            out = net(x, day_offsets, seg.instrument_index[rows]) if self._day_model else net(x)
        return out.float()

    def _step(self, optimizer: torch.optim.Optimizer, seg: _Segment, rows: slice | torch.Tensor) -> torch.Tensor:
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

    def _train_epoch(self, seg: _Segment, optimizer: torch.optim.Optimizer) -> float:
        """One pass over ``seg``; returns the mean training loss of its steps."""
        self.net.train()
        total = torch.zeros((), device=self.device)
        static = self._static_step(seg, optimizer) if self._graphs else None
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
    def _predict_segment(self, seg: _Segment) -> torch.Tensor:
        """Scores ``[rows]`` of every row of ``seg`` in eval mode, in large batches (many days per call)."""
        self.net.eval()
        if not self._day_model:
            return torch.cat([self._forward(self.net, seg, slice(start, start + self._eval_rows))
                              for start in range(0, seg.n_rows, self._eval_rows)])
        parts = []
        for first, stop in _day_chunks(seg.offsets, self._eval_rows):
            rows = slice(int(seg.offsets[first]), int(seg.offsets[stop]))
            parts.append(self._forward(self.net, seg, rows, seg.offsets[first:stop + 1] - seg.offsets[first]))
        return torch.cat(parts)

    def _evaluate(self, seg: _Segment) -> tuple[float, float]:
        """(loss, mean daily IC) of the network on ``seg``.

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
        ic = mean_daily_ic(pred, seg.labels, seg.offsets_device) if bool(torch.isfinite(pred).all()) else math.nan
        return loss, ic

    def _score(self, loss: float, ic: float) -> float:
        return -loss if self.config.metric == "loss" else ic

    def predict(self, ds: Any, segment: str = "test") -> pd.Series:
        """Scores of every row of ``ds``'s ``segment`` (rows without a label included), as a float32 Series
        named ``score`` indexed by (datetime, instrument) in the segment's row order."""
        self._attach(ds)
        if getattr(self.net, "needs_refresh", False):
            self._refresh(_segment(ds, "train", self.device, labelled_only=True))
        pred = self._predict_segment(_segment(ds, segment, self.device, labelled_only=False))
        return pd.Series(pred.cpu().numpy(), index=ds.segment(segment).index(), name="score")

    # ------------------------------------------------------------------ day-model inputs

    def _attach(self, ds: Any) -> None:
        """Give a day model what it asks of the dataset besides the rows (``DayModel.attach``)."""
        if self._day_model:
            self.net.attach(ds)

    def _refresh(self, train: _Segment) -> None:
        """Let a day model rebuild its state from the training days with the current weights
        (``DayModel.refresh``; IGMTF's memory), under this trainer's autocast."""
        if getattr(self.net, "needs_refresh", False):
            with self._autocast():
                self.net.refresh(train.features, train.offsets, self._eval_rows)

    # ------------------------------------------------------------------ checkpoints

    def hyperparameters(self) -> Hyperparameters:
        """The model's typed hyperparameters that ``save`` writes: those given to the trainer, else read back from
        the network's attributes and this trainer's config."""
        if self._hyperparameters is not None:
            return self._hyperparameters
        from alphatune.models.qlib_weights import model_name
        cls = get_spec(model_name(self.net)).hyperparameters_class()
        network = [name for name in cls.names() if cls.field_info(name)["network"]]
        missing = [name for name in network if not hasattr(self.net, name)]
        if missing:
            raise ValueError(f"{cls.model}: cannot tell the network's {', '.join(missing)}; create the trainer with "
                             f"models.fit(...) or Trainer(..., hyperparameters=...)")
        cfg = self.config
        values = {name: getattr(self.net, name) for name in network}
        values.update(lr=cfg.lr, n_epochs=cfg.n_epochs, early_stop=cfg.early_stop, batch_size=cfg.batch_size,
                      metric=cfg.metric, optimizer=cfg.optimizer, seed=cfg.seed)
        values[cls.DECAY] = cfg.weight_decay
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        """Write ``{"model", "hyperparameters", "state_dict"}`` with ``torch.save`` (tensors on CPU) to ``path``."""
        hyperparameters = self.hyperparameters()
        state = {key: value.detach().cpu() for key, value in self.net.state_dict().items()}
        torch.save({"model": hyperparameters.model, "hyperparameters": hyperparameters.to_dict(), "state_dict": state},
                   Path(path))


def fit(name: str, ds: Any, hyperparameters: dict[str, Any] | Hyperparameters | None = None,
        callback: Callback | None = None, pretrained: str | None = None, **options: Any) -> tuple[Trainer, FitResult]:
    """Build model ``name`` from its hyperparameters (a flat dict in Qlib's names over Qlib's defaults, or the
    typed object), train it on ``ds`` and return ``(trainer, result)``.

    ``options`` are training hyperparameters or run options (``device``, ``eval_train``, ``amp``, ...). GATs,
    HIST and IGMTF start from ``pretrained``: an LSTM/GRU state_dict file (ours or Qlib's ``.pkl``), ``"pretrain"``
    (train the base on ``ds`` first, ``models.bases.pretrain_base``) or ``None`` (random weights). With a seed, torch
    and numpy are seeded before the network is built, so the same seed gives the same initial weights and, on CPU,
    the same predictions.
    """
    from alphatune.models.factory import RUN_OPTIONS, initial_network, train_config
    from alphatune.models.factory import checked_hyperparameters as checked
    spec = get_spec(name)
    run = {key: value for key, value in options.items() if key in RUN_OPTIONS}
    values = {key: value for key, value in options.items() if key not in RUN_OPTIONS}
    if isinstance(hyperparameters, Hyperparameters):
        hp = hyperparameters.replace(**values) if values else checked(spec.name, hyperparameters)
    else:
        hp = checked(spec.name, {**(hyperparameters or {}), **values})
    net = initial_network(hp, ds, pretrained, **run)
    trainer = Trainer(net, train_config(hp, **run), hp)
    return trainer, trainer.fit(ds, callback)


__all__ = ["Callback", "EpochMetrics", "FitResult", "Trainer", "fit", "read_training_state"]
