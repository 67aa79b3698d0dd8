"""Helpers shared by the search benchmarks: a local Ray cluster started with Ray's CLI, node memory, trial results.

``LocalCluster`` starts ``ray start --head --block`` (plus optional ``ray start --address`` worker nodes) on
this machine with token authentication on, connects this process to it, and stops every node by signalling its
process group (never ``ray stop``, which would stop every Ray on the machine, other people's included). Ray
reads ``RAY_AUTH_MODE`` and the token once per process, so the process that connects must be started with them
in its environment: make a token with ``new_token`` and start that process with ``child_json(...,
env=auth_environment(token))``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_dir(prefix: str) -> Path:
    """A fresh directory under /tmp with a short path (Ray's Unix socket paths must stay under 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def new_token(directory: Path) -> Path:
    """A fresh random token (as ``ray get-auth-token --generate`` makes) in ``directory/auth_token``, mode 600."""
    path = Path(directory) / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def auth_environment(token_path: Path) -> dict[str, str]:
    """This process's environment with token authentication on, the token read from ``token_path``, the
    project's Python first on PATH, and no inherited Ray address or inline token."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


class LocalCluster:
    """``ray start --head`` with ``head_cpus`` CPUs and one ``ray start --address`` node per entry of
    ``worker_cpus``, all on this machine, token authentication on with the token in ``token_path``. Use as a
    context manager: on entry the nodes are up and this process is connected (``ray.init``); on exit Ray is shut
    down here and every node stopped. This process must run in ``auth_environment(token_path)``."""

    def __init__(self, head_cpus: int, token_path: Path, worker_cpus: tuple[int, ...] = ()) -> None:
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.token_path = Path(token_path)
        self.scratch = scratch_dir("alphatune-cluster-")
        self.port = free_port()
        self.nodes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def environment(self) -> dict[str, str]:
        return auth_environment(self.token_path)

    def _start(self, args: list[str]) -> None:
        log = self.scratch / f"node{len(self.nodes)}.log"
        self.logs.append(log)
        with log.open("w") as out:
            self.nodes.append(subprocess.Popen(
                [RAY, "start", "--block", "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
                 *args], env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))

    def __enter__(self) -> "LocalCluster":
        if (os.environ.get("RAY_AUTH_MODE") != "token"
                or os.environ.get("RAY_AUTH_TOKEN_PATH") != str(self.token_path)):
            raise RuntimeError(f"start this process with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH="
                               f"{self.token_path} in its environment (Ray reads them once, at import)")
        import ray
        try:
            self._start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                         "--include-dashboard", "false", "--ray-client-server-port", str(free_port()),
                         "--num-cpus", str(self.head_cpus), "--temp-dir", str(self.scratch / "ray")])
            self._wait_for_nodes(1)
            for cpus in self.worker_cpus:
                self._start(["--address", f"127.0.0.1:{self.port}", "--num-cpus", str(cpus)])
            self._wait_for_nodes(1 + len(self.worker_cpus))
            ray.init(address=f"127.0.0.1:{self.port}", logging_level="WARNING")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_nodes(self, count: int, timeout: float = 180) -> None:
        """Wait until ``ray status`` lists ``count`` alive nodes; a node process that exits is an error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node, log in zip(self.nodes, self.logs):
                if node.poll() is not None:
                    raise RuntimeError(f"ray start exited with {node.returncode}: {log.read_text()[-2000:]}")
            status = subprocess.run([RAY, "status", "--address", f"127.0.0.1:{self.port}"], env=self.environment(),
                                    capture_output=True, text=True, timeout=60)
            active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if status.returncode == 0 and active.count("node_") >= count:
                return
            time.sleep(2)
        raise RuntimeError(f"{count} Ray nodes were not up after {timeout:.0f} s (logs in {self.scratch})")

    def stop(self) -> None:
        """Shut down this process's Ray connection and stop every node (worker nodes first); SIGKILL stragglers."""
        import ray
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(self.nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                node.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)
        for node in self.nodes:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.killpg(node.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(1)
            else:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- memory -----------------------------------------------------------------------------------------------------

def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of process ``pid`` in kB from ``/proc/<pid>/smaps_rollup``; (0, 0) if it has exited."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0, 0
    return pss, rss


def _parents() -> dict[int, int]:
    """pid → parent pid of every process now."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def process_tree(roots: tuple[int, ...]) -> list[int]:
    """``roots`` and all their descendants: a Ray node is the process that started it (``ray.init`` in a driver,
    or ``ray start``) and its children (GCS, raylet with its object store, agents, and the raylet's workers, whose
    command lines Ray rewrites, so they are found by parentage, not by name)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def node_memory_mb(roots: tuple[int, ...]) -> tuple[float, float, int]:
    """(sum of PSS, sum of RSS, process count) in MiB over ``process_tree(roots)``.

    PSS splits every shared page (the object store's shared memory, memory-mapped files, shared libraries)
    among the processes mapping it, so the PSS sum is the memory the node really holds; the RSS sum counts a
    shared page once per process that touched it."""
    pids = process_tree(roots)
    totals = [_memory_kb(pid) for pid in pids]
    return sum(p for p, _ in totals) / 1024, sum(r for _, r in totals) / 1024, len(pids)


class PeakMemory(threading.Thread):
    """Samples ``node_memory_mb(roots)`` every ``interval`` seconds until ``stop()``; keeps the peaks."""

    def __init__(self, roots: tuple[int, ...], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.peak_pss = self.peak_rss = 0.0
        self.peak_processes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pss, rss, count = node_memory_mb(self.roots)
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, count)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


# --- results ----------------------------------------------------------------------------------------------------

def trial_reports(run_dir: Any) -> dict[str, list[dict[str, Any]]]:
    """Trial id → every epoch it reported, in order, from the run's own ledger (``trials.jsonl``): each row has
    the epoch's numbers, ``seconds`` of training, ``started_at`` / ``reported_at`` (Unix times), ``pid`` and
    ``node_ip`` of the worker."""
    from alphatune.search.ledger import read_ledger
    from alphatune.search.rundir import as_run_dir
    return {trial.trial_id: trial.results for trial in read_ledger(as_run_dir(run_dir).work) or []}


def load_average() -> str:
    """The 1-minute load average, for the table notes."""
    return f"{os.getloadavg()[0]:.1f}"


def child_json(args: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python <args>`` from the repository root in a fresh interpreter (environment ``env``, default this
    one's); its last stdout line is JSON."""
    completed = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=timeout)
    if completed.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])
