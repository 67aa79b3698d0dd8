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


def plot_overfitting(logits: "list[float] | pd.Series", pbo: float, path: Path | Location, title: str) -> None:
    """The CSCV logits of a search (``evaluation.overfitting.cscv``): a histogram with the median line (λ = 0); PBO,
    the share left of it, in the legend."""
    figure, axes = plt.subplots(figsize=(7, 4))
    values = pd.Series(list(logits), dtype="float64")
    axes.hist(values, bins=min(30, max(5, len(values) // 3)), color="tab:blue", alpha=0.75,
              label=f"{len(values)} splits; PBO {pbo:.2f} (share with λ < 0)")
    axes.axvline(0.0, color="tab:red", linewidth=1.2, label="median out of sample (λ = 0)")
    axes.set_xlabel("λ = logit of the in-sample best trial's out-of-sample relative rank")
    axes.set_ylabel("splits")
    axes.set_title(title)
    axes.legend(loc="best")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    plt.close(figure)
    Location.of(path).write_bytes(image.getvalue())
