"""Write the best trial of a run as ``best.yaml`` (docs/design.md) and as a Qlib workflow config ``best_qlib.yaml``.

``best_qlib.yaml`` follows Qlib's Alpha360 benchmark workflows: ``qlib_init``, market, benchmark, the Alpha360
handler with the benchmark processors (RobustZScoreNorm with clip_outlier and Fillna on the features; DropnaLabel
and CSRankNorm on the label), the model with Qlib's class, module and constructor names, DatasetH with the run's
segments, and the SignalRecord / SigAnaRecord / PortAnaRecord records with the backtest settings of
``evaluation.backtest.BacktestConfig`` (the ones our own evaluation uses). Its header comment states its choices:

* ``provider_uri``: the searched source when it is a Qlib data directory, else the directory given to
  ``export --qlib-data``; otherwise (embedded data, a price table) a placeholder that ``qrun`` refuses, and the
  file and the export's output say so. Qlib cannot read a price table.
* the training schedule (``--schedule``): ``search`` (default) writes the ``n_epochs``/``early_stop`` the search
  trained its trials under; ``qlib`` writes Qlib's published schedule (``n_epochs`` 200, ``early_stop`` 20, ...).
* ``metric``: Qlib's LSTM, GRU, Transformer, Localformer, TCN and GATs early-stop on the loss only and its HIST
  and IGMTF on the IC only, so the file keeps each model's Qlib metric; the search kept epochs by its objective.

For GATs, HIST and IGMTF, ``best.yaml`` records the run's pretrained bases (``bases``: kind → shape, our file,
Qlib's plain state_dict) and what the best trial started from (``pretrained``); ``best_qlib.yaml`` sets
``model_path`` to the base's ``.pkl`` when the best trial started from it.
Floats are written by PyYAML (``1.0e-05``, ``0.001``), which ruamel (``qrun``) also reads as floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphatune import models
from alphatune.datasets import is_qlib_dir
from alphatune.evaluation.backtest import BacktestConfig
from alphatune.evaluation.best import Best, Confirmation, KeptEpoch, Overfitting, SearchBudget, Training
from alphatune.search.options import SCHEDULES, OptionError, SearchOptions, space_origin
from alphatune.search.pretrained import read_bases
from alphatune.search.results import TrialRecord
from alphatune.search.rundir import Manifest, RunDir, as_run_dir, dump_yaml
from alphatune.storage import Location

BEST = "best.yaml"
BEST_QLIB = "best_qlib.yaml"
LABEL = "Ref($close, -2) / Ref($close, -1) - 1"
PROVIDER_PLACEHOLDER = "REPLACE/WITH/A/QLIB/DATA/DIRECTORY"
MLFLOW_NOTE = "qrun's default recorder is mlflow's file store: with mlflow >= 3 run it as MLFLOW_ALLOW_FILE_STORE=true qrun best_qlib.yaml"


@dataclass
class Exported:
    """What ``write_exports`` wrote, and what a user must know about it."""

    best: Location
    qlib: Location
    notes: list[str] = field(default_factory=list)


def best_record(manifest: Manifest, best: TrialRecord, counts: dict[str, int], run_dir: RunDir,
                unfinished: int = 0, confirmation: Confirmation | None = None,
                overfitting: Overfitting | None = None) -> Best:
    """The ``Best`` of a run (best.yaml's content): the winner ``best`` (the confirmed winner when the
    confirmation is complete), the ``confirmation`` and ``overfitting`` reports; ``unfinished`` trials or
    confirmation runs make it provisional."""
    options = manifest.options
    metric = options.metric
    device = "cuda" if options.gpus_per_trial > 0 else "cpu"
    bases = read_bases(run_dir) if models.get_spec(manifest.model).pretrained_base else None
    return Best(
        model=manifest.model, hyperparameters=dict(best.hyperparameters), data=dict(manifest.data),
        validation=KeptEpoch(metric=metric, valid_ic=best.best_valid_ic, valid_loss=best.best_valid_loss,
                             best_epoch=best.best_epoch, epochs=best.epochs, **fold_record(manifest, best)),
        trial_id=best.trial_id, optuna_trial=best.optuna_trial, checkpoint=str(best.checkpoint),
        pretrained=(best.pretrained or "none") if bases is not None else None,
        bases={kind: base.to_dict() for kind, base in bases.items()} if bases is not None else None,
        search=SearchBudget(run_dir=str(run_dir), space_file=space_origin(manifest.space.source),
                            samples=options.samples, max_epochs=options.max_epochs, objective=metric,
                            sampler=options.sampler, threads=max(1, int(options.cpus_per_trial)), trials=counts),
        training=training_record(options, best, device), provisional=unfinished > 0, unfinished=unfinished,
        confirmation=confirmation, overfitting=overfitting)


def fold_record(manifest: Manifest, best: TrialRecord) -> dict[str, Any]:
    """best.yaml's ``validation.folds`` and ``fold_train`` of a walk-forward search (nothing for one fold): each
    fold's windows and the winner's kept numbers on it."""
    if manifest.fold_count == 1:
        return {}
    kept = {fold["fold"]: fold for fold in best.folds}
    return {"fold_train": manifest.folds.train, "folds": [
        {"fold": number, **window.to_dict(), **{key: value for key, value in kept.get(number, {}).items()
                                                if key != "fold"}}
        for number, window in enumerate(manifest.folds.windows, 1)]}


def training_record(options: SearchOptions, best: TrialRecord, device: str) -> Training:
    """How the winner really trained: the speed options as they ran (``amp`` true only where mixed precision ran,
    ``precision`` its dtype; ``amp_refused`` says why not when it was asked for and the device could not)."""
    speed = options.speed(device)
    if best.precision is None:  # a run of an earlier version: what was asked for
        return Training(device=device, **speed)
    amp = best.precision != "float32"
    refused = ("--amp was asked for, but the trial's device has no mixed-precision kernels for this network (e.g. "
               "a CPU without AVX-512 bfloat16): it trained in float32") if speed["amp"] and not amp else None
    return Training(device=device, amp=amp, graphs=speed["graphs"], tf32=speed["tf32"], precision=best.precision,
                    amp_refused=refused)


def base_model_path(run_dir: RunDir, best: TrialRecord) -> str | None:
    """The Qlib state_dict (``.pkl``) of the base the best trial started from; ``None`` when it started from
    random weights."""
    for base in read_bases(run_dir).values():
        if best.pretrained == base.path:
            return base.qlib_path
    return None


@dataclass(frozen=True)
class Provider:
    """best_qlib.yaml's ``provider_uri``, what it is (the header says it), and a warning when it is a placeholder."""

    uri: str
    what: str
    warning: str | None = None


