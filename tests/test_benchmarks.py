"""Every benchmark script still runs: each has a ``--smoke`` mode (a tiny run on the embedded data that records
nothing), and the test run executes it in a fresh interpreter, as a user would (the four longest with ``-m slow``).

The smoke runs go three at a time (most of a smoke run is starting processes and Ray, not computing), started in
the order of the tests; each test waits for its own script's run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from limits import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
DOC = ROOT / "docs" / "benchmarks.md"
SCRIPTS = sorted(path.name for pattern in ("bench_*.py", "check_*.py") for path in BENCHMARKS.glob(pattern))
AT_ONCE = 3
# Smoke runs of a minute each or more on a 2-core machine (several searches, several Ray nodes, a fresh clone): run
# with -m slow. What they drive is tested in the default run (confirmation and walk-forward in test_search, two
# nodes in test_storage, the command in test_cli); these check the scripts themselves.
SLOW = {"bench_confirmation.py", "bench_quickstart.py", "bench_search_nodes.py", "bench_search_scale.py",
        "bench_walkforward.py"}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


class SmokeRuns:
    """The scripts' smoke runs, ``AT_ONCE`` at a time, each with its output in a file of its own."""

    def __init__(self, scripts: list[str], folder: Path) -> None:
        self.waiting, self.folder = list(scripts), folder
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}
        self.ended: dict[str, tuple[int, str, str]] = {}   # script -> (exit status, stdout, stderr)

    def result(self, script: str) -> tuple[int, str, str]:
        """Wait for ``script``'s run (starting it first if it is still waiting); its status, stdout and stderr."""
        if script in self.waiting:  # asked for out of order: it goes next
            self.waiting.remove(script)
            self.waiting.insert(0, script)
        while script not in self.ended:
            self._fill()
            for name, (process, started) in list(self.running.items()):
                if process.poll() is None and time.monotonic() - started > HANG_SECONDS:
                    process.kill()  # a hang, not slowness: the output so far says where it was
                    process.wait()
                    (self.folder / f"{name}.err").open("a").write(f"\n[killed after {HANG_SECONDS:.0f} s: still running]")
                if process.poll() is not None:
                    del self.running[name]
                    out, err = (self.folder / f"{name}.{kind}" for kind in ("out", "err"))
                    self.ended[name] = (process.returncode, out.read_text(), err.read_text())
            time.sleep(0.2)
        self._fill()  # keep the next runs going while the test checks this one
        return self.ended[script]

    def _fill(self) -> None:
        while self.waiting and len(self.running) < AT_ONCE:
            name = self.waiting.pop(0)
            with open(self.folder / f"{name}.out", "w") as out, open(self.folder / f"{name}.err", "w") as err:
                process = subprocess.Popen([sys.executable, str(BENCHMARKS / name), "--smoke"], cwd=ROOT,
                                           stdout=out, stderr=err, text=True)
            self.running[name] = (process, time.monotonic())

    def stop(self) -> None:
        for process, _ in self.running.values():
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def smoke_runs(request):
    """The smoke runs of the scripts this session selected (the slow ones only with ``-m slow``)."""
    before = digest(DOC)
    selected = [item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_a_benchmark_script_runs_its_smoke_mode_and_records_nothing"]
    with tempfile.TemporaryDirectory(prefix="alphatune-smoke-") as folder:
        runs = SmokeRuns(selected, Path(folder))
        try:
            yield runs, before
        finally:
            runs.stop()


def test_the_scripts_are_found():
    assert {"bench_models.py", "bench_search_memory.py", "check_alpha360_vs_qlib.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", [pytest.param(script, marks=pytest.mark.slow) if script in SLOW else script
                                    for script in SCRIPTS])
def test_a_benchmark_script_runs_its_smoke_mode_and_records_nothing(script, smoke_runs):
    runs, before = smoke_runs
    status, stdout, stderr = runs.result(script)
    output = stdout + stderr
    assert status == 0, f"{script} --smoke exited {status}:\n{output[-4000:]}"
    assert "|---" in stdout, f"{script} --smoke printed no table:\n{output[-2000:]}"
    assert digest(DOC) == before, f"{DOC} changed while {script} --smoke ran (or one of those run beside it)"
