"""A cluster that grows mid-search: with ``--address`` and no ``--max-concurrent`` the slots follow the cluster
(``search.cluster.Slots``), so a node that joins after the search began gets trials.

Slow (``pytest -m slow tests/test_elastic.py``): real Ray nodes started with ``ray start`` on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alphatune.search.ledger import read_ledger
from limits import HANG_SECONDS
from planted import TINY_SPACE
from servers import growing_cluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_a_node_that_joins_mid_search_gets_trials_without_max_concurrent(tmp_path) -> None:
    """One node of one CPU; once the first trial has ended a second node joins: later trials run on it, and the
    search says at its start that its slots follow the cluster."""
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    with growing_cluster() as cluster:
        env = {**cluster.env, "ALPHATUNE_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
        search = subprocess.Popen(
            [sys.executable, "-m", "alphatune", "search", "run", "--space", str(space), "--samples", "12",
             "--max-epochs", "4", "--grace-epochs", "4", "--confirm", "0", "--sampler", "random", "--seed", "3",
             "--address", cluster.address, "--storage-path", str(tmp_path / "runs"), "--name", "grows",
             "--progress-seconds", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        said = []
        deadline = time.monotonic() + HANG_SECONDS
        for line in search.stdout:
            said.append(line)
            if " trial " in line and (" finished " in line or " pruned " in line):
                break
            assert time.monotonic() < deadline, "".join(said[-30:])
        cluster.add_node()
        said += search.stdout.readlines()
        assert search.wait(timeout=HANG_SECONDS) == 0, "".join(said[-40:])
    text = "".join(said)
    assert "the slots follow the cluster: nodes that join get trials" in text, text[:3000]
    trials = read_ledger(tmp_path / "runs" / "grows" / "lstm")
    nodes = [{row.get("node_id") for row in trial.results} for trial in trials]
    assert len(trials) == 12 and all(len(node) == 1 for node in nodes)
    assert len(set().union(*nodes)) == 2, text[-4000:]  # the node that joined trained some of them
    assert os.path.isfile(tmp_path / "runs" / "grows" / "lstm" / "best.yaml")