def provider_of(data: dict[str, Any], qlib_data: str | None) -> Provider:
    """``qlib_data``, else the searched source when it is a Qlib directory, else a placeholder saying why."""
    source = str(data.get("source") or "")
    searched = "the embedded data" if source in ("", "embedded") else (
        f"the Qlib data directory {source}" if is_qlib_dir(source) else f"the price table {source}")
    if qlib_data is not None:
        path = Path(qlib_data).expanduser().resolve()
        if not is_qlib_dir(path):
            raise OptionError(f"--qlib-data {qlib_data}: not a Qlib data directory (no calendars/day.txt)")
        if source and is_qlib_dir(source) and Path(source).expanduser().resolve() == path:
            return Provider(str(path), "the Qlib data directory the search read.")
        return Provider(str(path), f"the Qlib data directory given to --qlib-data; the search read {searched}, so "
                                   f"this directory must hold the same market and dates.")
    if source and is_qlib_dir(source):
        return Provider(source, "the Qlib data directory the search read.")
    warning = (f"the search ran on {searched}, which Qlib cannot read: best_qlib.yaml's provider_uri is a "
               f"placeholder; export again with --qlib-data DIR (a Qlib data directory holding the same market "
               f"and dates) before running qrun")
    return Provider(PROVIDER_PLACEHOLDER, warning + ".", warning)


