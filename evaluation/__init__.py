"""Evaluation of a searched config as Qlib scores models: signal metrics (IC, Rank IC), Qlib's top-k dropout
backtest, plots, and the searched-vs-default comparison (``evaluation.evaluate``).

Modules: ``signal`` (daily IC and Rank IC), ``backtest`` (top-k dropout and risk analysis, with the settings of
``BacktestConfig``), ``plots``, ``evaluate`` (retrain best.yaml's config and Qlib's default, score both), ``errors``.
"""

if __name__ != "alphatune.evaluation":  # a checkout's folder imported as a bare `evaluation`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

