"""Hyperparameter search over the model registry: Ray Tune runs trials, Optuna proposes, ASHA prunes.

``python -m search run|resume|export``; from code: ``search.driver.run(SearchOptions(...))``.
"""
