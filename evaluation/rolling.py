"""A rolling test, as a model is deployed: retrained every STEP trading days on the window before, scored over the
whole test period.

``alphatune evaluate RUN/best.yaml --rolling STEP [--rolling-train expanding|sliding]`` cuts best.yaml's
segments into Qlib's ``RollingGen`` windows (``datasets.periods.rolling``: window i trains and validates on the
train and valid segments shifted by i·STEP trading days, from the same start or sliding, and predicts the next STEP
test days). For each window, the searched config and Qlib's default are trained on each seed (the window's data
prepared from the source with Qlib's processors fitted on its own train span, early stopping on its valid span,
under the same epoch budget as ``evaluate``), and predict its test days. Each (config, seed)'s predictions, end to
end, are one prediction over the test period, scored as ``evaluate`` scores one: IC, ICIR, Rank IC, Rank ICIR
against the raw label and Qlib's top-k dropout backtest; reported as mean ± std over the seeds. The **seed
ensemble**, the mean of a config's seed models' predictions on each day, is scored as one more model.

It writes ``evaluation_rolling.yaml`` (the windows, every run's numbers, the ensembles, what it cost) and two plots
beside best.yaml (or in ``--out``). Every window is trained for every config and seed: windows × 2 × seeds models.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import yaml

from alphatune import models
from alphatune.datasets import DataError
from alphatune.datasets.periods import Window, rolling
from alphatune.evaluation.backtest import BacktestConfig
from alphatune.evaluation.best import Best, epoch_budget
from alphatune.evaluation.errors import EvaluationError
from alphatune.evaluation.evaluate import (METRICS, backtest_settings, base_start, capped, default_hyperparameters,
                                           evaluation_seeds, full_config, open_dataset, score, speed_options,
                                           thread_count)
from alphatune.evaluation.plots import plot_cumulative_excess, plot_daily_ic
from alphatune.models.registry import get_spec
from alphatune.storage import Location

RECORD = "evaluation_rolling.yaml"


@dataclass
class RollingRun:
    """One config on one seed over every window: its predictions end to end, and their scores."""

    seed: int
    prediction: pd.Series
    metrics: dict[str, float]
    epochs: list[int]          # per window
    seconds: float
    signal: Any = None
    portfolio: Any = None


@dataclass
class RollingConfig:
    hyperparameters: dict[str, Any]
    runs: list[RollingRun] = field(default_factory=list)
    ensemble: dict[str, float] | None = None
    pretrained: str | None = None

    def mean(self, key: str) -> float:
        return statistics.fmean(run.metrics[key] for run in self.runs)

    def std(self, key: str) -> float | None:
        values = [run.metrics[key] for run in self.runs]
        return statistics.stdev(values) if len(values) > 1 else None


def evaluate_rolling(best_path: str | Path | Location, step: int, train_kind: str = "expanding", seeds: int = 1,
                     epochs: int | str | None = None, threads: int | None = None,
                     out_dir: str | Path | None = None, concepts: str | None = None,
                     config: BacktestConfig = BacktestConfig(), log: Callable[[str], None] = print,
                     **options: Any) -> dict[str, Any]:
    """The rolling test of best.yaml's searched config against Qlib's default (see the module doc); returns the
    record written to ``evaluation_rolling.yaml``."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise EvaluationError(f"--seeds must be at least 1, got {seeds}")
    best_path = Location.of(best_path)
    best = Best.read(best_path)
    best.check_hyperparameters(str(best_path))
    model = best.model
    cap, budget = epoch_budget(best, epochs, str(best_path))
    torch.set_num_threads(thread_count(best, threads))
    options = {**options, **speed_options(best, options.get("device", "cpu"), options.pop("amp", None),
                                          options.pop("graphs", None), options.pop("tf32", None))}
    out = Location.of(out_dir) if out_dir is not None else best_path.parent
    reason = out.unwritable()
    if reason is not None:
        raise EvaluationError(f"{out}: cannot write {RECORD} there ({reason}); give --out DIR")
    ds = open_dataset(best, None, concepts)
    spec = best.data_spec if concepts is None else best.data_spec.with_source(None, concepts)
    try:
        windows = rolling(spec.calendar(), tuple(ds.segments["train"]), tuple(ds.segments["valid"]),
                          tuple(ds.segments["test"]), step, train_kind)
    except DataError as error:
        raise EvaluationError(str(error)) from None
    seed_list = evaluation_seeds(best, seeds)
    same_metric = {"metric": best.hyperparameters["metric"]} if "metric" in best.hyperparameters else {}
    configs = {"searched": RollingConfig(dict(best.hyperparameters)),
               "default": RollingConfig({**default_hyperparameters(model), **same_metric})}
    same = full_config(model, configs["searched"].hyperparameters) == full_config(model,
                                                                                   configs["default"].hyperparameters)
    trainings = len(windows) * len(seed_list) * (1 if same else 2)
    log(f"{model}: rolling test of {best_path}: {len(windows)} windows of {step} trading days over the test period "
        f"{ds.segments['test'][0]}..{ds.segments['test'][1]} ({train_kind} train windows, Qlib's RollingGen), "
        f"{len(seed_list)} seed(s) per config, {trainings} models to train under {budget}")
    log_windows(windows, log)
    roll(model, configs, [spec.window(window).open(progress=False) for window in windows], ds, seed_list, cap,
         options, config, log, start=lambda label, hyperparameters, run_options: base_start(
             model, hyperparameters, best, best_path, run_options) if get_spec(model).pretrained_base else None,
         same_as={"default": "searched"} if same else {})
    record = _record(best_path, model, ds, windows, train_kind, step, configs, config, cap, same)
    (out / RECORD).write_text(yaml.safe_dump(record, sort_keys=False))
    benchmark = configs["searched"].runs[0].portfolio.benchmark

    def mean_daily(label: str, column: str) -> pd.Series:
        return pd.concat([run.portfolio.daily[column] for run in configs[label].runs], axis=1).mean(axis=1)

    plot_cumulative_excess({label: mean_daily(label, "excess_return_with_cost") for label in configs},
                           configs["searched"].runs[0].portfolio.daily["bench"], benchmark,
                           out / "evaluation_rolling_returns.png",
                           title=f"{model}: rolling test (retrained every {step} days), mean of {len(seed_list)} seed(s)")
    plot_daily_ic({label: pd.concat([run.signal.daily_ic for run in result.runs], axis=1).mean(axis=1)
                   for label, result in configs.items()}, out / "evaluation_rolling_ic.png",
                  title=f"{model}: daily IC of the rolling test, mean of {len(seed_list)} seed(s)")
    log(f"\n{model}: rolling test over {ds.segments['test'][0]}..{ds.segments['test'][1]}, retrained every {step} "
        f"trading days ({len(windows)} windows), {len(seed_list)} seed(s)\n" + format_rolling(configs))
    log(f"\nwrote {out / RECORD}, {out / 'evaluation_rolling_returns.png'}, {out / 'evaluation_rolling_ic.png'}")
    return record


