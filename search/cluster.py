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

import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alphatune import interrupts

LOCALHOST = "127.0.0.1"
PROBE_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 5.0  # between a Ray start that timed out and the second try
# Ray reads this when it is imported to decide whether a node may serve other machines; off, every Ray service of
# the node it starts binds the loopback address, the metrics agent included (``prefer_loopback``).
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(ValueError):
    """The Ray cluster named by ``--address``/``$RAY_ADDRESS`` cannot be reached; the message says which and why."""


def named_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else a non-empty ``$RAY_ADDRESS`` (set inside ``ray job submit``), else
    ``None`` (start a private local one)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def cluster_file() -> Path:
    """Where ``ray start`` records the cluster it started on this machine, which ``ray.init(address="auto")`` joins
    (Ray's documented location: ``ray_current_cluster`` in Ray's temporary directory, ``$RAY_TMPDIR/ray``, by
    default ``/tmp/ray``)."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def _where(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray address (``host:port``, ``ray://host:port``, or ``auto``: Ray's cluster file)."""
    if address == "auto":
        path = cluster_file()
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
    with interrupts.kept():  # ray.init sets its own SIGTERM handler, and forks where a Ctrl-C can be swallowed
        _start_ray(address, dashboard, num_cpus, num_gpus)


def prefer_loopback(address: str | None = None) -> None:
    """Call before Ray is imported, when a search may start a private Ray (no ``--address``, no ``$RAY_ADDRESS``):
    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when it is imported; off, every service of the node it starts
    binds the loopback address only (the ``alphatune`` command does this; a Python program that starts a private
    Ray through ``start_ray`` after importing Ray itself gets Ray's own addresses, and a warning saying so). Not
    for a process that joins a named cluster: its driver must be reachable by the other nodes."""
    if not named_address(address):
        os.environ[_CLUSTER_SWITCH] = "0"


def _start_ray(address: str | None, dashboard: bool, num_cpus: int | None, num_gpus: int | None) -> None:
    import ray
    # Tune leaves the results of failed trial tasks unread on purpose (it reports the failure itself): Ray's
    # "Unhandled error" traceback for each would only repeat it.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    common: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    named = named_address(address)
    if named:
        check_address(named)
        _init_retrying_once(address=named, **common)
        return
    previous = os.environ.get(_CLUSTER_SWITCH)
    os.environ[_CLUSTER_SWITCH] = "0"  # for the node's processes, which read it as Ray starts them
    try:
        _init_retrying_once(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard,
                            dashboard_host=LOCALHOST, **common)
    finally:
        if previous is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = previous
    if ray.util.get_node_ip_address() != LOCALHOST:
        logging.getLogger(__name__).warning(
            "this process imported Ray before alphatune.search.cluster.prefer_loopback(): the private Ray's services "
            "listen on this machine's address %s, not 127.0.0.1 only (the alphatune command does not do this)",
            ray.util.get_node_ip_address())


def _init_retrying_once(**settings: Any) -> None:
    """``ray.init(**settings)``; a start that times out (a machine so busy that Ray's processes do not register
    within Ray's own startup wait, 30 s for the raylet in Ray 2.60) is shut down and tried once more, then it is
    one ``ClusterError`` line."""
    import ray
    for attempt in (1, 2):
        try:
            ray.init(**settings)
            return
        except Exception as error:
            if not _start_timeout(error):
                raise
            ray.shutdown()  # the processes the attempt left behind
            if attempt == 2:
                raise ClusterError(f"Ray did not start, twice ({_first_line(error)}); this machine is probably too "
                                   f"busy right now: try again when it is less loaded, or start Ray yourself (`ray "
                                   f"start --head --node-ip-address 127.0.0.1`) and pass --address") from None
            logging.getLogger(__name__).warning("Ray did not start in time (%s); trying once more", _first_line(error))
            time.sleep(RETRY_PAUSE_SECONDS)


