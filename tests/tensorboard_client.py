"""Read a logdir's HParams table the way a user sees it: through a real TensorBoard server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-Requested-With": "XMLHttpRequest"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def hparams_table(logdir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """``(sessions, columns)`` of the HParams table TensorBoard serves for ``logdir``: session name (the run's path
    under ``logdir``) → ``{"hparams": {...}, "metrics": {tag: last value}}``, and the table's columns: ``hparams``
    and ``metrics`` in the order served, ``ticked`` (the hyperparameters the dashboard shows without the user
    ticking them) and ``metric_names`` (tag → the name the dashboard shows)."""
    from tensorboard import program
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
                          "--load_fast", "false", "--reload_interval", "0"])
    server = board._make_server()  # what TensorBoard.launch() serves, kept so that it can be shut down
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = server.get_url()
        experiment = _post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
        groups = _post(url, "/data/plugin/hparams/session_groups",
                       {"experimentName": "", "allowedStatuses": STATUSES, "colParams": [], "startIndex": 0,
                        "sliceSize": 10_000})
    finally:
        server.shutdown()
    sessions = {group["name"]: {"hparams": group["hparams"],
                                "metrics": {value["name"]["tag"]: value["value"] for value in group["metricValues"]}}
                for group in groups["sessionGroups"]}
    hparams = experiment.get("hparamInfos", [])
    metrics = experiment.get("metricInfos", [])
    # The dashboard orders the columns it is served with those that differ first (a stable sort) and ticks the
    # first five hyperparameters and the first five metrics (tf-hparams-query-pane).
    ticked = sorted(hparams, key=lambda info: not info.get("differs", False))[:5]
    columns = {"hparams": [info["name"] for info in hparams],
               "metrics": [info["name"]["tag"] for info in metrics],
               "ticked": [info["name"] for info in ticked],
               "metric_names": {info["name"]["tag"]: info.get("displayName", "") for info in metrics}}
    return sessions, columns
