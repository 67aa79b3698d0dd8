"""Write the best trial of a run as ``best.yaml`` (docs/design.md) and as a Qlib workflow config ``best_qlib.yaml``.

``best_qlib.yaml`` follows Qlib's Alpha360 benchmark workflows: ``qlib_init``, market, benchmark, the Alpha360
handler with the benchmark processors (RobustZScoreNorm with clip_outlier and Fillna on the features; DropnaLabel
and CSRankNorm on the label), the model with Qlib's class, module and constructor names, DatasetH with the run's
segments, and the SignalRecord / SigAnaRecord / PortAnaRecord records with the Alpha360 backtest settings.
For GATs, HIST and IGMTF, ``best.yaml`` records the run's pretrained bases (``bases``: kind → shape, our file,
Qlib's plain state_dict) and what the best trial started from (``pretrained``); ``best_qlib.yaml`` sets
``model_path`` to the base's ``.pkl`` when the best trial started from it (Qlib loads a base of its default
size only, which is the size the search's base has).
Floats are written by PyYAML (``1.0e-05``, ``0.001``), which ruamel (``qrun``) also reads as floats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
from search.pretrained import read_bases
from search.rundir import Manifest, dump_yaml
from search.results import TrialRecord

BEST = "best.yaml"
BEST_QLIB = "best_qlib.yaml"
QLIB_DEFAULT_PROVIDER = "~/.qlib/qlib_data/cn_data"
LABEL = "Ref($close, -2) / Ref($close, -1) - 1"


def best_document(manifest: Manifest, best: TrialRecord, counts: dict[str, int], run_dir: Path) -> dict[str, Any]:
    """The content of ``best.yaml``."""
    metric = manifest.options.metric
    return {
        "model": manifest.model,
        "hyperparameters": dict(best.hyperparameters),
        "data": dict(manifest.data),
        "validation": {"metric": metric, "score": best.best_score, "valid_loss": best.best_valid_loss,
                       "valid_ic": best.best_valid_ic, "best_epoch": best.best_epoch},
        "trial_id": best.trial_id,
        "checkpoint": str(best.checkpoint),
        **_base_fields(manifest, best, run_dir),
        "search": {"run_dir": str(run_dir), "space_file": manifest.space.source,
                   "samples": manifest.options.samples, "max_epochs": manifest.options.max_epochs,
                   "sampler": manifest.options.sampler, "trials": counts},
    }


def _base_fields(manifest: Manifest, best: TrialRecord, run_dir: Path) -> dict[str, Any]:
    """``pretrained`` and ``bases`` of ``best.yaml`` for a model with a pretrained base; nothing otherwise."""
    if not models.get_spec(manifest.model).pretrained_base:
        return {}
    bases = read_bases(run_dir)
    return {"pretrained": best.pretrained or "none",
            "bases": {kind: base.to_dict() for kind, base in bases.items()}}


def base_model_path(run_dir: Path, best: TrialRecord) -> str | None:
    """The Qlib state_dict (``.pkl``) of the base the best trial started from; ``None`` when it started from
    random weights."""
    for base in read_bases(run_dir).values():
        if best.pretrained == base.path:
            return base.qlib_path
    return None


def qlib_document(manifest: Manifest, hyperparameters: dict[str, Any], model_path: str | None = None
                  ) -> dict[str, Any]:
    """A Qlib workflow config (as ``qrun`` reads it) training ``hyperparameters`` on the run's data; GATs, HIST
    and IGMTF load their base from ``model_path`` when given."""
    spec = models.get_spec(manifest.model)
    data = manifest.data
    segments = {name: list(span) for name, span in data["segments"].items()}
    train, test = segments["train"], segments["test"]
    source = str(data.get("source") or "")
    provider = source if source and Path(source).expanduser().is_dir() else QLIB_DEFAULT_PROVIDER
    market = data.get("market") or "csi300"
    benchmark = data.get("benchmark") or "SH000300"

    handler = {
        "start_time": train[0], "end_time": test[1], "fit_start_time": train[0], "fit_end_time": train[1],
        "instruments": market,
        "infer_processors": [
            {"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature", "clip_outlier": True}},
            {"class": "Fillna", "kwargs": {"fields_group": "feature"}},
        ],
        "learn_processors": [
            {"class": "DropnaLabel"},
            {"class": "CSRankNorm", "kwargs": {"fields_group": "label"}},
        ],
        "label": [LABEL],
    }
    port_analysis = {
        "strategy": {"class": "TopkDropoutStrategy", "module_path": "qlib.contrib.strategy",
                     "kwargs": {"signal": "<PRED>", "topk": 50, "n_drop": 5}},
        "backtest": {"start_time": test[0], "end_time": test[1], "account": 100000000, "benchmark": benchmark,
                     "exchange_kwargs": {"limit_threshold": 0.095, "deal_price": "close", "open_cost": 0.0005,
                                         "close_cost": 0.0015, "min_cost": 5}},
    }
    # Qlib's RNN, TCN and graph models have no weight decay (theirs is 0, which ours equals unless searched).
    kwargs = {key: value for key, value in hyperparameters.items()
              if not (key == "weight_decay" and value == 0.0)}
    kwargs.update(loss="mse", GPU=0)
    if model_path is not None:
        kwargs["model_path"] = model_path
    if spec.name == "hist":  # Qlib's HIST reads its concept graph from these files (shipped with Qlib's examples)
        kwargs.update(stock2concept="benchmarks/HIST/qlib_csi300_stock2concept.npy",
                      stock_index="benchmarks/HIST/qlib_csi300_stock_index.npy")
    return {
        "qlib_init": {"provider_uri": provider, "region": "cn"},
        "market": market,
        "benchmark": benchmark,
        "data_handler_config": handler,
        "port_analysis_config": port_analysis,
        "task": {
            "model": {"class": spec.qlib_class, "module_path": spec.qlib_module, "kwargs": kwargs},
            "dataset": {"class": "DatasetH", "module_path": "qlib.data.dataset",
                        "kwargs": {"handler": {"class": "Alpha360", "module_path": "qlib.contrib.data.handler",
                                               "kwargs": handler},
                                   "segments": segments}},
            "record": [
                {"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
                 "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
                {"class": "SigAnaRecord", "module_path": "qlib.workflow.record_temp",
                 "kwargs": {"ana_long_short": False, "ann_scaler": 252}},
                {"class": "PortAnaRecord", "module_path": "qlib.workflow.record_temp",
                 "kwargs": {"config": port_analysis}},
            ],
        },
    }


def write_exports(run_dir: Path, manifest: Manifest, best: TrialRecord, counts: dict[str, int]) -> tuple[Path, Path]:
    """Write ``best.yaml`` and ``best_qlib.yaml`` into ``run_dir``; returns their paths."""
    best_path, qlib_path = Path(run_dir) / BEST, Path(run_dir) / BEST_QLIB
    dump_yaml(best_document(manifest, best, counts, Path(run_dir)), best_path)
    dump_yaml(qlib_document(manifest, best.hyperparameters, base_model_path(Path(run_dir), best)), qlib_path)
    return best_path, qlib_path
