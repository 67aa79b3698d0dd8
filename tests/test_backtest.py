"""The top-k dropout backtest on small hand-built markets whose trades, costs and returns are worked out by hand.

(benchmarks/check_backtest_vs_qlib.py checks the same code against Qlib itself on real data.)
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from alphatune.datasets import MarketData
from alphatune.evaluation.backtest import (BacktestConfig, backtest, risk_analysis, round_to_lots, simulate_topk_dropout,
                             topk_dropout_orders)

NAN = math.nan


def panels(close: list[list[float]], change: list[list[float]] | None = None,
           factor: list[list[float]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    close_ = np.array(close, dtype=np.float32)
    change_ = np.zeros_like(close_) if change is None else np.array(change, dtype=np.float32)
    factor_ = np.ones_like(close_) if factor is None else np.array(factor, dtype=np.float32)
    return close_, factor_, change_


def run(signal: list[list[float]], close: list[list[float]], change: list[list[float]] | None = None,
        factor: list[list[float]] | None = None, **config: float):
    close_, factor_, change_ = panels(close, change, factor)
    return simulate_topk_dropout(np.array(signal, dtype=np.float64), close_, factor_, change_,
                                 BacktestConfig(**config))


def test_trades_and_costs_exactly_as_computed_by_hand() -> None:
    # Stocks A, B. Day 0 buys A at 10; day 1 sells A at 11 and buys B at 7.25; day 2 has no signal (holds B).
    result = run(signal=[[1, 0], [0, 1], [NAN, NAN]], close=[[10, 7], [11, 7.25], [11, 7.5]],
                 topk=1, n_drop=1, account=100_000)
    # Day 0: 100000 * 0.95 / 10 = 9500 shares (95 lots); open cost max(95000 * 0.0005, 5) = 47.5.
    cash = 100_000 - 95_000 - 47.5
    account0 = cash + 95_000
    # Day 1: sell 9500 * 11 = 104500, close cost 156.75; buy (cash * 0.95) / 7.25 -> 14321.5 -> 14300 shares.
    cash += 104_500 - 156.75
    assert math.floor(cash * 0.95 / 7.25 / 100) * 100 == 14_300
    cash -= 14_300 * 7.25 + 14_300 * 7.25 * 0.0005
    account1 = cash + 14_300 * 7.25
    account2 = cash + 14_300 * 7.5
    np.testing.assert_allclose(result.account, [account0, account1, account2], rtol=1e-13)
    np.testing.assert_allclose(result.cost, [47.5 / 100_000, (156.75 + 14_300 * 7.25 * 0.0005) / account0, 0.0],
                               rtol=1e-12)
    np.testing.assert_allclose(result.turnover, [0.95, (104_500 + 14_300 * 7.25) / account0, 0.0], rtol=1e-12)
    expected_returns = [(account0 - 100_000 + 47.5) / 100_000,
                        (account1 - account0 + result.cost[1] * account0) / account0,
                        (account2 - account1) / account1]
    np.testing.assert_allclose(result.returns, expected_returns, rtol=1e-9, atol=1e-15)
    assert result.returns[0] == pytest.approx(0.0, abs=1e-15)  # bought at the close: only the cost is lost
    assert list(result.holdings) == [1, 1, 1]


def test_minimum_cost_and_lots_of_raw_shares() -> None:
    # 10000 * 0.95 / 10 = 950 adjusted shares = 2850 raw shares at factor 3 -> 2800 raw = 933.33 adjusted shares.
    result = run(signal=[[1.0]], close=[[10.0]], factor=[[3.0]], topk=1, n_drop=1, account=10_000)
    value = 2800 / 3 * 10
    assert result.turnover[0] == pytest.approx(value / 10_000, rel=1e-12)
    assert value * 0.0005 < 5 and result.cost[0] == pytest.approx(5 / 10_000, rel=1e-12)  # the minimum cost binds
    assert result.account[0] == pytest.approx(10_000 - 5, rel=1e-12)


def test_round_to_lots() -> None:
    # 99.9 raw shares count as a lot: Qlib adds 0.1 before flooring to absorb float error; 99.8 does not.
    np.testing.assert_allclose(round_to_lots(np.array([950.0, 99.9, 99.8, 1000.0]), np.array([3.0, 1.0, 1.0, 0.1]),
                                             100), [2800 / 3, 100.0, 0.0, 1000.0])
    np.testing.assert_array_equal(round_to_lots(np.array([950.5]), np.array([3.0]), None), [950.5])


def test_a_buy_cash_cannot_pay_is_clipped_to_what_cash_pays() -> None:
    # With risk_degree 1 and lots of one share, the budget of 1000 asks for 100 shares at 10, but 1000 + max(0.5, 5)
    # exceeds the cash: the exchange clips to (1000 - 5) / 10 = 99.5 -> 99 shares.
    result = run(signal=[[1.0]], close=[[10.0]], topk=1, n_drop=1, account=1000, risk_degree=1.0, trade_unit=1)
    assert result.turnover[0] == pytest.approx(990 / 1000)
    assert result.account[0] == pytest.approx(1000 - 5)


@pytest.mark.parametrize("close, change", [(NAN, 0.0), (10.0, 0.095), (10.0, -0.095), (10.0, 0.2)],
                         ids=["suspended", "limit up", "limit down", "above limit"])
def test_untradable_stock_is_not_bought_and_keeps_its_slot(close: float, change: float) -> None:
    # topk 2: A (untradable today) and B are the two buys; each gets half of 95 % of cash; A's half stays idle.
    result = run(signal=[[3, 2, 1]], close=[[close, 10, 10]], change=[[change, 0, 0]], topk=2, n_drop=1,
                 account=1_000_000)
    assert list(result.holdings) == [1]
    assert result.turnover[0] == pytest.approx(475_000 / 1_000_000)


@pytest.mark.parametrize("close, change", [(NAN, 0.0), (10.0, -0.095), (10.0, 0.095)],
                         ids=["suspended", "limit down", "limit up"])
def test_untradable_holding_is_not_sold_and_its_replacement_is_bought_anyway(close: float, change: float) -> None:
    # Day 0 buys A; day 1 wants to swap A for B but A cannot trade: B is bought anyway, 2 stocks > topk 1.
    result = run(signal=[[2, 1], [1, 2]], close=[[10, 10], [close, 10]], change=[[0, 0], [change, 0]],
                 topk=1, n_drop=1, account=1_000_000)
    assert list(result.holdings) == [1, 2]
    cash = 1_000_000 - 950_000 - 475
    bought = math.floor(cash * 0.95 / 10 / 100) * 100 * 10
    assert result.turnover[1] * result.account[0] == pytest.approx(bought)  # only B traded
    # A keeps its last price (10) while suspended, so the account only loses B's cost.
    assert result.account[1] == pytest.approx(result.account[0] - bought * 0.0005)


def test_just_inside_the_limit_trades() -> None:
    result = run(signal=[[1.0]], close=[[10.0]], change=[[0.0949]], topk=1, n_drop=1, account=1_000_000)
    assert list(result.holdings) == [1]


def test_held_stock_without_a_score_is_sold_first() -> None:
    sell, buy = topk_dropout_orders(np.array([NAN, 0.1, 0.9, 0.8]), np.array([True, True, False, False]),
                                    topk=2, n_drop=1)
    assert list(sell) == [0] and list(buy) == [2]


def test_dropout_replaces_only_stocks_worse_than_the_candidates() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.8, 0.2])  # A, B held
    sell, buy = topk_dropout_orders(scores, np.array([True, True, False, False, False]), topk=2, n_drop=1)
    assert list(sell) == [1] and list(buy) == [3]  # B (0.1) out, D (0.8) in
    scores = np.array([0.9, 0.8, 0.5, 0.1, 0.2])  # the best candidate (C, 0.5) is worse than both holdings
    sell, buy = topk_dropout_orders(scores, np.array([True, True, False, False, False]), topk=2, n_drop=1)
    assert list(sell) == [] and list(buy) == []


def test_portfolio_above_topk_buys_with_python_slice_semantics_as_qlib() -> None:
    # 4 held (A-D), topk 2, n_drop 1: Qlib asks for candidates[:1 + 2 - 4] = all but the last candidate, sells the
    # worst (D) and buys candidates[:1 + 2 - 4] again, i.e. one stock (E).
    scores = np.array([0.8, 0.7, 0.6, 0.5, 0.95, 0.9, 0.1])
    held = np.array([True, True, True, True, False, False, False])
    sell, buy = topk_dropout_orders(scores, held, topk=2, n_drop=1)
    assert list(sell) == [3] and list(buy) == [4]


INSTRUMENTS = np.array(["SH600000", "SH600001", "SZ000001"])


def small_market(benchmark: bool) -> MarketData:
    dates = pd.bdate_range("2021-03-01", periods=4).values
    close = np.array([[10, 20, 5], [10, 20, 5], [10.5, 19, 5], [11, 19, 5.2]], dtype=np.float32)
    change = np.full_like(close, np.nan)
    change[1:] = close[1:] / close[:-1] - 1
    bench = np.array([100, 101, 99.99, 101], dtype=np.float32) if benchmark else None
    return MarketData(dates=dates, instruments=INSTRUMENTS, close=close, factor=np.ones_like(close),
                      change=change, benchmark_close=bench)


def prediction_on(market: MarketData, first_day: int, top: int) -> pd.Series:
    """Scores for days ``first_day..`` with instrument ``top`` best every day."""
    days = pd.DatetimeIndex(market.dates[first_day:])
    index = pd.MultiIndex.from_product([days, INSTRUMENTS], names=["datetime", "instrument"])
    scores = np.tile(np.where(np.arange(len(INSTRUMENTS)) == top, 1.0, 0.0), len(days))
    return pd.Series(scores, index=index, name="score")


def test_trade_day_uses_the_previous_days_prediction_and_first_day_only_has_the_benchmark() -> None:
    market = small_market(benchmark=True)
    start, end = (str(pd.Timestamp(market.dates[i]).date()) for i in (1, 3))
    report = backtest(prediction_on(market, first_day=1, top=0), market, start, end,
                      BacktestConfig(topk=1, n_drop=1, account=1_000_000), benchmark_name="IDX")
    daily = report.daily
    assert report.benchmark == "IDX" and len(daily) == 3
    # Day 1 has no prediction dated day 0: no trade, return 0; the index return still counts.
    assert daily["turnover"].iloc[0] == 0 and daily["return"].iloc[0] == 0
    bench = [np.float32(101) / np.float32(100) - 1, np.float32(99.99) / np.float32(101) - 1,
             np.float32(101) / np.float32(99.99) - 1]
    np.testing.assert_allclose(daily["bench"], np.array(bench, dtype=np.float32).astype(np.float64), rtol=0)
    # Day 2 trades on day 1's prediction: buys SH600000 at 10.5, which then rises to 11 on day 3.
    shares = math.floor(1_000_000 * 0.95 / 10.5 / 100) * 100
    assert daily["turnover"].iloc[1] == pytest.approx(shares * 10.5 / 1_000_000)
    assert daily["return"].iloc[2] == pytest.approx(shares * 0.5 / daily["account"].iloc[1])
    np.testing.assert_allclose(daily["excess_return_with_cost"],
                               daily["return"] - daily["bench"] - daily["cost"], rtol=0)
    excess = daily["excess_return_with_cost"].to_list()
    assert report.risk["annualized_return"] == pytest.approx(statistics.mean(excess) * 238)


def test_without_an_index_the_benchmark_is_the_labelled_equal_weighted_universe() -> None:
    market = small_market(benchmark=False)
    report = backtest(prediction_on(market, first_day=0, top=1), market, "2021-03-02", "2021-03-04",
                      BacktestConfig(topk=1, n_drop=1))
    assert report.benchmark == "equal-weighted universe"
    # 2021-03-03: changes 0.05, -0.05, 0 -> mean 0; 2021-03-04: 11 / 10.5 - 1, 0, 0.04.
    np.testing.assert_allclose(report.daily["bench"].iloc[1:], [0.0, (11 / 10.5 - 1 + 0.04) / 3], atol=1e-7)


def test_nan_prediction_is_refused_with_date_and_instrument() -> None:
    market = small_market(benchmark=True)
    prediction = prediction_on(market, first_day=0, top=0)
    prediction.iloc[4] = np.nan
    with pytest.raises(ValueError, match=r"2021-03-02 for SH600001"):
        backtest(prediction, market, "2021-03-02", "2021-03-04")


def test_prediction_for_an_unknown_instrument_is_refused() -> None:
    market = small_market(benchmark=True)
    index = pd.MultiIndex.from_tuples([(pd.Timestamp("2021-03-01"), "SH999999")], names=["datetime", "instrument"])
    with pytest.raises(ValueError, match="SH999999"):
        backtest(pd.Series([1.0], index=index), market, "2021-03-02", "2021-03-04")


def test_risk_analysis_by_hand() -> None:
    returns = [0.01, -0.02, 0.03, -0.01]
    risk = risk_analysis(np.array(returns))
    mean, std = 0.0025, statistics.stdev(returns)
    assert risk["annualized_return"] == pytest.approx(mean * 238)
    assert risk["information_ratio"] == pytest.approx(mean / std * math.sqrt(238))
    # cumulative 0.01, -0.01, 0.02, 0.01; running max 0.01, 0.01, 0.02, 0.02 -> worst gap -0.02.
    assert risk["max_drawdown"] == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="non-finite"):
        risk_analysis(np.array([0.01, np.nan]))
