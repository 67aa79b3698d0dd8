"""``ray job submit`` of a search to a local ``ray start --head`` with token authentication on (slow).

The head is started as docs/cluster.md shows: Ray's own CLI, every address on 127.0.0.1, ``RAY_AUTH_MODE=token``
and a token read from a file (``RAY_AUTH_TOKEN_PATH``; here a fresh token in the test's temp dir, so the user's
``~/.ray/auth_token`` is neither read nor written). The job is submitted from the repository root with
``--working-dir .``, as the README shows; its driver and trial workers import the project from that uploaded copy.

The head runs with ``--block`` in its own session and is stopped by signalling that process group: ``ray stop``
stops every Ray process on the machine, other people's included, so it is not used here.

    pytest -m slow tests/test_job_submit.py
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alphatune import datasets
from planted import TINY_SPACE, planted_dataset
from servers import VENV_BIN, free_port
from limits import HANG_SECONDS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# Answers of a fresh head that is not ready to take a job yet: its node agent is still starting, or the first
# working-dir upload raced the agent (the job then fails before the entrypoint runs).
NOT_READY = ("No available agent", "try again later", "Failed to download runtime_env", "Connection refused",
             "ConnectionError", "Failed to connect")


@dataclass
class LocalHead:
    """A running ``ray start --head``: its job server address and the environment a client needs."""

    dashboard: str
    token: str
    client_env: dict[str, str]
    scratch: Path


def client_environment(token_path: Path) -> dict[str, str]:
    """This process's environment with token authentication on, the token read from ``token_path``, the
    project's virtualenv first on PATH (the cluster's ``python`` is the one ``ray start`` finds), and no
    inherited Ray address or inline token."""
    env = {key: value for key, value in os.environ.items()  # nodes of a cluster: no private-Ray loopback switch
           if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """``GET url`` with ``Authorization: Bearer <token>`` when a token is given: (status, body)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def http_status(url: str, token: str | None = None) -> int:
    return http_get(url, token)[0]


def stop_head(head: subprocess.Popen) -> None:
    """SIGTERM the head's process group (``ray start --block`` then stops its GCS, raylet, dashboard and
    workers); SIGKILL what is left after 90 s."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:  # the group's other members exit after the leader
        try:
            os.killpg(head.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)
    os.killpg(head.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def local_head() -> Iterator[LocalHead]:
    # A short path of its own: Ray's Unix sockets live under --temp-dir, and socket paths are limited to 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="alphatune-head-"))
    token = secrets.token_hex(32)
    token_path = scratch / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    env = client_environment(token_path)
    dashboard_port = free_port()
    command = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
               "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
               "--num-cpus", "2", "--temp-dir", str(scratch / "ray"), "--disable-usage-stats"]
    log = (scratch / "head.log").open("w")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + HANG_SECONDS
        while True:
            if head.poll() is not None:
                log_tail = (scratch / "head.log").read_text()[-3000:]
                pytest.fail(f"ray start --head exited with {head.returncode}:\n{log_tail}")
            try:
                if http_status(f"{dashboard}/api/version", token) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the job server at {dashboard} did not answer within 180 s")
            time.sleep(1)
        yield LocalHead(dashboard=dashboard, token=token, client_env=env, scratch=scratch)
    finally:
        stop_head(head)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def ray_job(head: LocalHead, *args: str, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``ray job ARGS --address <head>`` from the repository root, retried while the job server is not ready."""
    command = [str(VENV_BIN / "ray"), "job", args[0], "--address", head.dashboard, *args[1:]]
    deadline = time.monotonic() + HANG_SECONDS
    while True:
        completed = subprocess.run(command, cwd=ROOT, env=env or head.client_env, capture_output=True, text=True,
                                   timeout=timeout)
        output = completed.stdout + completed.stderr
        if completed.returncode == 0 or not any(sign in output for sign in NOT_READY) or time.monotonic() > deadline:
            return completed
        time.sleep(3)


def test_the_job_server_refuses_clients_without_the_token(local_head: LocalHead) -> None:
    assert http_status(f"{local_head.dashboard}/api/jobs/") == 401
    assert http_status(f"{local_head.dashboard}/api/jobs/", token="0" * 64) in (401, 403)
    assert http_status(f"{local_head.dashboard}/api/jobs/", token=local_head.token) == 200

    no_token = {key: value for key, value in local_head.client_env.items()
                if key not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    no_token["HOME"] = str(local_head.scratch)  # no ~/.ray/auth_token to fall back on
    refused = ray_job(local_head, "list", env=no_token, timeout=HANG_SECONDS)
    assert refused.returncode != 0
    assert "Authentication" in refused.stdout + refused.stderr
    listed = ray_job(local_head, "list", timeout=HANG_SECONDS)
    assert listed.returncode == 0, listed.stderr[-2000:]


def test_ray_job_submit_runs_a_search_on_the_head_and_writes_best_yaml(local_head: LocalHead, tmp_path) -> None:
    data = tmp_path / "data"
    datasets.save(planted_dataset(n_days=60, n_stocks=30, seed=4), data)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    runs = tmp_path / "runs"  # absolute: the job's working directory is the uploaded copy in Ray's temp dir

    submitted = ray_job(local_head, "submit", "--working-dir", ".", "--",
                        "python", "-m", "alphatune", "search", "run", "--space", str(space), "--data", str(data),
                        "--samples", "3", "--max-epochs", "2", "--confirm", "0", "--sampler", "random", "--seed", "5",
                        "--storage-path", str(runs), "--name", "job")
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-4000:]
    submission = re.search(r"Job '(raysubmit_\w+)' succeeded", output)
    assert submission, output[-4000:]
    assert "[lstm] 3 trials:" in output

    run_dir = runs / "job" / "lstm"
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["model"] == "lstm"
    assert Path(best["checkpoint"]).is_file()
    assert math.isfinite(best["validation"]["valid_ic"])
    assert best["data"]["source"] == datasets.load(data).source
    assert yaml.safe_load((run_dir / "best_qlib.yaml").read_text())["task"]["model"]["class"] == "LSTM"

    status, body = http_get(f"{local_head.dashboard}/api/jobs/", local_head.token)
    assert status == 200
    [job] = [job for job in json.loads(body) if job["submission_id"] == submission.group(1)]
    assert job["status"] == "SUCCEEDED" and job["entrypoint"].startswith("python -m alphatune search run")


WHERE = """
import ray
import alphatune.search
ray.init()
worker = ray.remote(lambda: __import__("alphatune.search", fromlist=["driver"]).__file__)
print("driver imports", alphatune.search.__file__)
print("worker imports", ray.get(worker.remote()))
"""


def test_a_jobs_driver_and_workers_import_alphatune_from_the_uploaded_copy(local_head: LocalHead) -> None:
    submitted = ray_job(local_head, "submit", "--working-dir", ".", "--", "python", "-c", WHERE)
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-4000:]
    imported = dict(re.findall(r"^(driver|worker) imports (\S+)$", output, flags=re.M))
    assert set(imported) == {"driver", "worker"}, output[-3000:]
    for where in imported.values():
        assert "working_dir_files" in where and where.endswith("search/__init__.py"), where
