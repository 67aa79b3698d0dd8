"""The pretrained LSTM/GRU base of GATs/HIST/IGMTF searches: trained once in the driver, loaded by every trial
that fits it, recorded in best.yaml and best_qlib.yaml, refused in one line when the given file is bad.

One real search (Ray Tune, two GATs trials of one epoch on a tiny planted dataset); the rest runs without Ray.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
import yaml

from alphatune import datasets
from alphatune import models
from alphatune import spaces
from planted import planted_dataset
from alphatune.search import cluster, driver
from alphatune.cli import main as alphatune_main
from alphatune.evaluation.best import Best
from alphatune.evaluation.evaluate import base_start
from alphatune.search.options import SearchOptions
from alphatune.models.bases import Base, base_shape, choose
from alphatune.search.pretrained import base_kinds, read_bases
from alphatune.search.ledger import read_ledger
from alphatune.search.results import read_trials
from alphatune.search.rundir import read_manifest
from limits import HANG_SECONDS

# lr 1e-7 keeps one epoch from moving the weights visibly: a trial's checkpoint still shows where it started.
GATS_SPACE = """\
model: gats
params:
  lr: {type: categorical, choices: [1.0e-7, 2.0e-7]}
fixed: {num_layers: 2, hidden_size: 64, base_model: LSTM, early_stop: 5, seed: 1}
default: {lr: 1.0e-7}
"""


def search_main(argv: list[str]) -> int:
    """``alphatune search ARGV`` in this process."""
    return alphatune_main(["search", *argv])


@pytest.fixture(scope="module")
def gats_run(tmp_path_factory) -> tuple[Path, str]:
    """A GATs search with ``--pretrained pretrain`` (the default) on a planted dataset; its run dir and output."""
    root = tmp_path_factory.mktemp("pretrained")
    data = root / "data"
    datasets.save(planted_dataset(n_days=40, n_stocks=20, seed=3), data)
    space = root / "gats.yaml"
    space.write_text(GATS_SPACE)
    options = SearchOptions(models=["gats"], space_files={"gats": str(space)}, data=str(data), samples=2, confirm=0,
                            max_epochs=1, grace_epochs=1, sampler="random", seed=2, max_concurrent=1,
                            storage_path=str(root / "runs"), name="base", progress_seconds=60.0)
    log = root / "log.txt"
    cluster.start_ray(num_cpus=2)
    try:
        with log.open("w") as stream:
            [run_dir] = map(Path, driver.run(options, stream))
    finally:
        ray.shutdown()
    return run_dir, log.read_text()


def test_a_gats_search_pretrains_one_lstm_base_and_every_trial_starts_from_it(gats_run) -> None:
    run_dir, output = gats_run
    assert (run_dir / "base_lstm.pt").is_file() and (run_dir / "base_lstm.pkl").is_file()
    assert not (run_dir / "base_gru.pt").exists()
    assert "pretraining the LSTM base (hidden_size 64, num_layers 2, registry defaults) for at most 1 epochs" in output
    assert "LSTM base: 1 epochs, best epoch 1: valid loss" in output
    [base] = read_bases(run_dir).values()
    assert (base.kind, base.hidden_size, base.num_layers, base.d_feat) == ("LSTM", 64, 2, 6)

    base_state = models.read_state_dict(run_dir / "base_lstm.pt")
    records = read_trials(run_dir, read_manifest(run_dir))
    assert len(records) == 2
    for record in records:
        assert record.pretrained == str(run_dir / "base_lstm.pt")
        _, _, net = models.load_checkpoint(record.checkpoint)  # the weights after the trial's only epoch
        trial_state = net.state_dict()
        for key in [key for key in base_state if key.startswith("rnn.")]:
            torch.testing.assert_close(trial_state[key], base_state[key], atol=1e-4, rtol=0)

    # Qlib's plain state_dict: exactly LSTMModel(6, 64, 2)'s names and shapes, equal to our checkpoint's tensors.
    plain = torch.load(run_dir / "base_lstm.pkl", weights_only=True)
    qlib_shaped = models.build("lstm", d_feat=6, hidden_size=64, num_layers=2)
    qlib_shaped.load_state_dict(plain, strict=True)
    for key, value in plain.items():
        assert torch.equal(value, base_state[key])


def test_best_yaml_records_the_base_and_best_qlib_yaml_loads_it_as_model_path(gats_run) -> None:
    run_dir, _ = gats_run
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["pretrained"] == str(run_dir / "base_lstm.pt")
    assert best["bases"]["LSTM"]["qlib_path"] == str(run_dir / "base_lstm.pkl")
    qlib = yaml.safe_load((run_dir / "best_qlib.yaml").read_text())
    kwargs = qlib["task"]["model"]["kwargs"]
    assert kwargs["model_path"] == str(run_dir / "base_lstm.pkl")
    assert kwargs["base_model"] == "LSTM"

    # evaluate starts the searched and Qlib's default config (both LSTM 64x2) from the same base.
    record = Best.read(run_dir / "best.yaml")
    for hyperparameters in (best["hyperparameters"], spaces.load("gats").default):
        options: dict = {}
        assert base_start("gats", hyperparameters, record, run_dir / "best.yaml", options) == str(run_dir / "base_lstm.pt")
        assert options == {"pretrained": str(run_dir / "base_lstm.pt")}
    options = {"pretrained": "none"}
    assert base_start("gats", best["hyperparameters"], record, run_dir / "best.yaml", options) == "none"
    assert options == {}


def test_a_trial_whose_size_differs_from_the_base_starts_from_random_weights_with_a_note() -> None:
    bases = {"LSTM": Base("LSTM", 6, 64, 2, "/runs/base_lstm.pt", "/runs/base_lstm.pkl")}
    gats = models.get_spec("gats").hyperparameters().to_dict()
    assert choose(bases, gats) == ("/runs/base_lstm.pt", "/runs/base_lstm.pt")
    assert choose(bases, {**gats, "hidden_size": 32}) == (None, "none (shape mismatch: hidden_size 32 vs base 64)")
    assert choose(bases, {**gats, "num_layers": 1}) == (None, "none (shape mismatch: num_layers 1 vs base 2)")
    assert choose(bases, {**gats, "base_model": "GRU"}) == (None, "none (no GRU base; the base is LSTM)")
    assert choose({}, gats) == (None, "none")


def test_each_base_kind_a_space_can_ask_for_is_trained() -> None:
    assert base_kinds(spaces.load("gats")) == ["LSTM", "GRU"]  # base_model searched over both
    fixed = spaces.loads(GATS_SPACE)
    assert base_kinds(fixed) == ["LSTM"]
    assert base_kinds(spaces.load("lstm")) == []


def test_a_gru_base_is_told_from_an_lstm_by_its_gate_rows() -> None:
    gru = models.build("gru", d_feat=6, hidden_size=16, num_layers=3).state_dict()
    assert base_shape(gru, "gru.pkl") == ("GRU", 6, 16, 3)
    with pytest.raises(ValueError, match=r"^tcn\.pkl: not an LSTM/GRU base"):
        base_shape(models.build("tcn").state_dict(), "tcn.pkl")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.pkl", "--pretrained: {path} does not exist"),
    (lambda tmp: _write(tmp / "notes.txt", b"not torch"), "--pretrained: {path}: not a torch state_dict"),
    (lambda tmp: _save(tmp / "tcn.pkl", models.build("tcn").state_dict()),
     "--pretrained: {path}: not an LSTM/GRU base"),
])
def test_a_bad_base_file_is_refused_in_one_line_before_anything_starts(make, message, tmp_path, capsys,
                                                                       monkeypatch) -> None:
    path = make(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    assert search_main(["run", "--model", "gats", "--pretrained", str(path), "--name", "x"]) == 2
    stderr = capsys.readouterr().err
    assert message.format(path=path) in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert set(tmp_path.iterdir()) == before, "something was created before the refusal"


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _save(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_a_retried_trial_keeps_its_restored_weights_and_does_not_reload_the_base(tmp_path) -> None:
    """The base file turns to NaN between the first checkpoint and the worker's death: a retry that loaded the
    base again would report NaN and fail; one that keeps its restored weights finishes."""
    data = tmp_path / "data"
    datasets.save(planted_dataset(n_days=220, n_stocks=120, seed=4), data)
    space = tmp_path / "gats.yaml"
    space.write_text(GATS_SPACE.replace("choices: [1.0e-7, 2.0e-7]", "choices: [1.0e-3]").replace("1.0e-7}", "1.0e-3}"))
    base_file = _save(tmp_path / "base.pkl", models.build("lstm").state_dict())
    options = SearchOptions(models=["gats"], space_files={"gats": str(space)}, data=str(data), samples=1, confirm=0,
                            max_epochs=4, grace_epochs=4, max_failures=2, sampler="random", seed=5,
                            storage_path=str(tmp_path / "runs"), name="retry", progress_seconds=60.0,
                            pretrained=str(base_file))
    run_dir = options.run_dir("gats").local
    killed: list[int] = []
    poisoned: list[Path] = []

    def poison_base_then_kill_worker() -> None:
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            trials = read_ledger(run_dir) or []
            if trials and list((run_dir / "trials").glob("*/state.pt")):
                rows = trials[0].results
                if rows:  # the given file and the run's copy of it, which the trials read
                    for base in (base_file, *run_dir.glob("base_*.pt")):
                        _save(base, {key: torch.full_like(value, math.nan)
                                     for key, value in models.read_state_dict(base).items()})
                        poisoned.append(base)
                    os.kill(rows[0]["pid"], signal.SIGKILL)
                    killed.append(rows[0]["pid"])
                    return
            time.sleep(0.2)

    cluster.start_ray(num_cpus=2)
    try:
        killer = threading.Thread(target=poison_base_then_kill_worker)
        killer.start()
        driver.run(options)
        killer.join()
    finally:
        ray.shutdown()
    assert killed, "the worker was never killed"
    [record] = read_trials(run_dir, read_manifest(run_dir))
    assert record.outcome == "finished" and record.epochs == 4
    assert record.pretrained in map(str, poisoned)  # the trial's base was poisoned before the retry
    assert math.isfinite(record.best_valid_ic)


def test_the_summary_table_says_where_each_trial_started() -> None:
    from alphatune.search.results import TrialRecord, summary_table
    common = dict(outcome="finished", hyperparameters={"hidden_size": 64}, epochs=1, best_epoch=1,
                  best_valid_ic=0.1, best_valid_loss=1.0, checkpoint=None)
    table = summary_table([TrialRecord("a", **common, pretrained="/runs/base_lstm.pt"),
                           TrialRecord("b", **{**common, "best_valid_ic": 0.0},
                                       pretrained="none (shape mismatch: hidden_size 8 vs base 64)")],
                          ["hidden_size"], "valid_ic")
    header, _, first, second = table.splitlines()
    assert header.split()[-1] == "start"
    assert first.split()[0] == "a" and first.rstrip().endswith("base")
    assert second.split()[0] == "b" and second.rstrip().endswith("none (shape mismatch: hidden_size 8 vs base 64)")
    assert "start" not in summary_table([TrialRecord("c", **common)], ["hidden_size"], "valid_ic")
