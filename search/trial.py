"""The trial function: the one place where a model, the shared dataset and Ray Tune meet.

Each epoch the trainer's callback reports to Tune (``tune.report``): ``epoch``, ``train_loss``, ``valid_loss``,
``valid_ic``, ``score`` (the trainer's early-stopping score), ``seconds`` (the epoch's training and validation
time), ``started_at`` and ``reported_at`` (Unix times, to the microsecond, of the trial function's start and of the
report, after the checkpoint is written: Tune's ``timestamp`` is whole seconds),
the best epoch so far and its numbers
(``best_epoch``, ``best_score``, ``best_valid_ic``, ``best_valid_loss``), and ``final`` (this is the trial's
last epoch by its own budget or early stopping, so a trial that ends without ``final`` was stopped by ASHA).

The best state so far is checkpointed (``model.pt`` from ``Trainer.save`` plus ``trial_state.json``) with the
report of the epoch that reached it. A retried trial (its worker died) restarts from that checkpoint: the best
weights, the epoch count and the best numbers carry over; the optimizer state does not.

GATs, HIST and IGMTF start from the search's pretrained base (``search.pretrained``) when the trial's
``base_model`` and sizes match it, else from random weights; every report carries ``pretrained``: the base
file loaded, ``none``, or ``none (shape mismatch: ...)``. A trial restored from its own checkpoint keeps its
restored weights: the base is not loaded over them.

A non-finite value of the searched metric stops the trial at once (the callback returns ``True``); the report
carries it, so the driver records the trial as failed. It is not raised as an error, so Tune does not retry it.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

import models
from search.pretrained import bases_from_dicts, choose
from spaces import Space

MODEL_FILE = "model.pt"
STATE_FILE = "trial_state.json"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def train_trial(config: dict[str, Any], *, dataset: Any, space: Space, max_epochs: int, metric: str,
                threads: int, device: str, bases: dict[str, dict[str, Any]] | None = None) -> None:
    """Train one configuration of ``space.model`` on ``dataset`` and report every epoch to Tune.

    ``config`` is Tune's trial config (the searched values); ``dataset`` arrives from the object store (its
    arrays are read-only and shared, never copied). ``max_epochs`` caps the space's ``n_epochs``. ``bases``
    are the search's pretrained bases (kind → ``Base.to_dict()``; empty or ``None``: random start).
    """
    started_at = time.time()
    torch.set_num_threads(max(1, threads))
    for name in ("ray.train", "ray.tune"):  # one INFO line per saved checkpoint is noise in the driver's output
        logging.getLogger(name).setLevel(logging.WARNING)
    hyperparameters = space.hyperparameters(config)
    n_epochs = min(int(hyperparameters.get("n_epochs", max_epochs)), max_epochs)
    early_stop = int(hyperparameters.get("early_stop", n_epochs))
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_score": math.nan, "best_valid_ic": math.nan,
                             "best_valid_loss": math.nan}
    base_path = None
    spec = models.get_spec(space.model)
    if spec.pretrained_base:
        full = models.registry.validate(spec, hyperparameters)
        base_path, state["pretrained"] = choose(bases_from_dicts(bases), full)

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state.update(json.loads((Path(directory) / STATE_FILE).read_text()))
            _, _, net = models.load_checkpoint(Path(directory) / MODEL_FILE)
        base_path = None  # the restored weights already hold the base's start; loading it again would undo them
    remaining = n_epochs - state["epoch"]
    if remaining <= 0:
        return
    run_hp = {**hyperparameters, "n_epochs": remaining}
    built, config_ = models.from_hyperparameters(space.model, run_hp, device=device, pretrained=base_path)
    if checkpoint is None:
        net = built
    trainer = models.Trainer(net, config_, getattr(dataset, "concepts", None), name=space.model,
                             hyperparameters=hyperparameters)
    offset = state["epoch"]

    def report(epoch_metrics: models.EpochMetrics, trainer: models.Trainer) -> bool:
        epoch = offset + epoch_metrics.epoch
        improved = _finite(epoch_metrics.score) and not epoch_metrics.score <= state["best_score"]
        if improved:
            state.update(best_epoch=epoch, best_score=float(epoch_metrics.score),
                         best_valid_ic=float(epoch_metrics.valid_ic), best_valid_loss=float(epoch_metrics.valid_loss))
        state["epoch"] = epoch
        result = {"epoch": epoch, "train_loss": float(epoch_metrics.train_loss),
                  "valid_loss": float(epoch_metrics.valid_loss), "valid_ic": float(epoch_metrics.valid_ic),
                  "score": float(epoch_metrics.score), "seconds": float(epoch_metrics.seconds), "started_at": started_at, **state}
        broken = not _finite(result[metric])
        result["final"] = broken or epoch >= n_epochs or epoch - state["best_epoch"] >= early_stop
        if improved and not broken:
            with tempfile.TemporaryDirectory(prefix="alphatune-ckpt-") as directory:
                trainer.save(Path(directory) / MODEL_FILE)
                (Path(directory) / STATE_FILE).write_text(json.dumps(state))
                tune.report({**result, "reported_at": time.time()},
                            checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report({**result, "reported_at": time.time()})
        return result["final"]

    trainer.fit(dataset, callback=report)
