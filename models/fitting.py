"""A model fitted in one call: ``fit(name, ds, hyperparameters)``, and the network a fit starts from.

``initial_network`` is the one place a fit's network is made: seeded, built, and, for GATs, HIST and IGMTF, its
LSTM/GRU base copied in (``models.bases``), as Qlib's ``model_path`` does.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from alphatune.progress import Progress

from alphatune.models.bases import load_base, pretrain_base
from alphatune.models.config import RUN_OPTIONS
from alphatune.models.epochs import Callback, FitResult
from alphatune.models.factory import checked_hyperparameters, seeded_network, train_config
from alphatune.models.hyperparameters import Hyperparameters
from alphatune.models.options import PRETRAIN
from alphatune.models.registry import get_spec
from alphatune.models.trainer import Trainer

def initial_network(hp: Hyperparameters, ds: Any = None, pretrained: str | None = None,
                    **run_options: Any) -> torch.nn.Module:
    """The network a fit starts from: seeded by ``hp.seed`` before it is built (the same seed, the same initial
    weights), then, for GATs, HIST and IGMTF, its base copied in from ``pretrained``: an LSTM/GRU state_dict file
    (ours or Qlib's ``.pkl``), ``"pretrain"`` (train the base on ``ds`` first, ``models.bases.pretrain_base``,
    with ``run_options``) or ``None`` (random weights)."""
    net = seeded_network(hp)
    if pretrained is not None and get_spec(hp.model).pretrained_base:
        if pretrained == PRETRAIN:
            base, _ = pretrain_base(hp.base_model, ds, d_feat=hp.d_feat, hidden_size=hp.hidden_size,
                                    num_layers=hp.num_layers, max_epochs=hp.n_epochs, seed=hp.seed, **run_options)
            load_base(net, base.net.state_dict())
        else:
            load_base(net, pretrained)
    return net


def fit(name: str, ds: Any, hyperparameters: dict[str, Any] | Hyperparameters | None = None,
        callback: Callback | None = None, pretrained: str | None = None, progress: bool = True,
        **options: Any) -> tuple[Trainer, FitResult]:
    """Build model ``name`` from its hyperparameters (a flat dict in Qlib's names over Qlib's defaults, or the
    typed object), train it on ``ds`` and return ``(trainer, result)``.

    ``options`` are training hyperparameters or run options (``device``, ``eval_train``, ``amp``, ...). GATs,
    HIST and IGMTF start from ``pretrained``: an LSTM/GRU state_dict file (ours or Qlib's ``.pkl``), ``"pretrain"``
    (train the base on ``ds`` first) or ``None`` (random weights). With a seed, torch and numpy are seeded before the
    network is built, so the same seed gives the same initial weights and, on CPU, the same predictions.
    ``progress``: show the epochs (``alphatune.progress``: a bar on a terminal or in a notebook, a line at most every
    10 s elsewhere; each epoch's losses and IC, the best epoch and the time left), on stdout.
    """
    spec = get_spec(name)
    run = {key: value for key, value in options.items() if key in RUN_OPTIONS}
    values = {key: value for key, value in options.items() if key not in RUN_OPTIONS}
    if isinstance(hyperparameters, Hyperparameters):
        hp = hyperparameters.replace(**values) if values else checked_hyperparameters(spec.name, hyperparameters)
    else:
        hp = checked_hyperparameters(spec.name, {**(hyperparameters or {}), **values})
    net = initial_network(hp, ds, pretrained, **run)
    trainer = Trainer(net, train_config(hp, **run), hp)
    if not progress:
        return trainer, trainer.fit(ds, callback)
    shown = Progress(hp.n_epochs, name, "epoch")
    began = time.monotonic()

    def report(metrics: Any, fitted: Trainer) -> bool | None:
        shown.update(1)
        left = (time.monotonic() - began) / metrics.epoch * (hp.n_epochs - metrics.epoch)
        shown.status(f"epoch {metrics.epoch}: train loss {metrics.train_loss:.4f}, valid loss {metrics.valid_loss:.4f}, "
                     f"valid IC {metrics.valid_ic:.4f}; best epoch {metrics.best_epoch}", left)
        return callback(metrics, fitted) if callback is not None else None

    try:
        result = trainer.fit(ds, report)
    finally:
        shown.close()
    return trainer, result
