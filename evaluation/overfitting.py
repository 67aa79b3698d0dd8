"""Is a search's winner real? Three numbers a search reports beside it, from its own records.

* ``cscv`` — the **probability of backtest overfitting** by combinatorially symmetric cross-validation (Bailey,
  Borwein, López de Prado and Zhu, "The Probability of Backtest Overfitting", 2015), over the trials' daily
  validation IC (the kept epoch's IC on every validation day, ``search.trial.write_daily_ic``). The validation days
  are cut into an even number of contiguous blocks; for every way of choosing half of the blocks as "in sample"
  (the rest "out of sample"), the trial with the best mean IC in sample is found and its relative rank ω among all
  trials out of sample taken (rank / (N + 1), ties at their mean rank), as the logit λ = ln(ω / (1 − ω)). PBO is
  the share of splits where the in-sample winner lands below the median out of sample (λ < 0). A search whose
  winner is real has PBO near 0; one that picks noise, near ½ (a little under, as λ = 0 exactly, a winner at the
  median, is not below it).
* ``best_of_n`` — the **bar the winner must clear**: the value the best of N trials reaches by chance if they
  were all equally good, given the trials' own dispersion: mean + std · E[max of N standard normals] (for a metric
  to minimise, mean − ...). A winner under the bar is no better than the luckiest of N draws of noise.
* ``paired`` — the **winner against Qlib's default on the same seeds** (the confirmation's; with walk-forward
  folds, each seed's value is the mean over its folds: a seed's folds are not independent draws): the mean of the
  pairwise differences, its standard error, on how many seeds the winner was ahead, and whether the difference is
  beyond noise (a two-sided paired t-test at 5 %).

Edges: a trial with no defined day in a block's half scores NaN there and ranks last; a day undefined for a trial
(NaN) is left out of that trial's mean; fewer than two trials, or fewer days than blocks, give no PBO (``None``
with the reason). One seed gives no standard error: the verdict then says the noise cannot be measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from scipy import integrate, stats

DEFAULT_BLOCKS = 8


@dataclass(frozen=True)
class PBO:
    """The CSCV result: ``pbo`` (share of splits with λ < 0), the ``logits`` λ of every split, and the size."""

    pbo: float
    logits: np.ndarray
    blocks: int
    trials: int
    days: int

    @property
    def splits(self) -> int:
        return len(self.logits)


def cscv(daily: np.ndarray, blocks: int = DEFAULT_BLOCKS, maximize: bool = True) -> PBO:
    """PBO of choosing the best column of ``daily`` ([days, trials], NaN where undefined) by its mean (see the
    module doc). ``blocks`` must be even; it is lowered to the largest even number the days allow (at least 2).
    ``ValueError`` with the reason when there are fewer than two trials or two days."""
    daily = np.asarray(daily, dtype=np.float64)
    if daily.ndim != 2:
        raise ValueError(f"daily values must be [days, trials]; got shape {daily.shape}")
    days, trials = daily.shape
    if trials < 2:
        raise ValueError(f"PBO needs at least two trials with a daily series; got {trials}")
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be an even number ≥ 2; got {blocks}")
    blocks = min(blocks, days - days % 2)
    if blocks < 2:
        raise ValueError(f"PBO needs at least two validation days; got {days}")
    sign = 1.0 if maximize else -1.0
    parts = np.array_split(np.arange(days), blocks)
    sums = np.stack([np.nansum(daily[part], axis=0) for part in parts])        # [blocks, trials]
    counts = np.stack([np.isfinite(daily[part]).sum(axis=0) for part in parts])
    logits = []
    for chosen in itertools.combinations(range(blocks), blocks // 2):
        inside = np.zeros(blocks, dtype=bool)
        inside[list(chosen)] = True
        in_sample = _means(sums[inside], counts[inside]) * sign
        out_sample = _means(sums[~inside], counts[~inside]) * sign
        winner = int(np.argmax(np.where(np.isfinite(in_sample), in_sample, -np.inf)))
        omega = _rank(out_sample, winner) / (trials + 1)
        logits.append(math.log(omega / (1 - omega)))
    values = np.asarray(logits)
    return PBO(float(np.mean(values < 0)), values, blocks, trials, days)


def _means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total, count = sums.sum(axis=0), counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _rank(values: np.ndarray, index: int) -> float:
    """The ascending rank (1 = worst) of ``values[index]`` among ``values``; ties share their mean rank, NaN ranks
    below every number."""
    filled = np.where(np.isfinite(values), values, -np.inf)
    mine = filled[index]
    below = float(np.sum(filled < mine))
    tied = float(np.sum(filled == mine))
    return below + (tied + 1) / 2


@dataclass(frozen=True)
class BestOfN:
    """The bar: what the best of ``trials`` equally good trials reaches by chance (see the module doc)."""

    trials: int
    mean: float
    std: float
    expected_max_z: float   # E[max of N standard normals]
    bar: float


def expected_max_normal(n: int) -> float:
    """E[max of ``n`` independent standard normals] (0 for one), by numerical integration."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1; got {n}")
    if n == 1:
        return 0.0
    density = lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)  # noqa: E731
    value, _ = integrate.quad(density, -12, 12, limit=200)
    return float(value)