def log_windows(windows: list[Window], log: Callable[[str], None]) -> None:
    for number, window in enumerate(windows, 1):
        log(f"  window {number}: train {window.train[0]}..{window.train[1]}, valid {window.valid[0]}..{window.valid[1]}, "
            f"test {window.test[0]}..{window.test[1]}")


def roll(model: str, configs: dict[str, RollingConfig], window_data: list[Any], ds: Any, seeds: list[int],
         cap: int | None, options: dict[str, Any], config: BacktestConfig, log: Callable[[str], None],
         start: Callable[[str, dict[str, Any], dict[str, Any]], str | None] | None = None,
         same_as: dict[str, str] | None = None) -> None:
    """Train every config of ``configs`` on every window's data (``window_data``, in time order) for every seed, and
    fill each config's runs (its predictions end to end, scored on ``ds``'s test segment) and its seed ensemble.
    ``start(label, hyperparameters, options)`` says (and sets in ``options``) where a GATs/HIST/IGMTF config starts;
    ``same_as``: a config that is another one (label → that label) reuses its runs."""
    trainings = len(window_data) * len(seeds) * (len(configs) - len(same_as or {}))
    began, done = time.perf_counter(), 0
    for label, result in configs.items():
        twin = (same_as or {}).get(label)
        if twin is not None:
            result.runs, result.ensemble, result.pretrained = configs[twin].runs, configs[twin].ensemble, \
                configs[twin].pretrained
            log(f"{model} {label}: the same config as {twin}; its runs are reused")
            continue
        run_options = dict(options)
        if start is not None:
            result.pretrained = start(label, result.hyperparameters, run_options)
        for seed in seeds:
            pieces, trained, seconds = [], [], 0.0
            for number, window_ds in enumerate(window_data, 1):
                began_window = time.perf_counter()
                trainer, fit = models.fit(model, window_ds, {**capped(model, result.hyperparameters, cap),
                                                             "seed": seed}, progress=False, **run_options)
                pieces.append(trainer.predict(window_ds, "test"))
                trained.append(len(fit.history))
                seconds += time.perf_counter() - began_window
                done += 1
                left = (time.perf_counter() - began) / done * (trainings - done)
                log(f"{model} {label} seed {seed} window {number}/{len(window_data)}: {len(fit.history)} epochs "
                    f"(best {fit.best_epoch}), {time.perf_counter() - began_window:.0f} s [{done}/{trainings}, about "
                    f"{left / 60:.0f} min left]")
            prediction = pd.concat(pieces).sort_index()
            signal, portfolio = score(prediction, ds, config)
            metrics = {**signal.summary, **{key: portfolio.risk[key] for key in METRICS[4:]}}
            result.runs.append(RollingRun(seed, prediction, metrics, trained, seconds, signal, portfolio))
            log(f"{model} {label} seed {seed}: rolling IC {metrics['IC']:.4f}, Rank IC {metrics['Rank IC']:.4f}, "
                f"annualized excess {metrics['annualized_return']:.4f}")
        ensemble = pd.concat([run.prediction for run in result.runs], axis=1).mean(axis=1)
        signal, portfolio = score(ensemble, ds, config)
        result.ensemble = {**signal.summary, **{key: portfolio.risk[key] for key in METRICS[4:]}}


