"""Qlib's top-k dropout backtest and risk analysis, reimplemented from the rules of Qlib 0.9.7.

The rules (``TopkDropoutStrategy`` with Qlib's defaults, its exchange and account, daily bars):

* On trade day ``t`` the strategy reads the scores dated ``t - 1`` (the previous calendar day) and trades at
  ``t``'s close. A day whose previous day has no score at all makes no decision (the first test day).
* Held stocks are ranked by score, a held stock with no score counting as the worst. The ``n_drop + topk -
  held`` best unheld scored stocks are candidates; of held + candidates ranked together (no score last, in
  instrument order) the held stocks among the bottom ``n_drop`` are sold; ``len(sell) + topk - held`` of the
  candidates are bought (Python slice semantics, as Qlib, so a portfolio above ``topk`` buys fewer). Ties keep
  instrument order.
* A stock trades on day ``t`` only when it has a close and ``-limit < change < limit``; otherwise it is neither
  bought nor sold (Qlib's ``forbid_all_trade_at_limit``). A blocked sale still counts in ``len(sell)``, so its
  replacement is bought anyway and the portfolio can exceed ``topk``; a blocked buy keeps its share of cash idle.
* Sells first, each the whole holding. Then each buy gets ``cash * risk_degree / len(buy)`` at the close,
  rounded down to whole lots of ``trade_unit`` raw shares (``amount * factor``; no rounding when a day with a
  close lacks a factor, as Qlib's adjusted-price mode). A buy the remaining cash cannot pay is clipped exactly
  as Qlib's exchange clips it. Each trade costs ``max(value * rate, min_cost)``; a trade of zero value is free.
* The account is valued at the close (a holding without a close keeps its last price). ``return`` is (change of
  account + cost) / previous account; ``cost`` and ``turnover`` are divided by the previous account.

Not modelled, because they cannot bind with these settings: volume limits and impact cost (Qlib's defaults
are off), and the exchange's refusal of a sale worth less than its own cost when cash is empty.
Risk analysis is Qlib's daily "sum" mode: annualised return = mean * 238, information ratio = mean / std
(ddof 1) * sqrt(238), max drawdown = min(cumsum - running max of cumsum).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from alphatune.evaluation.signal import check_finite_prediction


@dataclass(frozen=True)
class BacktestConfig:
    """Qlib's Alpha360 benchmark settings."""

    topk: int = 50
    n_drop: int = 5
    account: float = 1e8
    risk_degree: float = 0.95
    open_cost: float = 0.0005
    close_cost: float = 0.0015
    min_cost: float = 5.0
    limit_threshold: float = 0.095
    trade_unit: int | None = 100
    annual_days: int = 238

    def __post_init__(self) -> None:
        if self.topk < 1 or self.n_drop < 0:
            raise ValueError(f"topk must be >= 1 and n_drop >= 0, got topk={self.topk}, n_drop={self.n_drop}")
        if self.account <= 0:
            raise ValueError(f"account must be positive, got {self.account}")


@dataclass(frozen=True)
class DailyTrading:
    """What the strategy did each trade day (arrays over trade days)."""

    account: np.ndarray  # value at the close
    returns: np.ndarray  # (account change + cost) / previous account
    cost: np.ndarray  # cost / previous account
    turnover: np.ndarray  # traded value / previous account
    holdings: np.ndarray  # number of stocks held at the close (int)


def round_to_lots(amount: np.ndarray, factor: np.ndarray, trade_unit: int | None) -> np.ndarray:
    """Adjusted share amounts rounded down to whole lots of ``trade_unit`` raw shares (raw = amount * factor).

    The 0.1 added before flooring absorbs float error, as Qlib does. ``trade_unit=None`` returns ``amount``.
    """
    if trade_unit is None:
        return amount
    return np.floor_divide(amount * factor + 0.1, trade_unit) * trade_unit / factor


