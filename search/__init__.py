"""Hyperparameter search over the model registry: Ray Tune runs trials, Optuna proposes, ASHA prunes.

``alphatune search run|resume|export`` (``search.cli``); from code ``search.driver.run(SearchOptions(...))``.
Modules, in the order data flows: ``options`` (what to search, validated before Ray starts), ``data`` (the
dataset, prepared once), ``pretrained`` (the LSTM/GRU base of GATs/HIST/IGMTF, trained once per search
before their trials, or a given file), ``searcher`` (Optuna behind Tune), ``trial`` (the trial function), ``callbacks``
(NaN stopper, progress, TensorBoard), ``driver`` (the Tuner, run/resume/export), ``results`` and ``export``
(best trial → ``best.yaml``, ``best_qlib.yaml``), ``rundir`` (the layout of a run directory).

Ray security: a search started without ``--address`` starts a local Ray whose token authentication is on (Ray
2.60's default for ``ray.init``; the token lives in ``~/.ray/auth_token``) and whose dashboard, if asked for with
``--dashboard``, binds 127.0.0.1. Nothing here turns authentication off.
"""

if __name__ != "alphatune.search":  # a checkout's folder imported as a bare `search`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

