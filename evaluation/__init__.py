"""Evaluation of a searched config as Qlib scores models: signal metrics (IC, Rank IC), Qlib's top-k dropout
backtest, plots, and the searched-vs-default comparison (``evaluation.evaluate``).

Modules: ``signal`` (daily IC and Rank IC), ``backtest`` (top-k dropout and risk analysis, with the settings of
``BacktestConfig``), ``plots``, ``evaluate`` (retrain best.yaml's config and Qlib's default, score both), ``errors``.
"""