def topk_dropout_orders(scores: np.ndarray, held: np.ndarray, topk: int, n_drop: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Instrument positions to sell and to buy (buys in priority order) for one day's ``scores`` (NaN: no
    score) and ``held`` mask, before tradability is checked."""
    held_idx = np.flatnonzero(held)
    candidates = np.flatnonzero(np.isfinite(scores) & ~held)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
    wanted = candidates[: n_drop + topk - held_idx.size]
    pool = np.sort(np.concatenate([held_idx, wanted]))
    pool_scores = scores[pool]
    scored = np.isfinite(pool_scores)
    ranked = np.concatenate([pool[scored][np.argsort(-pool_scores[scored], kind="stable")], pool[~scored]])
    sell = held_idx[np.isin(held_idx, ranked[-n_drop:])]
    buy = wanted[: sell.size + topk - held_idx.size]
    return sell, buy


def _trade_cost(value: np.ndarray, rate: float, min_cost: float) -> np.ndarray:
    return np.where(value > 1e-5, np.maximum(value * rate, min_cost), 0.0)


def _fill_buys(cash: float, amount: np.ndarray, price: np.ndarray, factor: np.ndarray,
               config: BacktestConfig) -> np.ndarray:
    """The amounts the exchange really fills for buy orders executed in order from ``cash``.

    Normally cash covers every order and this is one vectorised step. When it runs short (tiny accounts), the
    orders from the first short one on are filled one at a time as Qlib does: nothing when cash is below the
    cost, otherwise the most that cash pays for, in whole lots.
    """
    value = amount * price
    spent = np.where(value > 1e-5, value + _trade_cost(value, config.open_cost, config.min_cost), 0.0)
    before = cash - np.concatenate([[0.0], np.cumsum(spent)[:-1]])
    short = np.flatnonzero((value > 1e-5) & (before < spent))
    if short.size == 0:
        return amount
    filled = amount.copy()
    cash = float(before[short[0]])
    rate, min_cost = config.open_cost, config.min_cost
    for i in range(short[0], amount.size):  # the rare path: a handful of orders once cash runs out
        order_value = amount[i] * price[i]
        if cash < max(order_value * rate, min_cost):
            filled[i] = 0.0
        elif cash < order_value + max(order_value * rate, min_cost):
            affordable = 0.0
            if cash >= min_cost:
                affordable = (cash / (1 + rate) if cash >= min_cost / rate + min_cost else cash - min_cost) / price[i]
            filled[i] = round_to_lots(np.array([min(affordable, amount[i])]), factor[i:i + 1], config.trade_unit)[0]
        value_i = filled[i] * price[i]
        if value_i > 1e-5:
            cash -= value_i + max(value_i * rate, min_cost)
    return filled


def simulate_topk_dropout(signal: np.ndarray, close: np.ndarray, factor: np.ndarray, change: np.ndarray,
                          config: BacktestConfig = BacktestConfig()) -> DailyTrading:
    """Run the strategy over trade days ``t = 0 .. T-1``.

    ``signal[t]`` holds the scores the strategy reads on day ``t`` (already the previous day's prediction; NaN:
    no score; a row without any score means no decision that day). ``close`` (adjusted, NaN: no bar),
    ``factor`` and ``change`` are the trade days' ``[T, S]`` panels. One Python iteration per day, numpy over
    stocks inside it.
    """
    if not signal.shape == close.shape == factor.shape == change.shape or signal.ndim != 2:
        raise ValueError(f"signal, close, factor and change must be [days, stocks] panels of one shape, got "
                         f"{signal.shape}, {close.shape}, {factor.shape}, {change.shape}")
    close = close.astype(np.float64)
    factor = factor.astype(np.float64)
    has_close = np.isfinite(close)
    with np.errstate(invalid="ignore"):
        tradable = has_close & ~(change >= config.limit_threshold) & ~(change <= -config.limit_threshold)
    # Qlib rounds to lots only when every bar with a close has a factor (else "adjusted-price mode").
    trade_unit = config.trade_unit if not np.any(has_close & ~np.isfinite(factor)) else None
    lots = replace(config, trade_unit=trade_unit)

    days, stocks = close.shape
    amount = np.zeros(stocks)
    last_price = np.zeros(stocks)
    cash = float(config.account)
    previous_account = cash
    out = {key: np.zeros(days) for key in ("account", "returns", "cost", "turnover")}
    holdings = np.zeros(days, dtype=np.int64)
    for t in range(days):
        cost = traded = 0.0
        scores = signal[t]
        if np.isfinite(scores).any():
            sell, buy = topk_dropout_orders(scores, amount > 0, config.topk, config.n_drop)
            sell = sell[tradable[t, sell]]
            sell_value = amount[sell] * close[t, sell]
            sell_cost = _trade_cost(sell_value, config.close_cost, config.min_cost)
            cash += float(np.sum(sell_value - sell_cost))
            amount[sell] = 0.0
            cost += float(sell_cost.sum())
            traded += float(sell_value.sum())

            budget = cash * config.risk_degree / buy.size if buy.size else 0.0
            buy = buy[tradable[t, buy]]
            price = close[t, buy]
            wanted = round_to_lots(round_to_lots(budget / price, factor[t, buy], trade_unit),
                                   factor[t, buy], trade_unit)
            filled = _fill_buys(cash, wanted, price, factor[t, buy], lots)
            buy_value = filled * price
            done = buy_value > 1e-5
            buy, price, buy_value = buy[done], price[done], buy_value[done]
            buy_cost = _trade_cost(buy_value, config.open_cost, config.min_cost)
            amount[buy] += buy_value / price
            cash -= float(np.sum(buy_value + buy_cost))
            cost += float(buy_cost.sum())
            traded += float(buy_value.sum())

        held = amount > 0
        update = held & has_close[t]
        last_price[update] = close[t, update]
        account = cash + float(np.sum(amount[held] * last_price[held]))
        out["account"][t] = account
        out["returns"][t] = (account - previous_account + cost) / previous_account
        out["cost"][t] = cost / previous_account
        out["turnover"][t] = traded / previous_account
        holdings[t] = int(held.sum())
        previous_account = account
    return DailyTrading(holdings=holdings, **out)


def risk_analysis(returns: np.ndarray, annual_days: int = 238) -> dict[str, float]:
    """Qlib's daily risk analysis in "sum" mode: mean, std (ddof 1), annualized_return = mean * N,
    information_ratio = mean / std * sqrt(N), max_drawdown = min(cumsum - running max of cumsum).

    NaN days are not allowed (raise); fewer than two days give a NaN std and information ratio.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError(f"risk analysis needs a non-empty finite return series, got {r.size} days "
                         f"with {int(np.sum(~np.isfinite(r)))} non-finite")
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if r.size > 1 else float("nan")
    cumulative = np.cumsum(r)
    return {"mean": mean, "std": std, "annualized_return": mean * annual_days,
            "information_ratio": float(mean / std * np.sqrt(annual_days)) if std > 0 else float("nan"),
            "max_drawdown": float(np.min(cumulative - np.maximum.accumulate(cumulative)))}


