"""Training options: one plain dataclass, filled from a model's Qlib defaults by ``models.train_config``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from alphatune.models.hyperparameters import Hyperparameters
from alphatune.models.registry import BatchMode


@dataclass
class TrainConfig:
    """How the shared trainer fits one network (Qlib's training contract).

    ``metric`` picks the early-stopping score: ``"loss"`` is the negative masked MSE on the validation
    segment, ``"ic"`` the mean daily Pearson IC. ``batch_mode`` is ``"rows"`` (random minibatches of
    ``batch_size`` rows, the last partial batch dropped in training and validation, as Qlib) or ``"day"``
    (one trading day per batch, days shuffled in training). ``eval_batch_size`` is how many rows one no-grad
    evaluation call takes (for day batches: whole days up to that many rows, at least one day); ``None`` picks
    512 rows on CPU (faster per row than larger calls there) and ``4 * max(batch_size, 1024)`` on CUDA.
    ``amp`` (bf16 autocast) acts on CUDA and on CPUs with bf16 kernels; ``compile`` on CUDA only.
    ``graphs``: train with static steps captured whole in CUDA graphs (``models.steps``); ``None`` (the default)
    means on for CUDA, off elsewhere; ``True`` off CUDA runs the same static steps eagerly. ``tf32``: let float32
    matmuls and convolutions use TensorFloat-32 on CUDA (``None``, the default: on for CUDA); the parity checks
    against Qlib run with it off.
    """

    n_epochs: int = 200
    lr: float = 1e-3
    early_stop: int = 20
    batch_size: int = 800
    metric: Literal["loss", "ic"] = "loss"
    optimizer: Literal["adam", "gd"] = "adam"
    weight_decay: float = 0.0
    batch_mode: Literal["rows", "day"] = "rows"
    grad_clip: float = 3.0
    seed: int | None = None
    device: str = "cpu"
    eval_train: bool = False
    amp: bool = False
    compile: bool = False
    graphs: bool | None = None
    tf32: bool | None = None
    eval_batch_size: int | None = None

    def __post_init__(self) -> None:
        """The choices are the hyperparameters' own declaration (``models.hyperparameters``) and the registry's
        batch modes: one rule, asked here; ``ValueError`` otherwise."""
        for name in ("metric", "optimizer"):
            Hyperparameters.check_value(name, getattr(self, name))
        if self.batch_mode not in get_args(BatchMode):
            raise ValueError(f"batch_mode={self.batch_mode!r} is not one of {', '.join(get_args(BatchMode))}")


# TrainConfig fields that are not hyperparameters: how a fit runs, not what it learns.
RUN_OPTIONS = tuple(field.name for field in dataclasses.fields(TrainConfig)
                    if field.name not in ("n_epochs", "lr", "early_stop", "batch_size", "metric", "optimizer",
                                          "weight_decay", "batch_mode", "seed"))
