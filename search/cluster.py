"""The Ray cluster a search runs on: a private local one on loopback, or the one ``--address`` names.

Without ``--address`` and ``$RAY_ADDRESS`` a search always starts a fresh local Ray (``ray.init(address="local")``)
whose every service listens on 127.0.0.1 only: it never joins a cluster found through Ray's cluster file
(``$RAY_TMPDIR/ray/ray_current_cluster``, left behind by an earlier ``ray start``, possibly dead) nor a live
cluster someone else started. A named address is probed first: one that does not answer is a one-line
``ClusterError`` within ``PROBE_SECONDS``, not Ray's minute of retries.

Ray's token authentication stays as Ray sets it (on by default for a new local cluster); nothing here turns it
off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOCALHOST = "127.0.0.1"
PROBE_SECONDS = 5.0
# Ray reads this (at import, and per process) to decide whether a node may serve other machines; off, every Ray
# service of the node binds the loopback address, the metrics agent included.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(ValueError):
    """The Ray cluster named by ``--address``/``$RAY_ADDRESS`` cannot be reached; the message says which and why."""


def named_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else a non-empty ``$RAY_ADDRESS`` (set inside ``ray job submit``), else
    ``None`` (start a private local one)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _where(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray address (``host:port``, ``ray://host:port``, or ``auto``: Ray's cluster file)."""
    if address == "auto":
        from ray._common.utils import get_ray_address_file
        path = get_ray_address_file(None)
        if not os.path.isfile(path):
            raise ClusterError(f"--address auto: no Ray cluster was started on this machine ({path} does not exist)")
        with open(path, encoding="utf-8") as file:
            address = file.read().strip()
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if parts.scheme in ("http", "https"):
        raise ClusterError(f"--address {address}: that is a dashboard or job-server URL; give the cluster's GCS "
                           f"address host:port (`ray start --head` prints it, port 6379 by default), or submit "
                           f"the search with `ray job submit --address {address}`")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "ray" or not parts.hostname or port is None:
        raise ClusterError(f"--address {address}: expected host:port (or ray://host:port)")
    return parts.hostname, port


