"""evaluation.evaluate on the embedded CSI300 data: scoring, bad best.yaml, and one tiny evaluation end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from alphatune import datasets
from alphatune.cli import main as alphatune_main
from alphatune.evaluation import evaluate
from alphatune.evaluation.best import Best
from limits import HANG_SECONDS

SEGMENTS = {"train": ["2018-12-01", "2018-12-31"], "valid": ["2019-01-01", "2019-01-31"],
            "test": ["2019-07-01", "2019-07-31"]}


def write_best(directory: Path, **changes: object) -> Path:
    best = {"model": "lstm",
            "hyperparameters": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0, "lr": 0.002, "batch_size": 800},
            "data": {"source": "embedded", "market": "csi300", "benchmark": "SH000300", "segments": SEGMENTS},
            "validation": {"metric": "valid_ic", "valid_ic": 0.01}, "trial_id": "test",
            "search": {"max_epochs": 1, "threads": 1}}
    best.update(changes)
    path = directory / "best.yaml"
    path.write_text(yaml.safe_dump(best))
    return path


@pytest.fixture(scope="module")
def small_dataset() -> datasets.PreparedDataset:
    return datasets.prepare(source=None, progress=False, **{name: tuple(span) for name, span in SEGMENTS.items()})


def test_perfect_foresight_has_ic_one_and_beats_the_benchmark(small_dataset: datasets.PreparedDataset) -> None:
    test = small_dataset.segment("test")
    label = np.nan_to_num(test.raw_labels.astype(np.float64), nan=0.0)
    signal, portfolio = evaluate.score(pd.Series(label, index=test.index()), small_dataset,
                                       evaluate.BacktestConfig())
    assert signal.summary["IC"] > 0.99 and signal.summary["Rank IC"] > 0.99
    assert portfolio.benchmark == "equal-weighted universe"  # the embedded data has no index
    assert len(portfolio.daily) == test.dates.size
    # Holding tomorrow's 50 best stocks each day beats the average stock by far, costs included.
    assert portfolio.risk["annualized_return"] > 1.0 and portfolio.risk["max_drawdown"] > -0.05


@pytest.mark.parametrize("changes, message", [
    ({"model": "mlp"}, "model: 'mlp' is not one of"),
    ({"hyperparameters": None}, "hyperparameters: expected a mapping"),
    ({"data": [1, 2]}, "data: expected a mapping"),
])
def test_bad_best_yaml_is_refused_naming_the_field(tmp_path: Path, changes: dict, message: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    path = write_best(tmp_path, **changes)
    assert alphatune_main(["evaluate", str(path)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and message in error


def test_unreadable_yaml_is_one_line_naming_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "best.yaml"
    path.write_text("model: lstm\nhyperparameters: {hidden_size: 8\ndata: {}\n")
    assert alphatune_main(["evaluate", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {path}:3: invalid YAML: "), error
    assert alphatune_main(["evaluate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read it (No such file or directory)" in capsys.readouterr().err


def best_of(**fields: object) -> Best:
    return Best.from_dict({"model": "lstm", "hyperparameters": {}, "data": {}, **fields})


def test_the_budget_is_the_searchs_unless_said_otherwise() -> None:
    best = best_of(search={"max_epochs": 6, "threads": 2})
    assert evaluate.epoch_budget(best, None) == (6, "at most 6 epochs, the search's budget (best.yaml "
                                                    "search.max_epochs; --epochs N or --epochs own to change it)")
    assert evaluate.epoch_budget(best, 3)[0] == 3 and evaluate.epoch_budget(best, "own")[0] is None
    with pytest.raises(evaluate.EvaluationError, match=r"^best\.yaml records no search budget \(search\.max_epochs: "
                                                       r"None\): a damaged file, or one no search wrote; give --epochs"):
        evaluate.epoch_budget(best_of(), None)  # never Qlib's 200 epochs without being asked
    assert evaluate.epoch_budget(best_of(), "own") == (None, "each config's own n_epochs (--epochs own)")
    assert evaluate.thread_count(best, None) == 2 and evaluate.thread_count(best, 1) == 1
    assert evaluate.thread_count(best_of(), None) == 1
    with pytest.raises(evaluate.EvaluationError, match="--epochs must be a positive number or 'own'"):
        evaluate.epoch_budget(best, 0)


def test_a_best_yaml_of_the_previous_version_still_loads(tmp_path: Path) -> None:
    """Before the data spec and the objective: ``data.path``, ``validation.score``, no ``search.threads``."""
    old = {"model": "gats", "hyperparameters": {"hidden_size": 64, "dropout": 0.7, "lr": 1e-4, "metric": "loss",
                                                "base_model": "LSTM", "batch_size": 800, "seed": 0},
           "data": {"source": "embedded", "market": "csi300", "benchmark": "SH000300", "concepts": None,
                    "segments": SEGMENTS, "path": str(tmp_path / "gone")},
           "validation": {"metric": "valid_ic", "score": -0.99, "valid_loss": 0.99, "valid_ic": 0.01, "best_epoch": 2},
           "trial_id": "abc", "search": {"samples": 8, "max_epochs": 6, "sampler": "tpe"}}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(old))
    best = Best.read(path)
    assert evaluate.full_config("gats", best.hyperparameters)["hidden_size"] == 64
    assert evaluate.epoch_budget(best, None)[0] == 6 and evaluate.thread_count(best, None) == 1
    assert best.validation.valid_ic == 0.01 and best.format == 2
    spec = best.data_spec
    assert spec.prepared == str(tmp_path / "gone") and spec.train == tuple(SEGMENTS["train"])


def test_evaluation_trains_with_the_searchs_speed_options_unless_told_otherwise() -> None:
    best = best_of(training={"device": "cuda", "amp": True, "graphs": False, "tf32": True})
    assert evaluate.speed_options(best, "cuda") == {"amp": True, "graphs": False, "tf32": True}
    assert evaluate.speed_options(best, "cuda", amp=False, graphs=True) == {"amp": False, "graphs": True, "tf32": True}
    assert evaluate.speed_options(best, "cpu") == {"amp": True, "graphs": False, "tf32": None}  # CUDA-only ones off
    assert evaluate.speed_options(best_of(), "cuda") == {"amp": False, "graphs": None, "tf32": None}  # trainer's own


def test_searched_config_equal_to_the_default_is_recognised() -> None:
    default = evaluate.default_hyperparameters("lstm")
    assert evaluate.full_config("lstm", {**default, "seed": 7}) == evaluate.full_config("lstm", {})
    assert evaluate.full_config("lstm", {"hidden_size": 8}) != evaluate.full_config("lstm", default)


def test_zero_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(evaluate.EvaluationError, match="--seeds must be at least 1"):
        evaluate.evaluate(write_best(tmp_path), seeds=0)


def test_evaluation_end_to_end_on_embedded_data(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                small_dataset: datasets.PreparedDataset) -> None:
    path = write_best(tmp_path)
    assert alphatune_main(["evaluate", str(path), "--seeds", "1"]) == 0  # best.yaml's search budget: 1 epoch
    printed = capsys.readouterr().out
    assert "Annualized Return" in printed and "searched" in printed and "default" in printed
    assert "training under at most 1 epochs, the search's budget" in printed
    assert "lstm searched seed 0 epoch 1: train loss" in printed and "lstm default seed 0 epoch 1:" in printed

    record = yaml.safe_load((tmp_path / "evaluation.yaml").read_text())
    assert record["model"] == "lstm" and record["benchmark"] == "equal-weighted universe"
    assert record["searched_is_default"] is False
    assert record["data"]["segments"]["test"] == SEGMENTS["test"]
    searched, default = record["configs"]["searched"], record["configs"]["default"]
    assert searched["hyperparameters"]["hidden_size"] == 8 and default["hyperparameters"]["hidden_size"] == 64
    for config in (searched, default):
        assert set(config["mean"]) == set(evaluate.METRICS)
        assert all(np.isfinite(value) for value in config["mean"].values())
        assert config["std"]["IC"] is None  # one seed: no spread
        assert [run["seed"] for run in config["runs"]] == [0] and config["runs"][0]["epochs"] == 1
        assert config["mean"]["IC"] == config["runs"][0]["IC"]
    for name in ("evaluation_returns.png", "evaluation_ic.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rolling_test_retrains_every_step_on_the_window_before_and_scores_the_test_period_end_to_end(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``evaluate --rolling 10``: the test month cut into Qlib's RollingGen windows, each config retrained on each
    window's data (its own train span, processors fitted there) and predicting its 10 test days; the predictions end
    to end are scored over the whole test period, per seed and as the seeds' ensemble."""
    from alphatune.datasets.periods import rolling
    path = write_best(tmp_path)
    assert alphatune_main(["evaluate", str(path), "--rolling", "10", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    record = yaml.safe_load((tmp_path / "evaluation_rolling.yaml").read_text())
    calendar = datasets.DataSpec().calendar()
    windows = rolling(calendar, *(tuple(SEGMENTS[name]) for name in ("train", "valid", "test")), 10)
    assert record["rolling"] == {"step": 10, "train": "expanding", "windows": [w.to_dict() for w in windows]}
    assert len(windows) == 3 and all(w.valid[1] < w.test[0] for w in windows)
    assert windows[0].test[0] == "2019-07-01" and windows[-1].test[1] == "2019-07-31"
    for label in ("searched", "default"):
        config = record["configs"][label]
        assert len(config["runs"]) == 2 and all(len(run["epochs"]) == 3 for run in config["runs"])
        assert set(config["ensemble"]) == set(evaluate.METRICS) and np.isfinite(config["ensemble"]["IC"])
        assert config["mean"]["IC"] == pytest.approx(np.mean([run["metrics"]["IC"] for run in config["runs"]]))
    assert "retrained every 10 trading days (3 windows)" in out and "searched (ensemble)" in out
    assert (tmp_path / "evaluation_rolling_returns.png").is_file() and (tmp_path / "evaluation_rolling_ic.png").is_file()


def test_a_rolling_test_that_cannot_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_best(tmp_path)
    assert alphatune_main(["evaluate", str(path), "--rolling", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --rolling must be a whole number of trading days ≥ 1; got 0"
    assert alphatune_main(["evaluate", str(path), "--rolling", "5", "--data", str(tmp_path)]) == 2
    assert "--rolling prepares each window from best.yaml's source" in capsys.readouterr().err


def test_a_damaged_best_yaml_is_one_line_before_torch_or_the_data_load(tmp_path: Path) -> None:
    """The issue's cases: best.yaml cut at 700 bytes (its search section gone) and cut mid-value (``lr: 0.``). Each
    is one line naming the file and what is wrong, exit 2, before torch (a cut file) or the data (a bad value)."""
    import subprocess
    import sys
    from alphatune.evaluation.best import Best
    written = Best.read(write_best(tmp_path)).to_dict()  # best.yaml as a search writes it, its keys in order
    whole = tmp_path / "best.yaml"
    whole.write_text(yaml.safe_dump(written, sort_keys=False))
    text = whole.read_text()
    cut = tmp_path / "cut" / "best.yaml"
    cut.parent.mkdir()
    cut.write_text(text[:text.index("search:")])  # everything from the search section on is gone
    bad = tmp_path / "bad" / "best.yaml"
    bad.parent.mkdir()
    bad.write_text(text.replace("lr: 0.002", "lr: 0."))
    assert "lr: 0." in bad.read_text() and Best.read(whole).search.max_epochs == 1
    cases = {cut: (f"error: {cut}: the file is cut short (it ends before search, training, format); write it "
                   f"again with `alphatune search export RUN_DIR`", False),
             bad: (f"error: {bad}: hyperparameters: lstm: lr=0.0 is out of range", True)}
    for path, (line, torch_loaded) in cases.items():
        script = ("import json, sys\nfrom alphatune.cli import main\n"
                  f"code = main(['evaluate', {str(path)!r}])\n"
                  "print(json.dumps([code, 'torch' in sys.modules, 'alphatune.datasets.build' in sys.modules]))\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_SECONDS)
        code, torch_in, data_in = __import__("json").loads(done.stdout.strip().splitlines()[-1])
        [error] = done.stderr.strip().splitlines()
        assert code == 2 and error.startswith(line) and not data_in and torch_in is torch_loaded, (error, done.stdout)