@dataclass(frozen=True)
class BacktestReport:
    """Daily results indexed by trade date and the risk analysis of the excess return with cost.

    ``daily`` columns: ``account, return, cost, turnover, holdings, bench, excess_return_without_cost,
    excess_return_with_cost``. ``benchmark`` names what ``bench`` is.
    """

    daily: pd.DataFrame
    risk: dict[str, float]
    benchmark: str


def score_panel(prediction: pd.Series, dates: np.ndarray, instruments: np.ndarray) -> np.ndarray:
    """``prediction`` (indexed (datetime, instrument)) as a ``[len(dates), len(instruments)]`` float64 panel,
    NaN where there is no prediction. NaN predictions, duplicates and rows outside the calendar or universe are
    refused with a message naming the row."""
    check_finite_prediction(prediction)
    if prediction.index.has_duplicates:
        date, instrument = prediction.index[prediction.index.duplicated()][0]
        raise ValueError(f"prediction has two rows for {pd.Timestamp(date).date()} {instrument}")
    when = pd.DatetimeIndex(prediction.index.get_level_values(0))
    who = prediction.index.get_level_values(1)
    row = pd.DatetimeIndex(dates).get_indexer(when)
    col = pd.Index(instruments).get_indexer(who)
    for missing, labels, what in ((row < 0, when, "date not in the market calendar"),
                                  (col < 0, who, "instrument not in the market data")):
        if missing.any():
            first = int(np.flatnonzero(missing)[0])
            raise ValueError(f"prediction row ({when[first].date()}, {who[first]}): {what} "
                             f"({labels[first]}; {int(missing.sum())} such rows)")
    panel = np.full((len(dates), len(instruments)), np.nan)
    panel[row, col] = prediction.to_numpy(dtype=np.float64)
    return panel


