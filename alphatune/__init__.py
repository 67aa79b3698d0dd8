"""alphatune: hyperparameter search for Qlib's eight deep stock-prediction models on Alpha360.

Packages (folders at the repository's top level, imported under this name): ``alphatune.datasets`` (Alpha360
data), ``alphatune.models`` (the networks and the shared trainer), ``alphatune.spaces`` (search spaces),
``alphatune.evaluation`` (test IC, backtest, searched vs default), ``alphatune.search`` (Ray Tune + Optuna +
ASHA). The command line is ``alphatune`` (``alphatune.cli``), also ``python -m alphatune``.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.2.0"

# Installed, the packages sit inside this one. In a checkout, or a copy of one (what `ray job submit
# --working-dir .` ships to the cluster), they are the folders beside this one: import them from there.
_here = Path(__file__).resolve().parent
if not (_here / "models").is_dir() and (_here.parent / "models" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # type: ignore[name-defined]  # noqa: F821