def qlib_document(manifest: Manifest, hyperparameters: dict[str, Any], model_path: str | None = None,
                  provider: str = PROVIDER_PLACEHOLDER, schedule: str = "search") -> dict[str, Any]:
    """A Qlib workflow config (as ``qrun`` reads it) training ``hyperparameters`` on the run's data; GATs, HIST
    and IGMTF load their base from ``model_path`` when given."""
    if schedule not in SCHEDULES:
        raise OptionError(f"--schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    spec = models.get_spec(manifest.model)
    data = manifest.data
    segments = {name: list(span) for name, span in data["segments"].items()}
    train, test = segments["train"], segments["test"]
    market = data.get("market") or "csi300"
    benchmark = data.get("benchmark") or "SH000300"
    backtest = BacktestConfig()

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
                     "kwargs": {"signal": "<PRED>", "topk": backtest.topk, "n_drop": backtest.n_drop}},
        "backtest": {"start_time": test[0], "end_time": test[1], "account": backtest.account, "benchmark": benchmark,
                     "exchange_kwargs": {"limit_threshold": backtest.limit_threshold, "deal_price": "close",
                                         "open_cost": backtest.open_cost, "close_cost": backtest.close_cost,
                                         "min_cost": backtest.min_cost}},
    }
    # Qlib's RNN, TCN and graph models have no weight decay (theirs is 0, which ours equals unless searched).
    kwargs = {key: value for key, value in hyperparameters.items()
              if not (key == "weight_decay" and value == 0.0)}
    kwargs["metric"] = spec.defaults["metric"]  # the only metric Qlib's class of this model accepts
    if schedule == "qlib":
        kwargs.update(n_epochs=spec.defaults["n_epochs"], early_stop=spec.defaults["early_stop"])
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


def _header(manifest: Manifest, document: dict[str, Any], schedule: str, provider: Provider, writer: str) -> str:
    """The comment block that states best_qlib.yaml's choices; ``writer`` is the command that wrote it."""
    kwargs = document["task"]["model"]["kwargs"]
    benchmark = document["benchmark"]
    lines = [f"Qlib workflow config of the best {manifest.model} trial (written by `alphatune {writer}`).",
             f"provider_uri: {provider.what}",
             f"benchmark: {benchmark}" + ("." if manifest.data.get("benchmark") else
                                          ", Qlib's published one: the searched data has no benchmark series."),
             f"schedule ({schedule}): n_epochs {kwargs['n_epochs']}, early_stop {kwargs['early_stop']}: "
             + ("the budget the search trained its trials under (export --schedule qlib for Qlib's published one)."
                if schedule == "search" else "Qlib's published schedule (the search trained under "
                f"at most {manifest.options.max_epochs} epochs)."),
             f"metric: {kwargs['metric']}, the only one Qlib's {document['task']['model']['class']} accepts; the "
             f"search kept each trial's epoch by its objective, {manifest.options.metric}.",
             MLFLOW_NOTE + "."]
    return "".join(f"# {line}\n" for line in lines)


def write_exports(run_dir: RunDir | Location | Path, manifest: Manifest, best: TrialRecord, counts: dict[str, int],
                  qlib_data: str | None = None, schedule: str = "search", writer: str = "search export",
                  unfinished: int = 0, out_dir: Location | None = None, confirmation: Confirmation | None = None,
                  overfitting: Overfitting | None = None) -> Exported:
    """Write ``best.yaml`` and ``best_qlib.yaml`` into ``out_dir`` (a path or URI), or into the run directory (its driver files:
    ``RunDir.push`` puts them into object storage); ``writer`` is the command doing it (their headers say so);
    ``unfinished`` trials or confirmation runs make best.yaml provisional."""
    run_dir = as_run_dir(run_dir)
    target = Location.of(out_dir) if out_dir is not None else Location.of(run_dir.work)
    provider = provider_of(manifest.data, qlib_data)
    document = qlib_document(manifest, best.hyperparameters, base_model_path(run_dir, best), provider.uri, schedule)
    record = best_record(manifest, best, counts, run_dir, unfinished, confirmation, overfitting)
    header = (f"# provisional: written while {unfinished} trial(s) or confirmation run(s) of this search were "
              f"unfinished; `alphatune search resume {run_dir.parent}` finishes them and writes it again\n"
              ) if unfinished else ""
    dump_yaml(record.to_dict(), target / BEST, header=header)
    dump_yaml(document, target / BEST_QLIB, header=_header(manifest, document, schedule, provider, writer))
    where = Location.of(out_dir) if out_dir is not None else run_dir.root
    notes = [provider.warning] if provider.warning else []
    if unfinished:
        notes.append(f"best.yaml is provisional: {unfinished} trial(s) or confirmation run(s) unfinished")
    return Exported(where / BEST, where / BEST_QLIB, notes)
