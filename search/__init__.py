"""Hyperparameter search over the model registry: Ray Tune runs trials, Optuna proposes, ASHA prunes.

``alphatune search run|resume|export`` (``search.cli``); from code ``search.driver.run(SearchOptions(...))``.
Modules, in the order a search meets them: ``options`` (what to search), ``preflight`` (what bad input can
fail, checked before torch and Ray load), ``cluster`` (the Ray cluster), ``objective`` (one metric decides),
``pretrained`` (the LSTM/GRU base of GATs/HIST/IGMTF, trained once per search or given), ``rundir`` (the layout of a
run directory, its manifest and its writer lock), ``ledger`` (the run's own record of its trials), ``study`` (the
Optuna study), ``searcher`` (Optuna behind Tune), ``scheduler`` (ASHA), ``resume`` (one truth from the records
after any kill), ``trial`` (the trial function), ``callbacks`` (NaN stopper, progress, TensorBoard), ``tuning``
(one model's Tune run), ``driver`` (run, resume, report, export), ``results`` and ``export`` (best trial →
``best.yaml``, ``best_qlib.yaml``), ``tune_state`` (run directories of an earlier version, read from Tune's JSON).

Ray security: a search started without ``--address`` starts a local Ray whose token authentication is on (Ray
2.60's default for ``ray.init``; the token lives in ``~/.ray/auth_token``) and whose dashboard, if asked for with
``--dashboard``, binds 127.0.0.1. Nothing here turns authentication off.
"""

if __name__ != "alphatune.search":  # a checkout's folder imported as a bare `search`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

