#!/usr/bin/env bash
# Create the virtual environment that runs Qlib itself as the yardstick for the benchmarks.
#
# Qlib (PyPI `pyqlib`) pins an older pyarrow through mlflow, so it lives in an environment of its own,
# outside the repository and never a dependency of the project. Usage:
#   bash benchmarks/qlib_env.sh            # creates /work/qlib-venv (or $QLIB_VENV)
# Re-running it on an existing environment only re-checks the installs.
set -euo pipefail

QLIB_VENV="${QLIB_VENV:-/work/qlib-venv}"
PYTHON="${PYTHON:-python3}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "$(realpath -m "$QLIB_VENV")/" in
  "$REPO_ROOT"/*) echo "qlib_env.sh: QLIB_VENV=$QLIB_VENV is inside the repository $REPO_ROOT; choose a path outside it" >&2; exit 2 ;;
esac

export MLFLOW_DISABLE_TELEMETRY=true
if [ ! -x "$QLIB_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$QLIB_VENV"
fi
"$QLIB_VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first and pinned, so pyqlib does not pull a CUDA build of its own choosing.
"$QLIB_VENV/bin/python" -m pip install --quiet torch==2.13.0
"$QLIB_VENV/bin/python" -m pip install --quiet pyqlib
"$QLIB_VENV/bin/python" -c "import qlib, torch; print(f'qlib {qlib.__version__}, torch {torch.__version__} in $QLIB_VENV')"
