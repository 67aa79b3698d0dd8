"""Evaluate a search's winner as Qlib does, side by side with the model's Qlib default config.

``alphatune evaluate RUN/best.yaml [--data DIR] [--seeds K]`` retrains the searched config and Qlib's
default config, each with K seeds (early stopping on the valid segment, both on the searched config's metric, the
search's objective), predicts the test segment and scores it: IC, ICIR, Rank IC, Rank ICIR against the raw label
(``evaluation.signal``) and Qlib's top-k dropout backtest against the benchmark (``evaluation.backtest``). It prints a
table (mean ± std over seeds; std with ddof 1, none for one seed), writes the same numbers to
``evaluation.yaml`` beside ``best.yaml`` and two plots: ``evaluation_returns.png`` (cumulative excess return with
cost, searched vs default, and the benchmark) and ``evaluation_ic.png`` (daily IC).

Both configs train under the search's epoch budget (best.yaml ``search.max_epochs``) unless ``epochs`` says
otherwise (a number, or ``own``: each config's own ``n_epochs``), with the search trials' torch thread count
(``search.threads``) unless ``threads`` says otherwise, and a progress line per seed and epoch. The run says which
budget it used, and ``evaluation.yaml`` records it.

The seeds are the search's confirmation seeds first (best.yaml ``confirmation``), then 0, 1, 2, ...; where the
confirmation trained the very same thing (same full hyperparameters under the same epoch cap, same start, same
data), its model is scored instead of training it again, and the table shows the confirmation's validation value
next to the test numbers. Without a confirmation the seeds are 0..K-1.

GATs, HIST and IGMTF start both configs from the search's pretrained base recorded in best.yaml (``bases``),
each when its ``base_model`` and sizes match the base (else from random weights, said in the log and in
evaluation.yaml); ``--pretrained`` (a base file, ``pretrain`` or ``none``) overrides that for both.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import yaml

from alphatune import datasets
from alphatune import models
from alphatune import spaces
from alphatune.datasets import DataSpec, is_prepared
from alphatune.models.registry import get_spec
from alphatune.evaluation.best import Best, ConfirmedConfig, ConfirmedRun, epoch_budget
from alphatune.evaluation.errors import EvaluationError
from alphatune.progress import Progress
from alphatune.storage import Location
from alphatune.evaluation.backtest import BacktestConfig, BacktestReport, backtest
from alphatune.evaluation.plots import plot_cumulative_excess, plot_daily_ic
from alphatune.models.bases import bases_from_dicts, choose
from alphatune.models.options import NONE
from alphatune.evaluation.signal import SignalMetrics, signal_metrics

METRICS = ("IC", "ICIR", "Rank IC", "Rank ICIR", "annualized_return", "information_ratio", "max_drawdown")
LABELS = {"annualized_return": "Annualized Return", "information_ratio": "Information Ratio",
          "max_drawdown": "Max Drawdown"}


@dataclass
class Run:
    """One trained model scored on the test segment (``reused``: its model is the confirmation's, not trained
    here)."""

    seed: int
    metrics: dict[str, float]
    best_epoch: int
    epochs: int
    seconds: float
    signal: SignalMetrics
    portfolio: BacktestReport
    reused: bool = False


@dataclass
class ConfigResult:
    """All seeds of one configuration, and its confirmation (the search's runs of the same config on the same
    seeds, when there were any)."""

    hyperparameters: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    pretrained: str | None = None  # GATs/HIST/IGMTF: the base file it started from, or "none (...)"
    confirmed: ConfirmedConfig | None = None

    def mean(self, key: str) -> float:
        return statistics.fmean(run.metrics[key] for run in self.runs)

    def std(self, key: str) -> float | None:
        values = [run.metrics[key] for run in self.runs]
        return statistics.stdev(values) if len(values) > 1 else None


def open_dataset(best: Best, data: str | None, concepts: str | None = None) -> datasets.PreparedDataset:
    """The dataset to evaluate on: best.yaml's data spec (its saved arrays while they exist, else its source
    prepared again with its segments), or ``data`` instead (a prepared directory as it is, or a source prepared
    with best.yaml's segments), with ``concepts`` when given. The model's needs are checked (HIST's concepts:
    ``EvaluationError``)."""
    spec = best.data_spec
    if data is not None and is_prepared(data):
        spec = DataSpec(source=str(Path(data).expanduser()))
    elif data is not None or concepts is not None:
        spec = spec.with_source(data, concepts)
    ds = spec.open()
    try:
        get_spec(best.model).check_dataset(ds)
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    return ds


def default_hyperparameters(model: str) -> dict[str, Any]:
    """Qlib's published Alpha360 config of ``model``: its shipped space's ``default`` (the full flat dict)."""
    return dict(spaces.load(model).default)


def score(prediction: pd.Series, ds: datasets.PreparedDataset, config: BacktestConfig
          ) -> tuple[SignalMetrics, BacktestReport]:
    """Signal metrics against the test segment's raw label, and the backtest over the test segment."""
    if ds.market is None:
        raise EvaluationError(f"dataset {ds.source}: has no market data (prices) for the backtest")
    test = ds.segment("test")
    label = pd.Series(test.raw_labels, index=test.index())
    start, end = ds.segments["test"]
    return (signal_metrics(prediction, label),
            backtest(prediction, ds.market, start, end, config, benchmark_name=ds.benchmark))


def backtest_settings(config: BacktestConfig) -> dict[str, Any]:
    """The backtest's settings as an evaluation record states them."""
    return {"topk": config.topk, "n_drop": config.n_drop, "account": config.account, "open_cost": config.open_cost,
            "close_cost": config.close_cost, "min_cost": config.min_cost, "limit_threshold": config.limit_threshold,
            "trade_unit": config.trade_unit, "annual_days": config.annual_days}


def full_config(model: str, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The full flat config (defaults filled in), without the seed: what decides a training run but the seed."""
    merged = get_spec(model).hyperparameters(hyperparameters).to_dict()
    merged.pop("seed", None)
    return merged


def train_and_score(model: str, hyperparameters: dict[str, Any], seed: int, ds: datasets.PreparedDataset,
                    config: BacktestConfig, epochs: int | None, options: dict[str, Any],
                    progress: Callable[[models.EpochMetrics], None] | None = None) -> Run:
    """Train one seed (early stopping on valid, best weights restored), predict the test segment, score it.
    ``epochs`` caps ``n_epochs`` (``None``: the config's own); ``progress`` sees every epoch."""
    hp = {**capped(model, hyperparameters, epochs), "seed": seed}
    began = time.perf_counter()
    callback = (lambda metrics, _: progress(metrics)) if progress is not None else None
    trainer, fit = models.fit(model, ds, hp, callback=callback, progress=False, **options)
    prediction = trainer.predict(ds, "test")
    signal, portfolio = score(prediction, ds, config)
    metrics = {**signal.summary, **{key: portfolio.risk[key] for key in METRICS[4:]}}
    return Run(seed, metrics, fit.best_epoch, len(fit.history), time.perf_counter() - began, signal, portfolio)


def score_confirmed(model: str, run: ConfirmedRun, ds: datasets.PreparedDataset, config: BacktestConfig,
                    device: str) -> Run:
    """A confirmation run's model (its kept epoch), predicting the test segment and scored like a trained one."""
    _, hyperparameters, net = models.load_checkpoint(run.checkpoint, device)
    trainer = models.Trainer(net, models.train_config(models.get_spec(model).hyperparameters(hyperparameters),
                                                      device=device))
    signal, portfolio = score(trainer.predict(ds, "test"), ds, config)
    metrics = {**signal.summary, **{key: portfolio.risk[key] for key in METRICS[4:]}}
    return Run(run.seed, metrics, run.best_epoch or 0, run.epochs or 0, run.seconds or 0.0, signal, portfolio,
               reused=True)


def confirmed_runs(best: Best, hyperparameters: dict[str, Any], cap: int | None, pretrained: str | None,
                   same_data: bool) -> ConfirmedConfig | None:
    """The confirmation's config that trained exactly what this evaluation would (the same full hyperparameters
    under the same epoch cap, the same start, the same data); ``None`` when there is none."""
    if best.confirmation is None or not same_data:
        return None
    wanted = full_config(best.model, capped(best.model, hyperparameters, cap))
    for config in best.confirmation.configs:
        if full_config(best.model, config.hyperparameters) == wanted and (config.pretrained or None) == (
                pretrained or None):
            return config
    return None


def evaluation_seeds(best: Best, count: int) -> list[int]:
    """The seeds an evaluation trains: the confirmation's first (its models are reused where they match), then
    0, 1, 2, ... (those not among them); without a confirmation 0..count-1."""
    confirmed = list(best.confirmation.seeds) if best.confirmation is not None else []
    extra = (seed for seed in range(count + len(confirmed)) if seed not in confirmed)
    return (confirmed + [next(extra) for _ in range(max(0, count - len(confirmed)))])[:count]


def capped(model: str, hyperparameters: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    if epochs is None:
        return dict(hyperparameters)
    return {**hyperparameters, "n_epochs": min(int(hyperparameters.get("n_epochs",
                                                                       models.REGISTRY[model].defaults["n_epochs"])),
                                               epochs)}


def format_table(results: dict[str, ConfigResult], metric: str | None = None) -> str:
    """A plain-text table: one row per metric, one column per configuration (mean ± std); with a confirmation,
    first its validation ``metric`` (mean ± std over its seeds) for the configs it confirmed."""
    def cell(result: ConfigResult, key: str) -> str:
        std = result.std(key)
        return f"{result.mean(key):.4f}" + (f" ± {std:.4f}" if std is not None else "")

    def confirmed(result: ConfigResult) -> str:
        config = result.confirmed
        if config is None or config.mean is None:
            return "-"
        return f"{config.mean:.4f}" + (f" ± {config.std:.4f}" if config.std is not None else "")

    rows = [["metric", *results]]
    if metric is not None and any(result.confirmed is not None for result in results.values()):
        rows.append([f"{metric} (confirmation)", *(confirmed(r) for r in results.values())])
    rows += [[LABELS.get(key, key), *(cell(r, key) for r in results.values())] for key in METRICS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in rows]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def evaluation_record(best_path: Location, model: str, ds: datasets.PreparedDataset, benchmark: str,
                      results: dict[str, ConfigResult], config: BacktestConfig, same: bool,
                      epochs: int | None = None) -> dict[str, Any]:
    """What evaluation.yaml holds (NaN written as null). ``same``: the searched config is the default one;
    ``epochs``: the cap on n_epochs the evaluation trained under (``None``: none)."""
    return _plain({
        "model": model, "best": str(best_path), "searched_is_default": same, "epochs_cap": epochs,
        "data": {"source": ds.source, "market": ds.market_name, "segments": dict(ds.segments),
                 "n_concepts": len(ds.concept_names) if ds.concepts is not None else None},
        "benchmark": benchmark,
        "backtest": backtest_settings(config),
        "configs": {label: {"hyperparameters": result.hyperparameters,
                            **({"pretrained": result.pretrained} if result.pretrained is not None else {}),
                            "mean": {key: result.mean(key) for key in METRICS},
                            "std": {key: result.std(key) for key in METRICS},
                            **({"confirmation": {"mean": result.confirmed.mean, "std": result.confirmed.std,
                                                 "seeds": [run.seed for run in result.confirmed.runs]}}
                               if result.confirmed is not None else {}),
                            "runs": [{"seed": run.seed, "best_epoch": run.best_epoch, "epochs": run.epochs,
                                      "seconds": round(run.seconds, 1),
                                      **({"reused": "confirmation"} if run.reused else {}), **run.metrics}
                                     for run in result.runs]}
                    for label, result in results.items()},
    })


def speed_options(best: Best, device: str, amp: bool | None = None, graphs: bool | None = None,
                  tf32: bool | None = None) -> dict[str, Any]:
    """The trainer's ``amp``, ``graphs`` and ``tf32`` for training on ``device``: each as given, else as the
    search's trials had it (best.yaml ``training``), else the trainer's default. Graphs and TF32 act on CUDA only."""
    recorded = best.training
    cuda = str(device).startswith("cuda")
    amp = recorded.amp if amp is None else amp
    graphs = (recorded.graphs if recorded.device == "cuda" else None) if graphs is None else graphs
    tf32 = (recorded.tf32 if recorded.device == "cuda" else None) if tf32 is None else tf32
    return {"amp": amp, "graphs": graphs if cuda else False, "tf32": tf32 if cuda else None}


def thread_count(best: Best, threads: int | None) -> int:
    """``threads``, else the search trials' (best.yaml ``search.threads``), else 1."""
    if threads is None:
        threads = best.search.threads or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EvaluationError(f"--threads must be a positive number; got {threads!r}")
    return threads


def evaluate(best_path: str | Path | Location, data: str | None = None, seeds: int = 1, epochs: int | str | None = None,
             threads: int | None = None, out_dir: str | Path | None = None, concepts: str | None = None,
             config: BacktestConfig = BacktestConfig(), log: Callable[[str], None] = print,
             **options: Any) -> dict[str, Any]:
    """Retrain and score the searched and the default config over ``seeds`` seeds; write evaluation.yaml and
    the plots into ``out_dir`` (default: beside ``best.yaml``); return the evaluation record.

    ``epochs`` caps ``n_epochs`` of both configs: ``None`` the search's budget from best.yaml, a number, or
    ``"own"`` (each config's own). ``threads``: torch threads (``None``: the search trials'). ``amp``, ``graphs``
    and ``tf32`` in ``options`` default to the search trials' (best.yaml ``training``). ``options`` go to
    ``models.fit`` (``device``, ``pretrained``, ...). ``log`` receives every line, progress included.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise EvaluationError(f"--seeds must be at least 1, got {seeds}")
    best_path = Location.of(best_path)
    best = Best.read(best_path)
    best.check_hyperparameters(str(best_path))
    model = best.model
    cap, budget = epoch_budget(best, epochs, str(best_path))
    torch.set_num_threads(thread_count(best, threads))
    speed = speed_options(best, options.get("device", "cpu"), options.pop("amp", None), options.pop("graphs", None),
                          options.pop("tf32", None))
    options = {**options, **speed}
    log(f"{model}: evaluating {best_path} with {seeds} seed(s) per config; training under {budget}; "
        f"{torch.get_num_threads()} torch thread(s); amp {'on' if options['amp'] else 'off'}")
    out = Location.of(out_dir) if out_dir is not None else best_path.parent
    reason = out.unwritable()
    if reason is not None:
        raise EvaluationError(f"{out}: cannot write evaluation.yaml there ({reason}); give --out DIR")
    ds = open_dataset(best, data, concepts)
    seed_list = evaluation_seeds(best, seeds)
    # Both early-stop on the searched config's metric (the search's objective): they differ in configuration only.
    same_metric = {"metric": best.hyperparameters["metric"]} if "metric" in best.hyperparameters else {}
    configs = {"searched": dict(best.hyperparameters), "default": {**default_hyperparameters(model), **same_metric}}
    results = {label: ConfigResult(hp) for label, hp in configs.items()}
    same = full_config(model, configs["searched"]) == full_config(model, configs["default"])
    # Every epoch a line in a log (every=0), a bar on a terminal; the total shrinks as runs stop early or as the
    # confirmation's models are reused (nothing to train).
    budget_of = {label: cap or get_spec(model).hyperparameters(hp).n_epochs for label, hp in configs.items()}
    shown = Progress(len(seed_list) * sum(budget_of[label] for label in (["searched"] if same else configs)),
                     model, "epoch", every=0)
    began = time.monotonic()
    for label, result in results.items():
        if label == "default" and same:
            result.runs, result.pretrained = results["searched"].runs, results["searched"].pretrained
            result.confirmed = results["searched"].confirmed
            log(f"{model} default: the searched config is Qlib's default; its runs are reused")
            continue
        run_options = dict(options)
        if get_spec(model).pretrained_base:
            result.pretrained = base_start(model, result.hyperparameters, best, best_path, run_options)
            log(f"{model} {label}: starts from {result.pretrained}")
        # A walk-forward search's confirmation models were trained on its folds' windows, not on these segments.
        result.confirmed = confirmed_runs(best, result.hyperparameters, cap, result.pretrained,
                                          same_data=data is None and concepts is None and not best.validation_folds)
        reusable = {run.seed: run for run in (result.confirmed.runs if result.confirmed else [])
                    if run.checkpoint is not None and Location.of(run.checkpoint).is_file()}
        for seed in seed_list:
            if seed in reusable:
                run = score_confirmed(model, reusable[seed], ds, config, options.get("device", "cpu"))
                shown.set_total(shown.total - budget_of[label])
                result.runs.append(run)
                shown.event(f"{model} {label} seed {seed}: the confirmation's model, reused ({run.epochs} epochs, "
                            f"best {run.best_epoch}), IC {run.metrics['IC']:.4f}, annualized excess "
                            f"{run.metrics['annualized_return']:.4f}")
                continue

            def progress(metrics: models.EpochMetrics, label: str = label, seed: int = seed) -> None:
                shown.update(1)
                rate = (time.monotonic() - began) / shown.done
                shown.status(f"{model} {label} seed {seed} epoch {metrics.epoch}: train loss {metrics.train_loss:.4f}, "
                             f"valid loss {metrics.valid_loss:.4f}, valid IC {metrics.valid_ic:.4f} "
                             f"({metrics.seconds:.1f} s)", rate * max(0, shown.total - shown.done))

            run = train_and_score(model, result.hyperparameters, seed, ds, config, cap, run_options, progress)
            shown.set_total(shown.total - (budget_of[label] - run.epochs))  # it stopped early: fewer to come
            result.runs.append(run)
            shown.event(f"{model} {label} seed {seed}: {run.epochs} epochs (best {run.best_epoch}), "
                        f"IC {run.metrics['IC']:.4f}, annualized excess {run.metrics['annualized_return']:.4f}, "
                        f"{run.seconds:.0f} s")
    shown.close()

    benchmark = results["searched"].runs[0].portfolio.benchmark
    record = evaluation_record(best_path, model, ds, benchmark, results, config, same, cap)
    (out / "evaluation.yaml").write_text(yaml.safe_dump(record, sort_keys=False))

    def mean_daily(label: str, column: str) -> pd.Series:
        return pd.concat([run.portfolio.daily[column] for run in results[label].runs], axis=1).mean(axis=1)

    plot_cumulative_excess({label: mean_daily(label, "excess_return_with_cost") for label in results},
                           results["searched"].runs[0].portfolio.daily["bench"], benchmark,
                           out / "evaluation_returns.png", title=f"{model}: test segment, mean of {seeds} seed(s)")
    plot_daily_ic({label: pd.concat([run.signal.daily_ic for run in result.runs], axis=1).mean(axis=1)
                   for label, result in results.items()}, out / "evaluation_ic.png",
                  title=f"{model}: daily IC on the test segment, mean of {seeds} seed(s)")
    start, end = ds.segments["test"]
    log(f"\n{model} on the test segment {start}..{end}, {seeds} seed(s); portfolio: excess return with cost "
        f"over {benchmark}\n" + format_table(results, best.confirmation.metric if best.confirmation else None))
    log(f"\nwrote {out / 'evaluation.yaml'}, {out / 'evaluation_returns.png'}, {out / 'evaluation_ic.png'}")
    return record


def base_start(model: str, hyperparameters: dict[str, Any], best: Best, best_path: Location | Path,
           options: dict[str, Any]) -> str:
    """Where a GATs/HIST/IGMTF config starts: ``options["pretrained"]`` when given (``none`` → random start),
    else best.yaml's base when the config fits it. Sets ``options["pretrained"]`` for ``models.fit``; returns
    what evaluation.yaml records."""
    given = options.get("pretrained")
    if given == NONE:
        options.pop("pretrained")
        return NONE
    if given is not None:
        return str(given)
    try:
        bases = bases_from_dicts(best.bases)
    except ValueError as error:
        raise EvaluationError(f"{best_path}: {error}") from None
    path, start = choose(bases, full_config(model, hyperparameters))
    if path is not None:
        if not Location.of(path).is_file():
            raise EvaluationError(f"{best_path}: bases: the {hyperparameters.get('base_model')} base {path} no longer "
                             f"exists (pass --pretrained PATH, pretrain or none)")
        options["pretrained"] = path
    return start
