"""best_qlib.yaml's provider, schedule and metric, written from a run's records (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from alphatune import spaces
from conftest import tiny_membership, tiny_prices, write_qlib_dir
from alphatune.search.export import PROVIDER_PLACEHOLDER, write_exports
from alphatune.search.options import SearchOptions
from alphatune.search.results import TrialRecord
from alphatune.search.rundir import Manifest

SEGMENTS = {"train": ["2020-01-01", "2020-03-10"], "valid": ["2020-03-11", "2020-03-31"],
            "test": ["2020-04-01", "2020-04-21"]}


def manifest(model: str, source: str) -> Manifest:
    return Manifest(model=model, options=SearchOptions(models=[model], max_epochs=4, metric="valid_ic"),
                    space=spaces.load(model), data={"source": source, "market": "csi300", "benchmark": "SH000300",
                                                    "segments": SEGMENTS, "concepts": None, "path": None})


def record(model: str) -> TrialRecord:
    hyperparameters = {**spaces.load(model).default, "metric": "ic", "n_epochs": 4}
    return TrialRecord("abc", "finished", hyperparameters, epochs=4, best_epoch=3, best_valid_ic=0.05,
                       best_valid_loss=0.9, checkpoint=Path("/runs/abc/model.pt"), optuna_trial=2)


def test_a_qlib_directory_source_is_the_provider(tmp_path: Path) -> None:
    qlib_dir = write_qlib_dir(tmp_path / "qlib", tiny_prices(), tiny_membership())
    exported = write_exports(tmp_path, manifest("gru", str(qlib_dir)), record("gru"), {"finished": 1})
    document = yaml.safe_load(exported.qlib.read_text())
    assert document["qlib_init"]["provider_uri"] == str(qlib_dir) and not exported.notes
    best = yaml.safe_load(exported.best.read_text())
    assert best["validation"]["metric"] == "valid_ic" and best["validation"]["valid_ic"] == 0.05
    assert best["optuna_trial"] == 2 and "score" not in best["validation"]


def test_embedded_data_gets_a_placeholder_and_a_note(tmp_path: Path) -> None:
    exported = write_exports(tmp_path, manifest("hist", "embedded"), record("hist"), {"finished": 1})
    document = yaml.safe_load(exported.qlib.read_text())
    assert document["qlib_init"]["provider_uri"] == PROVIDER_PLACEHOLDER
    [note] = exported.notes
    assert "the embedded data, which Qlib cannot read" in note and note in exported.qlib.read_text()
    kwargs = document["task"]["model"]["kwargs"]
    assert kwargs["metric"] == "ic"  # Qlib's HIST accepts the IC only
    assert (kwargs["n_epochs"], kwargs["early_stop"]) == (4, 20)


def test_the_qlib_schedule_is_qlibs_published_one(tmp_path: Path) -> None:
    exported = write_exports(tmp_path, manifest("transformer", "embedded"), record("transformer"), {"finished": 1},
                             schedule="qlib")
    text = exported.qlib.read_text()
    kwargs = yaml.safe_load(text)["task"]["model"]["kwargs"]
    assert (kwargs["n_epochs"], kwargs["early_stop"], kwargs["metric"]) == (100, 5, "loss")
    assert "# schedule (qlib): n_epochs 100, early_stop 5: Qlib's published schedule (the search trained under at " \
           "most 4 epochs)." in text
