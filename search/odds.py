"""The search's odds of overfitting, from its own records: what best.yaml's ``overfitting`` says and shows.

``daily_valid_ic`` gathers every trial's kept epoch's IC on each validation day (``trials/<trial>/valid_ic.json``,
written by ``search.trial``; with walk-forward folds, every fold's, end to end) into one table, days × trials, written as ``RUN/daily_valid_ic.parquet`` (a date
column, then one float64 column per trial, null where a day's IC is undefined). ``overfitting`` runs CSCV over it
and measures the best-of-N bar over the trials' search values (``evaluation.overfitting``), and plots the logits to
``RUN/overfitting.png``. A trial without a kept epoch (failed before one) has no column; fewer than two columns
give no PBO, and the record says why.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from alphatune.evaluation.best import Overfitting
from alphatune.evaluation.plots import plot_overfitting
from alphatune.search.objective import finite, objective
from alphatune.evaluation.overfitting import DEFAULT_BLOCKS, best_of_n, cscv
from alphatune.search.folds import fold_dir
from alphatune.search.results import TrialRecord
from alphatune.search.rundir import TRIALS_DIR, RunDir
from alphatune.search.trial import DAILY_IC_FILE, read_daily_ic
from alphatune.storage import Location

DAILY_FILE = "daily_valid_ic.parquet"
READERS = 16  # daily-IC files read at once
PLOT_FILE = "overfitting.png"


def daily_valid_ic(run_dir: RunDir, records: list[TrialRecord]) -> pd.DataFrame:
    """Days × trials: each trial's kept epoch's daily validation IC (NaN where undefined), trials in run order. With
    walk-forward folds, a trial's column is its folds' days one after the other (each fold's kept model on its own
    validation days: the whole validation period), for the trials judged on every fold."""
    listed = {name for name in (run_dir.root / TRIALS_DIR).files() if name.endswith("/" + DAILY_IC_FILE)}
    wanted = {record.trial_id: [f"{fold_dir(PurePosixPath(record.trial_id), fold, record.fold_count) / DAILY_IC_FILE}"
                                for fold in range(1, record.fold_count + 1)] for record in records}
    wanted = {trial: names for trial, names in wanted.items() if all(name in listed for name in names)}
    # One file a trial (and fold): read side by side, as a bucket answers each read in milliseconds, not microseconds.
    files = [name for names in wanted.values() for name in names]
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        read = dict(zip(files, pool.map(lambda name: read_daily_ic(run_dir.root / TRIALS_DIR / name), files)))
    days: dict[tuple[str, ...], pd.DatetimeIndex] = {}  # each list of dates parsed once: a fold's trials share it

    def index(dates: list[str]) -> pd.DatetimeIndex:
        if tuple(dates) not in days:
            days[tuple(dates)] = pd.DatetimeIndex(dates, name="date")
        return days[tuple(dates)]

    columns = {}
    for trial_id, names in wanted.items():
        parts = [read[name] for name in names]
        if all(data is not None for data in parts):
            columns[trial_id] = pd.concat([
                pd.Series([np.nan if v is None else float(v) for v in data["ic"]], index=index(data["dates"]),
                          dtype="float64") for data in parts])
    frame = pd.DataFrame(columns, index=None if columns else pd.DatetimeIndex([], name="date"))
    frame.index.name = "date"
    return frame.sort_index()


def write_daily(frame: pd.DataFrame, where: Location) -> None:
    """``frame`` as Parquet: a ``date`` column (date32), then one float64 column per trial."""
    table = pa.table({"date": pa.array(frame.index.date, type=pa.date32()),
                      **{str(name): pa.array(frame[name].to_numpy(), type=pa.float64()) for name in frame.columns}})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    where.write_bytes(sink.getvalue())


def read_daily(where: Location) -> pd.DataFrame:
    """What ``write_daily`` wrote, as days × trials."""
    frame = pq.read_table(io.BytesIO(where.read_bytes())).to_pandas()
    return frame.set_index(pd.DatetimeIndex(frame.pop("date"), name="date"))


def overfitting(run_dir: RunDir, records: list[TrialRecord], metric: str, out: Location,
                blocks: int = DEFAULT_BLOCKS) -> Overfitting:
    """Write ``daily_valid_ic.parquet`` and ``overfitting.png`` into ``out`` and return what best.yaml records."""
    goal = objective(metric)
    frame = daily_valid_ic(run_dir, records)
    write_daily(frame, out / DAILY_FILE)
    # With walk-forward folds, a trial ASHA stopped early has a mean over fewer folds: only those judged on every
    # fold are comparable (and the winner is one of them).
    scored = [record.best(metric) for record in records
              if record.outcome != "failed" and record.complete and finite(record.best(metric))]
    bar = None
    try:
        chance = best_of_n(scored, maximize=goal.mode == "max")
    except ValueError:
        pass
    else:
        best = min(scored, key=goal.sort_key)
        bar = {"trials": chance.trials, "mean": chance.mean, "std": chance.std,
               "expected_max_z": chance.expected_max_z, "bar": chance.bar, "search_best": best,
               "clears": bool(goal.better(best, chance.bar))}
    try:
        result = cscv(frame.to_numpy(), blocks)
    except ValueError as error:
        return Overfitting(pbo=None, pbo_note=str(error), trials=frame.shape[1], days=frame.shape[0], bar=bar,
                           daily_valid_ic=DAILY_FILE)
    plot_overfitting(result.logits, result.pbo, out / PLOT_FILE,
                     title=f"{run_dir.name}: {result.trials} trials, {result.days} validation days, "
                           f"{result.blocks} blocks", values=scored, bar=bar, metric=goal.name)
    quantiles = np.quantile(result.logits, [0.0, 0.25, 0.5, 0.75, 1.0])
    return Overfitting(pbo=result.pbo, blocks=result.blocks, splits=result.splits, trials=result.trials,
                       days=result.days, logits=dict(zip(("min", "q25", "median", "q75", "max"),
                                                         map(float, quantiles))),
                       bar=bar, daily_valid_ic=DAILY_FILE, plot=PLOT_FILE)


def pbo_meaning(pbo: float) -> str:
    """What a PBO says, in words: near 0 the selection is real, near 0.5 it picks noise, above it it picks trials
    that do worse than the median out of sample (overfit)."""
    if pbo < 0.2:
        return "near 0: the in-sample best stays good out of sample, a real difference"
    if pbo < 0.35:
        return "the in-sample best often falls below the median out of sample"
    if pbo <= 0.65:
        return "near 0.5: the in-sample best is no better than the rest out of sample, i.e. noise"
    return "above 0.5: the in-sample best does worse than the median out of sample more often than not, i.e. overfit"


def describe(report: Overfitting, metric: str) -> str:
    """The summary's lines on the search's odds of overfitting."""
    lines = []
    if report.pbo is None:
        lines.append(f"no probability of overfitting: {report.pbo_note}")
    else:
        lines.append(f"probability of backtest overfitting (CSCV over {report.trials} trials' daily validation IC, "
                     f"{report.days} days in {report.blocks} blocks, {report.splits} splits): PBO {report.pbo:.2f} "
                     f"({pbo_meaning(report.pbo)})")
    if report.bar is not None:
        bar = report.bar
        lines.append(f"the best of {bar['trials']} equally good trials reaches {metric} {bar['bar']:.4f} by chance "
                     f"(mean {bar['mean']:.4f}, std {bar['std']:.4f}); the search's best {bar['search_best']:.4f} "
                     + ("clears it" if bar["clears"] else "does not clear it: no better than the luckiest draw"))
    return "\n".join(lines)