def check_address(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise ``ClusterError`` unless something accepts a connection at ``address`` within ``timeout`` seconds."""
    host, port = _where(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error)).lower()
        raise ClusterError(f"--address {address}: no Ray cluster answers at {host}:{port} ({reason}); start one "
                           f"with `ray start --head`, or leave --address and $RAY_ADDRESS unset for a private local "
                           f"cluster") from None


def check_named_address(address: str | None = None) -> None:
    """Probe the cluster a search would join (``named_address``), if any: call it before slow work, so that a dead
    address is refused within seconds."""
    named = named_address(address)
    if named:
        check_address(named)


def start_ray(address: str | None = None, dashboard: bool = False, num_cpus: int | None = None,
              num_gpus: int | None = None) -> None:
    """Join the cluster ``named_address(address)`` (probed first), else start a private local one on 127.0.0.1
    (with ``num_cpus``/``num_gpus`` when given; its dashboard, when asked for, on 127.0.0.1 too). No-op when Ray
    is already initialised in this process."""
    import ray
    if ray.is_initialized():
        return
    with _keeping_sigterm_handler():
        _start_ray(address, dashboard, num_cpus, num_gpus)


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """``ray.init`` replaces the process's SIGTERM handler with one that exits at once; a Python handler the process
    had before (the ``alphatune`` command's: stop like Ctrl-C, trials saved, Ray shut down) is put back."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, before)


def _start_ray(address: str | None, dashboard: bool, num_cpus: int | None, num_gpus: int | None) -> None:
    import ray
    # Tune leaves the results of failed trial tasks unread on purpose (it reports the failure itself): Ray's
    # "Unhandled error" traceback for each would only repeat it.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    common: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    named = named_address(address)
    if named:
        check_address(named)
        ray.init(address=named, **common)
        return
    from ray._private import ray_constants
    previous = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"       # inherited by the node's processes as Ray starts them
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process imported Ray before: the same switch, read now
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard,
                 dashboard_host=LOCALHOST, **common)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous[1]
        if previous[0] is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = previous[0]


def concurrent_slots(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> int:
    """How many trials run at once: ``max_concurrent`` when given, else how many trials' CPUs (and GPUs) the
    connected cluster has when the search starts (at least 1; a cluster that grows later needs
    ``--max-concurrent`` to use the new nodes).

    Tune is always given this cap. Besides bounding what TPE proposes ahead of results, it is what lets Tune
    keep one trial pending per slot: with a search algorithm and no cap, Tune keeps a single trial pending,
    so it starts the first trials' actors one after the other and each slot waits for the actor before it (a
    process importing torch); capped, the first actors all start together."""
    return slot_plan(cpus_per_trial, gpus_per_trial, max_concurrent)[0]


def slot_plan(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> tuple[int, list[str]]:
    """``(slots, what a search says about them at its start)``: how the cluster's CPUs and GPUs divide into
    trial slots, a warning when the CPUs asked per trial leave GPU slots idle (a fractional-GPU search with as
    many CPUs per trial as the GPU has slots can fit fewer trials than the GPU), and, when trials share a GPU,
    whether they do so through CUDA MPS."""
    import ray
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    by_cpu = int(cpus / cpus_per_trial + 1e-9)
    by_gpu = int(gpus / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else None
    fits = max(1, min(by_cpu, by_gpu) if by_gpu is not None else by_cpu)
    slots = max_concurrent or fits
    parts = [f"CPUs fit {by_cpu} ({cpus:g} / {cpus_per_trial:g} per trial)"]
    if by_gpu is not None:
        parts.append(f"GPUs fit {by_gpu} ({gpus:g} / {gpus_per_trial:g} per trial)")
    lines = [f"{slots} trial slot{'s' * (slots != 1)}" + (" (--max-concurrent)" if max_concurrent else "")
             + ": " + ", ".join(parts)]
    if by_gpu is not None and by_cpu < by_gpu and not max_concurrent:
        lines.append(f"warning: the CPUs fit {by_cpu} trials but the GPUs {by_gpu}: {by_gpu - by_cpu} GPU slot(s) stay "
                     f"idle; give --cpus-per-trial {max(cpus / by_gpu, 0.01):g} or less to use them all")
    if gpus_per_trial and gpus_per_trial < 1:
        share = round(1 / gpus_per_trial)
        pipe = mps_pipe()
        lines.append(f"trials share each GPU {share} at a time " + (
            f"through CUDA MPS (control pipe {pipe})" if pipe else
            "without CUDA MPS: their kernels time-slice the GPU; start the MPS daemon to run them side by side "
            "(docs/cluster.md)"))
    return slots, lines


def mps_pipe() -> Path | None:
    """The CUDA MPS control pipe when an MPS daemon runs for this user (``$CUDA_MPS_PIPE_DIRECTORY``, by default
    ``/tmp/nvidia-mps``), else ``None``."""
    directory = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps")
    pipe = directory / "control"
    return pipe if pipe.exists() else None


def check_gpus(gpus_per_trial: float, address: str | None) -> None:
    """Refuse ``--gpus-per-trial`` > 0 for a private local cluster when torch has no CUDA or Ray's node has no GPU:
    its trials would fail on ``cuda`` or wait forever. A named cluster may add GPU nodes later (autoscaling), so
    one without a GPU is only warned about. Call before ``start_ray`` (only torch is asked) and after."""
    if gpus_per_trial <= 0:
        return
    import ray
    import torch
    from alphatune.search.options import OptionError
    if not named_address(address):
        if not torch.cuda.is_available():
            raise OptionError(f"--gpus-per-trial {gpus_per_trial:g}: torch sees no CUDA GPU on this machine "
                              f"(torch {torch.__version__}); use 0 for CPU trials")
        if ray.is_initialized() and ray.cluster_resources().get("GPU", 0.0) <= 0:
            raise OptionError(f"--gpus-per-trial {gpus_per_trial:g}: this machine's Ray node has no GPU resource; "
                              f"start Ray with --num-gpus or use 0")
    elif ray.is_initialized() and ray.cluster_resources().get("GPU", 0.0) <= 0:
        logging.getLogger(__name__).warning("--gpus-per-trial %g: the cluster has no GPU now; trials wait until a "
                                            "GPU node joins", gpus_per_trial)
