"""Every node that can run trials must see the run directory: checked before the first trial.

On a Ray cluster, trials write their state and best model into the run directory from whichever node runs them,
and the driver reads them back. A node that cannot see it (a forgotten NFS mount, a different mount namespace, no
credentials for the bucket) would train trials whose results the driver never sees. ``check_nodes`` runs a task
pinned to each alive node with CPUs: it writes a probe file into the search directory and reads the one the
driver wrote. A node that cannot is one line naming its address and the path, and the search does not start. A
node that joins later is caught by the trial itself (``search.trial.check_visible``), which fails in one line.

A private local Ray (no ``--address``) is this machine only and needs no check.
"""

from __future__ import annotations

import uuid

from alphatune.search.cluster import named_address
from alphatune.search.rundir import RunDirError
from alphatune.storage import Location

PROBES = ".nodes"
PROBE_SECONDS = 120.0


def _probe(where: str, token: str, node_id: str) -> dict[str, object]:
    """On one node: read the driver's probe, write this node's; what it saw."""
    location = Location.of(where) / PROBES
    seen = None
    try:
        seen = (location / f"driver-{token}").read_text()
        (location / f"node-{token}-{node_id}").write_text(token)
        error = None
    except Exception as exc:  # any way of not seeing it: missing file, no credentials, read-only, ...
        error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return {"seen": seen == token, "error": error}


def check_nodes(where: Location, address: str | None = None) -> None:
    """``RunDirError`` naming the first node (address and id) that cannot write and read ``where`` as the driver
    does; nothing for a private local Ray."""
    if not named_address(address):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0]
    addresses = {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in nodes}
    token = uuid.uuid4().hex
    probes = Location.of(where) / PROBES
    (probes / f"driver-{token}").write_text(token)
    remote = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        pending = {node["NodeID"]: remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote(str(where), token, node["NodeID"]) for node in nodes}
        for node_id, reference in pending.items():
            seen = ray.get(reference, timeout=PROBE_SECONDS)
            written = (probes / f"node-{token}-{node_id}").is_file()
            if not (seen["seen"] and written):
                why = seen["error"] or ("the driver cannot see what the node wrote there" if not written else
                                        "the node reads something else there")
                raise RunDirError(f"node {addresses[node_id]} (id {node_id[:12]}) cannot see the run directory {where}: "
                                  f"{why}; give --storage-path storage every node reaches (a shared mount, or "
                                  f"s3://...)")
    finally:
        for name in [f"driver-{token}", *(f"node-{token}-{node['NodeID']}" for node in nodes)]:
            try:
                (probes / name).delete()
            except OSError:
                pass
