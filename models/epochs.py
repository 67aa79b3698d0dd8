"""What a fit reports: one ``EpochMetrics`` per epoch (to the callback, as it goes) and a ``FitResult`` at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


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


# Called after every epoch with the epoch's metrics and the trainer (models.Trainer); True stops the fit.
Callback = Callable[[EpochMetrics, Any], "bool | None"]
