"""Every benchmark script still runs: each has a ``--smoke`` mode (a tiny run on the embedded data that records
nothing), and the default test run executes it in a fresh interpreter, as a user would."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
DOC = ROOT / "docs" / "benchmarks.md"
SCRIPTS = sorted(path.name for pattern in ("bench_*.py", "check_*.py") for path in BENCHMARKS.glob(pattern))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def test_the_scripts_are_found():
    assert {"bench_models.py", "bench_search_memory.py", "check_alpha360_vs_qlib.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_script_runs_its_smoke_mode_and_records_nothing(script):
    before = digest(DOC)
    completed = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=ROOT, capture_output=True,
                               text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{script} --smoke exited {completed.returncode}:\n{output[-4000:]}"
    assert "|---" in completed.stdout, f"{script} --smoke printed no table:\n{output[-2000:]}"
    assert digest(DOC) == before, f"{script} --smoke changed {DOC}"