def best_of_n(values: list[float] | np.ndarray, maximize: bool = True) -> BestOfN:
    """The bar for the best of ``values`` (the trials' search values; NaN ignored). ``ValueError`` with fewer than
    two finite values (no dispersion to measure)."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(finite) < 2:
        raise ValueError(f"the bar needs at least two trials with a value; got {len(finite)}")
    mean, std = float(finite.mean()), float(finite.std(ddof=1))
    z = expected_max_normal(len(finite))
    return BestOfN(len(finite), mean, std, z, mean + z * std if maximize else mean - z * std)


@dataclass(frozen=True)
class Paired:
    """The winner minus the default on the seeds both have, in the direction where positive is better."""

    seeds: int                     # how many seeds (pairs)
    mean: float
    standard_error: float | None   # None with one pair
    ahead: int                     # pairs on which the winner was better
    beyond_noise: bool             # a two-sided paired t-test at 5 % rejects "no difference"

    def verdict(self, metric: str) -> str:
        """The comparison in words."""
        ahead = f"ahead on {self.ahead} of {self.seeds} seed{'s' if self.seeds != 1 else ''}"
        if self.standard_error is None:
            return f"{self.mean:+.4f} {metric} on one seed ({ahead}): one seed cannot tell a difference from noise"
        size = f"{self.mean:+.4f} ± {self.standard_error:.4f} (standard error) {metric}"
        if self.beyond_noise:
            side = "better" if self.mean > 0 else "worse"
            return f"{side} by {size}, {ahead}: beyond seed-to-seed noise (paired t-test, 5 %)"
        return f"within noise: {size}, {ahead} (paired t-test, 5 %)"


def paired(winner: dict[Hashable, float], default: dict[Hashable, float], maximize: bool = True) -> Paired | None:
    """The paired comparison over the seeds both configurations have a finite value for; ``None`` when there is
    none. Differences are oriented so that positive means the winner is
    better."""
    keys = sorted(key for key in winner if key in default and _finite(winner[key]) and _finite(default[key]))
    if not keys:
        return None
    sign = 1.0 if maximize else -1.0
    differences = np.asarray([sign * (winner[key] - default[key]) for key in keys])
    mean = float(differences.mean())
    ahead = int(np.sum(differences > 0))
    if len(keys) < 2:
        return Paired(1, mean, None, ahead, False)
    error = float(differences.std(ddof=1) / math.sqrt(len(keys)))
    if error == 0:
        return Paired(len(keys), mean, 0.0, ahead, mean != 0)
    critical = float(stats.t.ppf(0.975, len(keys) - 1))
    return Paired(len(keys), mean, error, ahead, abs(mean) > critical * error)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