def index_returns(benchmark_close: np.ndarray) -> np.ndarray:
    """Daily index return close / previous close - 1 in float32 as Qlib's expression, NaN (and the first day) → 0."""
    close = np.asarray(benchmark_close, dtype=np.float32)
    returns = np.zeros(close.shape, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        returns[1:] = close[1:] / close[:-1] - np.float32(1)
    return np.nan_to_num(returns, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)


def universe_returns(change: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Equal-weighted mean of ``change`` over ``members`` (bool ``[D, S]``) with a finite change each day; 0 on a
    day without any. The stand-in benchmark for data without an index."""
    values = np.where(members & np.isfinite(change), change, 0.0).astype(np.float64)
    count = (members & np.isfinite(change)).sum(axis=1)
    return np.divide(values.sum(axis=1), count, out=np.zeros(len(count)), where=count > 0)


def backtest(prediction: pd.Series, market: Any, start: str, end: str,
             config: BacktestConfig = BacktestConfig(), benchmark_name: str | None = None) -> BacktestReport:
    """Backtest ``prediction`` on ``market`` (a ``datasets.MarketData``) over the trade days in ``[start, end]``.

    The benchmark is the market's index (``benchmark_close``, named ``benchmark_name``) when it has one;
    otherwise the equal-weighted daily change of the stocks predicted that day, labelled
    ``"equal-weighted universe"``.
    """
    dates = pd.DatetimeIndex(market.dates)
    trade = np.flatnonzero((dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end)))
    if trade.size == 0:
        raise ValueError(f"no market day between {start} and {end} (market data covers "
                         f"{dates[0].date()}..{dates[-1].date()})")
    scores = score_panel(prediction, market.dates, market.instruments)
    signal = np.full((trade.size, scores.shape[1]), np.nan)
    has_previous = trade > 0
    signal[has_previous] = scores[trade[has_previous] - 1]
    change = np.asarray(market.change)
    trading = simulate_topk_dropout(signal, np.asarray(market.close)[trade], np.asarray(market.factor)[trade],
                                    change[trade], config)
    if market.benchmark_close is not None:
        bench = index_returns(market.benchmark_close)[trade]
        name = benchmark_name or "benchmark index"
    else:
        bench = universe_returns(change[trade], np.isfinite(scores[trade]))
        name = "equal-weighted universe"
    daily = pd.DataFrame({"account": trading.account, "return": trading.returns, "cost": trading.cost,
                          "turnover": trading.turnover, "holdings": trading.holdings, "bench": bench},
                         index=pd.DatetimeIndex(dates[trade], name="datetime"))
    daily["excess_return_without_cost"] = daily["return"] - daily["bench"]
    daily["excess_return_with_cost"] = daily["return"] - daily["bench"] - daily["cost"]
    return BacktestReport(daily, risk_analysis(daily["excess_return_with_cost"].to_numpy(), config.annual_days),
                          name)
