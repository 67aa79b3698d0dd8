"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from alphatune.storage import Location  # noqa: E402

ROLLING_DAYS = 20


def _save(figure: plt.Figure, axes: plt.Axes, ylabel: str, title: str, path: Path | Location) -> None:
    """Zero line, labels and legend over dated x ticks; write the PNG to ``path`` (a local path or a URI) and free
    the figure."""
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(loc="best")
    figure.autofmt_xdate()
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    plt.close(figure)
    Location.of(path).write_bytes(image.getvalue())


def plot_cumulative_excess(excess: dict[str, pd.Series], bench: pd.Series, bench_name: str, path: Path | Location,
                           title: str) -> None:
    """Cumulative (summed, as Qlib's risk analysis) daily excess return with cost of each configuration, and
    the benchmark's own cumulative return, against the trade date."""
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for label, series in excess.items():
        axes.plot(series.index, series.cumsum(), label=f"{label}: excess return with cost")
    axes.plot(bench.index, bench.cumsum(), color="grey", linestyle="--", label=f"benchmark: {bench_name}")
    _save(figure, axes, "cumulative return (sum of daily)", title, path)


def plot_daily_ic(daily_ic: dict[str, pd.Series], path: Path | Location, title: str) -> None:
    """Daily IC of each configuration (faint) with its 20-day rolling mean (days without an IC skipped)."""
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for label, series in daily_ic.items():
        series = series.dropna()
        line, = axes.plot(series.index, series, linewidth=0.6, alpha=0.35)
        axes.plot(series.index, series.rolling(ROLLING_DAYS, min_periods=1).mean(), color=line.get_color(),
                  label=f"{label}: {ROLLING_DAYS}-day mean (IC {series.mean():.4f})")
    _save(figure, axes, "IC (Pearson, prediction vs raw label)", title, path)


def plot_overfitting(logits: "list[float] | pd.Series", pbo: float, path: Path | Location, title: str,
                     values: "list[float] | None" = None, bar: dict | None = None, metric: str = "valid_ic") -> None:
    """A search's odds of overfitting, two panels. Left: the CSCV logits (``evaluation.overfitting.cscv``), a
    histogram with the median line (λ = 0), PBO (the share left of it) in the legend. Right, when ``values`` (the
    trials' search values) and ``bar`` (``best_of_n``'s record: ``mean``, ``bar``, ``search_best``) are given: the
    trials' values, best first, against the bar the best of that many equally good trials reaches by chance."""
    panels = 2 if values and bar else 1
    figure, axes_all = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    axes = axes_all[0][0]
    logit_values = pd.Series(list(logits), dtype="float64")
    axes.hist(logit_values, bins=min(30, max(5, len(logit_values) // 3)), color="tab:blue", alpha=0.75,
              label=f"{len(logit_values)} splits; PBO {pbo:.2f} (share with λ < 0)")
    axes.axvline(0.0, color="tab:red", linewidth=1.2, label="median out of sample (λ = 0)")
    axes.set_xlabel("λ = logit of the in-sample best trial's out-of-sample relative rank")
    axes.set_ylabel("splits")
    axes.set_title(title)
    axes.legend(loc="best")
    if panels == 2:
        trials = axes_all[0][1]
        ordered = sorted(values, reverse=bar["bar"] >= bar["mean"])  # best first, whichever way is better
        trials.bar(range(1, len(ordered) + 1), ordered, color="tab:gray", alpha=0.8, label=f"{len(ordered)} trials")
        trials.axhline(bar["bar"], color="tab:red", linewidth=1.2,
                       label=f"best of {bar['trials']} by chance: {bar['bar']:.4f}")
        trials.axhline(bar["mean"], color="tab:blue", linestyle="--", linewidth=1.0,
                       label=f"trials' mean: {bar['mean']:.4f}")
        trials.set_xlabel("trial, best first")
        trials.set_ylabel(f"{metric} in the search")
        trials.set_title(f"the search's best {bar['search_best']:.4f} "
                         + ("clears the chance bar" if bar.get("clears") else "does not clear the chance bar"))
        trials.legend(loc="best")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    plt.close(figure)
    Location.of(path).write_bytes(image.getvalue())
