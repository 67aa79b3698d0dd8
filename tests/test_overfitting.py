"""The search's odds of overfitting (evaluation.overfitting): CSCV's PBO on planted series and on cases checked by
hand, the best-of-N bar, and the paired comparison with Qlib's default."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alphatune.evaluation.overfitting import best_of_n, cscv, expected_max_normal, paired


def test_pbo_by_hand_two_trials_that_swap_between_the_halves() -> None:
    # days 0-1: trial 0 is best; days 2-3: trial 1 is. Each half's winner is the other half's loser.
    daily = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    result = cscv(daily, blocks=2)
    assert result.splits == 2 and result.blocks == 2 and result.trials == 2 and result.days == 4
    # the in-sample winner ranks 1 of 2 out of sample: ω = 1/3, λ = ln(1/2)
    assert result.logits == pytest.approx([math.log(0.5)] * 2)
    assert result.pbo == 1.0


def test_pbo_by_hand_a_trial_best_everywhere_and_a_tie() -> None:
    daily = np.array([[0.3, 0.1, 0.0], [0.3, 0.2, 0.0], [0.2, 0.1, 0.1], [0.4, 0.0, 0.1]])
    result = cscv(daily, blocks=2)
    assert result.logits == pytest.approx([math.log(3)] * 2)  # rank 3 of 3: ω = 3/4
    assert result.pbo == 0.0
    tied = cscv(np.array([[1.0, 1.0], [1.0, 1.0]]), blocks=2)  # both equal: the mean rank 1.5, ω = 1/2, λ = 0
    assert tied.logits == pytest.approx([0.0, 0.0]) and tied.pbo == 0.0  # at the median is not below it


def test_pbo_of_pure_noise_is_near_a_half_and_of_one_truly_better_trial_near_zero() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.1, size=(240, 30))
    assert 0.35 <= cscv(noise, blocks=8).pbo <= 0.65
    planted = noise.copy()
    planted[:, 7] += 0.05  # one trial really better, by half a daily standard deviation
    result = cscv(planted, blocks=8)
    assert result.splits == 70 and result.pbo <= 0.05
    assert np.median(result.logits) > 2  # the in-sample winner (trial 7) lands near the top out of sample


def test_pbo_edges_nan_days_too_few_trials_or_days_and_odd_blocks() -> None:
    daily = np.array([[np.nan, 0.0], [1.0, 0.0], [np.nan, 1.0], [np.nan, 1.0]])
    result = cscv(daily, blocks=2)  # trial 0 has no day in the second half: it ranks last there
    assert result.logits[0] == pytest.approx(math.log(0.5))
    assert cscv(np.zeros((3, 2)), blocks=8).blocks == 2  # lowered to what the days allow
    with pytest.raises(ValueError, match="at least two trials"):
        cscv(np.zeros((10, 1)))
    with pytest.raises(ValueError, match="at least two validation days"):
        cscv(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="even number"):
        cscv(np.zeros((10, 3)), blocks=3)


def test_expected_max_of_standard_normals_and_the_bar() -> None:
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-7)
    assert expected_max_normal(3) == pytest.approx(3 / (2 * math.sqrt(math.pi)), rel=1e-7)
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((20000, 16)).max(axis=1).mean()
    assert expected_max_normal(16) == pytest.approx(draws, abs=0.02)
    bar = best_of_n([0.0, 1.0, 2.0, float("nan")])
    assert (bar.trials, bar.mean, bar.std) == (3, 1.0, 1.0) and bar.bar == pytest.approx(1 + 3 / (2 * math.sqrt(math.pi)))
    assert best_of_n([0.0, 1.0, 2.0], maximize=False).bar == pytest.approx(1 - 3 / (2 * math.sqrt(math.pi)))
    with pytest.raises(ValueError, match="at least two trials"):
        best_of_n([0.1, float("nan")])


def test_the_paired_comparison_by_hand() -> None:
    winner = {1: 0.05, 2: 0.04, 3: 0.06, 4: 0.07}
    default = {1: 0.03, 2: 0.035, 3: 0.02}  # seed 4 not trained for the default: left out
    result = paired(winner, default)
    differences = np.array([0.02, 0.005, 0.04])
    assert result.seeds == 3 and result.ahead == 3
    assert result.mean == pytest.approx(differences.mean())
    assert result.standard_error == pytest.approx(differences.std(ddof=1) / math.sqrt(3))
    t = differences.mean() / (differences.std(ddof=1) / math.sqrt(3))  # 2.14 < 4.30 (t, 2 df, 97.5 %)
    assert t < 4.303 and not result.beyond_noise
    assert result.verdict("valid_ic").startswith("within noise: +0.0217 ± 0.0101 (standard error) valid_ic, ahead on 3 of 3")
    clear = paired({s: 0.05 + 0.001 * s for s in range(5)}, {s: 0.01 for s in range(5)})
    assert clear.beyond_noise and clear.verdict("valid_ic").startswith("better by +0.0420")
    # a loss: lower is better, so the winner's lower loss is a positive difference
    assert paired({1: 0.9, 2: 0.8}, {1: 1.0, 2: 1.0}, maximize=False).mean == pytest.approx(0.15)
    one = paired({1: 0.05}, {1: 0.03})
    assert one.standard_error is None and "one seed cannot tell a difference from noise" in one.verdict("valid_ic")
    assert paired({1: 0.05}, {2: 0.03}) is None


def test_pbo_in_words_near_0_real_near_half_noise_above_overfit() -> None:
    """The summary's words for a PBO (issue 25: 0.86 was called noise): each side of 0.5 says what it means."""
    from alphatune.search.odds import pbo_meaning
    assert pbo_meaning(0.05).startswith("near 0: ") and "real" in pbo_meaning(0.05)
    assert pbo_meaning(0.5).startswith("near 0.5: ") and "noise" in pbo_meaning(0.5)
    assert pbo_meaning(0.86).startswith("above 0.5: ") and pbo_meaning(0.86).endswith("i.e. overfit")
    assert "noise" not in pbo_meaning(0.86) and "overfit" not in pbo_meaning(0.6)


def test_the_overfitting_plot_shows_the_trials_against_the_chance_bar_beside_the_logits(tmp_path) -> None:
    """overfitting.png has two panels when the trials' values and the chance bar are known (the README's and
    design.md's picture), one (the logits) when they are not: the image is twice as wide."""
    import struct
    from alphatune.evaluation.plots import plot_overfitting

    def width(path) -> int:
        return struct.unpack(">I", path.read_bytes()[16:20])[0]  # the PNG's IHDR width

    logits = [-1.0, -0.2, 0.3, 0.8, 1.5]
    plot_overfitting(logits, 0.4, tmp_path / "one.png", "logits only")
    plot_overfitting(logits, 0.4, tmp_path / "two.png", "with the bar", values=[0.01, 0.03, 0.02],
                     bar={"trials": 3, "bar": 0.035, "mean": 0.02, "search_best": 0.03, "clears": False})
    assert width(tmp_path / "two.png") == 2 * width(tmp_path / "one.png")
