"""Every registered model trains under the shared trainer: on real data, on a planted signal, reproducibly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from alphatune import datasets
from alphatune import models
from alphatune.models.metrics import mean_daily_ic
from planted import first_days, keep_rows, planted_dataset

SMALL = {"lstm": {"hidden_size": 16}, "gru": {"hidden_size": 16}, "transformer": {"d_model": 16, "num_layers": 1},
         "localformer": {"d_model": 16, "num_layers": 1}, "tcn": {"n_chans": 16}, "gats": {"hidden_size": 16, "dropout": 0.0},
         "hist": {"hidden_size": 16}, "igmtf": {"hidden_size": 16}}
NAMES = list(models.REGISTRY)


def small(name: str, **extra) -> dict:
    """Small network (the transformers keep Qlib's 2048-wide feed-forward, so one layer), a learning rate that
    moves in a few epochs, batches small enough for several steps."""
    return {**SMALL[name], "lr": 3e-3, "batch_size": 64, "seed": 0, **extra}


def test_every_registered_model_is_covered():
    assert set(SMALL) == set(models.REGISTRY)



@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded CSI300 data, cut to its first 4 train days and 1 day of the other segments."""
    ds = datasets.prepare(cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return first_days(ds, {"train": 4, "valid": 1, "test": 1})


@pytest.fixture(scope="module")
def planted():
    return planted_dataset(40, 25, seed=3)


def train_mse(trainer: models.Trainer, ds) -> float:
    pred = trainer.predict(ds, "train").to_numpy()
    return float(np.mean((pred - ds.segment("train").labels) ** 2))


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_training_loss_on_embedded_data(embedded, name):
    """The training set's loss, scored after each epoch, falls below the untrained network's (the weights kept at
    the end are the best validation epoch's, which need not be the best on the training set)."""
    net, config = models.from_hyperparameters(name, small(name, n_epochs=3, batch_size=256, early_stop=3))
    trainer = models.Trainer(net, config)
    before = train_mse(trainer, embedded)
    after_each_epoch = []
    result = trainer.fit(embedded, callback=lambda _, trainer: after_each_epoch.append(train_mse(trainer, embedded)))
    assert len(result.history) == 3
    assert min(after_each_epoch) < before


@pytest.mark.parametrize("name", NAMES)
def test_planted_signal_gives_a_clearly_positive_test_ic(planted, name):
    trainer, _ = models.fit(name, planted, small(name, n_epochs=3, metric="ic"))
    pred = trainer.predict(planted, "test")
    test = planted.segment("test")
    ic = mean_daily_ic(torch.tensor(pred.to_numpy()), torch.tensor(test.raw_labels), torch.tensor(test.day_offsets))
    assert ic > 0.1


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_predictions(planted, name):
    first, _ = models.fit(name, planted, small(name, n_epochs=1, dropout=0.1))
    second, _ = models.fit(name, planted, small(name, n_epochs=1, dropout=0.1))
    pd.testing.assert_series_equal(first.predict(planted, "test"), second.predict(planted, "test"))


@pytest.mark.parametrize("name", NAMES)
def test_nan_labels_are_ignored(planted, name):
    """Training with NaN labels is training without those rows: same losses, same predictions."""
    rng = np.random.default_rng(0)
    holes = {seg: rng.random(len(planted.segment(seg))) < 0.1 for seg in ("train", "valid")}
    with_nan = keep_rows(planted, {})
    for seg, hole in holes.items():
        arrays = with_nan.segment(seg)
        labels = arrays.labels.copy()
        labels[hole] = np.nan
        with_nan.arrays[seg] = type(arrays)(**{**arrays.__dict__, "labels": labels})
    without = keep_rows(planted, {seg: ~hole for seg, hole in holes.items()})
    trainer_nan, result_nan = models.fit(name, with_nan, small(name, n_epochs=1))
    trainer_without, result_without = models.fit(name, without, small(name, n_epochs=1))
    got, expected = result_nan.history[0], result_without.history[0]
    assert np.isfinite(got.train_loss) and np.isfinite(got.valid_loss)
    assert (got.train_loss, got.valid_loss, got.valid_ic) == pytest.approx(
        (expected.train_loss, expected.valid_loss, expected.valid_ic), rel=1e-6)
    pd.testing.assert_series_equal(trainer_nan.predict(with_nan, "test"), trainer_without.predict(without, "test"))


@pytest.mark.parametrize("name", NAMES)
def test_single_stock_days_work(name):
    lonely = planted_dataset(30, 12, seed=4, lone_days=2)
    trainer, result = models.fit(name, lonely, small(name, n_epochs=1))
    pred = trainer.predict(lonely, "test")
    assert len(pred) == len(lonely.segment("test")) and np.isfinite(pred.to_numpy()).all()
    assert np.isfinite(result.history[0].valid_loss)


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_registry_flags_match_the_networks(name: str) -> None:
    spec = models.REGISTRY[name]
    network = spec.network_class()
    assert spec.uses_concepts == ("attach" in vars(network))  # the day model that asks the dataset for more
    assert (spec.batch_mode == "day") == issubclass(network, models.DayModel)