def _start_timeout(error: BaseException) -> bool:
    """Whether ``ray.init`` failed because Ray's processes took too long to come up."""
    text = str(error).lower()
    return "timed out" in text or "timeout" in text or isinstance(error, TimeoutError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def concurrent_slots(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> int:
    """How many trials run at once on the connected cluster as it is now: ``max_concurrent`` when given, else how
    many trials' CPUs (and GPUs) it has (at least 1). ``Slots`` asks it again as a named cluster grows."""
    return slot_plan(cpus_per_trial, gpus_per_trial, max_concurrent)[0]


def queued_beyond(fits: int) -> int:
    """How many trials elastic slots keep pending beyond the ``fits`` that can train: a quarter of them, at least
    one (enough for an autoscaler to see demand; its own upscaling speed decides how fast it adds nodes)."""
    return max(1, fits // 4)


class Slots:
    """How many trials a search keeps going at once (``now``).

    **Fixed** (``elastic`` false) with ``--max-concurrent``, or on a private cluster: what
    ``concurrent_slots`` says when the search starts. Tune is given it as its cap, which also lets Tune keep one
    trial pending per slot, so that the first trials' actors start together.

    **Elastic** on a named cluster (``--address``, ``$RAY_ADDRESS``) without ``--max-concurrent``: what the
    cluster fits now, asked of Ray at most every ``every`` seconds, plus ``queued`` trials pending beyond it. Nodes
    that join mid-search get trials at once; nodes that leave are not waited for (their trials are retried
    elsewhere, ``--max-failures``); and the trials queued beyond what fits are pending placement groups, the
    resource demand Ray's autoscaler (KubeRay's, ``ray up``'s) scales the cluster up for (docs/cluster.md). The
    searcher holds new trials back beyond ``now`` (``search.searcher.StudySearcher``); Tune gets no cap."""

    def __init__(self, cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None,
                 address: str | None = None, every: float = 5.0) -> None:
        self.cpus, self.gpus, self.every = cpus_per_trial, gpus_per_trial, every
        self.elastic = max_concurrent is None and named_address(address) is not None
        self.fits = concurrent_slots(cpus_per_trial, gpus_per_trial, max_concurrent)
        self._asked = time.monotonic()

    @property
    def queued(self) -> int:
        """Trials kept pending beyond what fits (elastic only: ``queued_beyond``)."""
        return queued_beyond(self.fits) if self.elastic else 0

    def now(self) -> int:
        """Trials to keep going at once now (see the class doc)."""
        if self.elastic and time.monotonic() - self._asked >= self.every:
            self.fits = concurrent_slots(self.cpus, self.gpus, None)
            self._asked = time.monotonic()
        return self.fits + self.queued

    def running(self) -> int:
        """Trials that can train at once now: what fits, without the queued ones."""
        self.now()
        return self.fits


def slot_plan(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None,
              address: str | None = None) -> tuple[int, list[str]]:
    """``(slots, what a search says about them at its start)``: how the cluster's CPUs and GPUs divide into
    trial slots, whether they follow the cluster as it grows (``Slots``: on a named cluster ``address`` without
    ``max_concurrent``), a warning when the CPUs asked per trial leave GPU slots idle (a fractional-GPU search with as
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
    if not max_concurrent and named_address(address):
        lines.append(f"the slots follow the cluster: nodes that join get trials, and {queued_beyond(slots)} more "
                     f"trial(s) wait queued for Ray's autoscaler to see (--max-concurrent N fixes them)")
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
    import torch
    from alphatune.search.options import OptionError
    ray = sys.modules.get("ray")  # before start_ray Ray need not be imported: there is nothing to ask it yet
    started = ray is not None and ray.is_initialized()
    if not named_address(address):
        if not torch.cuda.is_available():
            raise OptionError(f"--gpus-per-trial {gpus_per_trial:g}: torch sees no CUDA GPU on this machine "
                              f"(torch {torch.__version__}); use 0 for CPU trials")
        if started and ray.cluster_resources().get("GPU", 0.0) <= 0:
            raise OptionError(f"--gpus-per-trial {gpus_per_trial:g}: this machine's Ray node has no GPU resource; "
                              f"start Ray with --num-gpus or use 0")
    elif started and ray.cluster_resources().get("GPU", 0.0) <= 0:
        logging.getLogger(__name__).warning("--gpus-per-trial %g: the cluster has no GPU now; trials wait until a "
                                            "GPU node joins", gpus_per_trial)