def format_rolling(configs: dict[str, RollingConfig]) -> str:
    """The printed table: each metric's mean ± std over the seeds, and the seed ensemble's, per config."""
    header = ["metric", *(f"{label} (seeds)" for label in configs), *(f"{label} (ensemble)" for label in configs)]
    rows = [header]
    for key in METRICS:
        cells = []
        for result in configs.values():
            std = result.std(key)
            cells.append(f"{result.mean(key):.4f}" + (f" ± {std:.4f}" if std is not None else ""))
        rows.append([key, *cells, *(f"{result.ensemble[key]:.4f}" for result in configs.values())])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def _record(best_path: Location, model: str, ds: Any, windows: list[Window], train_kind: str, step: int,
            configs: dict[str, RollingConfig], config: BacktestConfig, cap: int | None, same: bool) -> dict[str, Any]:
    def summary(result: RollingConfig) -> dict[str, Any]:
        return {"hyperparameters": result.hyperparameters,
                **({"pretrained": result.pretrained} if result.pretrained is not None else {}),
                "mean": {key: result.mean(key) for key in METRICS},
                "std": {key: result.std(key) for key in METRICS},
                "ensemble": dict(result.ensemble or {}),
                "runs": [{"seed": run.seed, "metrics": run.metrics, "epochs": run.epochs,
                          "seconds": round(run.seconds, 1)} for run in result.runs]}

    return {"best": str(best_path), "model": model, "test": list(ds.segments["test"]),
            "rolling": {"step": step, "train": train_kind, "windows": [window.to_dict() for window in windows]},
            "epochs_cap": cap, "backtest": backtest_settings(config),
            "searched_is_default": same, "configs": {label: summary(result) for label, result in configs.items()}}
