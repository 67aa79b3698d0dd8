"""The shared trainer's contract: metrics, batching, early stopping, callback, NaN scores, checkpoints."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from alphatune import models
from alphatune.models.metrics import daily_ic, daily_mse, masked_mse, mean_daily_ic
from alphatune.models.precision import amp_unavailable
from planted import keep_rows, planted_dataset

TINY = {"hidden_size": 8, "lr": 3e-3, "batch_size": 64, "seed": 0}



@pytest.fixture(scope="module")
def planted():
    return planted_dataset(60, 30, seed=1)


def _flip_valid(ds):
    """The planted dataset with its validation labels negated: training makes validation worse."""
    valid = ds.segment("valid")
    flipped = type(valid)(**{**valid.__dict__, "labels": -valid.labels})
    return type(ds)(**{**ds.__dict__, "arrays": {**ds.arrays, "valid": flipped}})


# ------------------------------------------------------------------ metrics

def test_daily_ic_matches_pandas_per_day_correlation():
    rng = np.random.default_rng(0)
    offsets = np.array([0, 5, 6, 14, 20])
    pred, label = rng.standard_normal(20), rng.standard_normal(20)
    label[9] = np.nan
    pred[14:20] = 1.0  # constant prediction on the last day: undefined
    days = np.repeat(np.arange(4), np.diff(offsets))
    frame = pd.DataFrame({"day": days, "pred": pred, "label": label})
    expected = frame.groupby("day").apply(lambda g: g["pred"].corr(g["label"]), include_groups=False).to_numpy()
    got = daily_ic(torch.tensor(pred, dtype=torch.float32), torch.tensor(label, dtype=torch.float32),
                   torch.tensor(offsets)).numpy()
    assert np.isnan(got[1]) and np.isnan(got[3])  # one row; constant prediction
    np.testing.assert_allclose(got[[0, 2]], expected[[0, 2]], rtol=1e-5)
    assert mean_daily_ic(torch.tensor(pred, dtype=torch.float32), torch.tensor(label, dtype=torch.float32),
                         torch.tensor(offsets)) == pytest.approx(np.mean(expected[[0, 2]]), rel=1e-5)


def test_mean_daily_ic_is_nan_when_no_day_is_defined():
    ones = torch.ones(6)
    assert math.isnan(mean_daily_ic(ones, torch.arange(6.0), torch.tensor([0, 3, 6])))


def test_masked_mse_ignores_nan_labels_and_daily_mse_per_day():
    pred = torch.tensor([1.0, 2.0, 3.0, 5.0])
    label = torch.tensor([0.0, float("nan"), 1.0, 5.0])
    assert masked_mse(pred, label).item() == pytest.approx((1 + 4 + 0) / 3)
    assert masked_mse(pred, torch.full((4,), float("nan"))).item() == 0.0
    np.testing.assert_allclose(daily_mse(pred, label, torch.tensor([0, 2, 4])).numpy(), [1.0, 2.0])


# ------------------------------------------------------------------ scores, batching

def test_rows_validation_loss_drops_the_last_partial_batch_as_qlib(planted):
    trainer, result = models.fit("lstm", planted, {**TINY, "n_epochs": 1, "batch_size": 100})
    valid = planted.segment("valid")
    pred = trainer.predict(planted, "valid").to_numpy()
    full = len(valid) // 100 * 100
    expected = np.mean(((pred[:full] - valid.labels[:full]) ** 2).reshape(-1, 100).mean(axis=1))
    assert len(valid) % 100  # there is a remainder to drop
    assert result.history[0].valid_loss == pytest.approx(expected, rel=1e-5)
    assert result.history[0].score == pytest.approx(-expected, rel=1e-5)


def test_day_mode_scores_are_daily_means_and_eval_train_fills_train_score(planted):
    trainer, result = models.fit("gats", planted, {**TINY, "n_epochs": 1, "metric": "ic"}, eval_train=True)
    valid = planted.segment("valid")
    pred = torch.tensor(trainer.predict(planted, "valid").to_numpy())
    offsets = torch.tensor(valid.day_offsets)
    metrics = result.history[0]
    assert metrics.valid_loss == pytest.approx(daily_mse(pred, torch.tensor(valid.labels), offsets).mean().item(),
                                               rel=1e-5)
    assert metrics.valid_ic == pytest.approx(mean_daily_ic(pred, torch.tensor(valid.labels), offsets), rel=1e-5)
    assert metrics.score == metrics.valid_ic
    assert metrics.train_score is not None and math.isfinite(metrics.train_score)


def test_read_only_arrays_are_used_without_copy_or_warning(planted):
    for seg in planted.arrays.values():
        for array in (seg.features, seg.labels, seg.day_offsets, seg.instrument_index):
            array.setflags(write=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trainer, _ = models.fit("lstm", planted, {**TINY, "n_epochs": 1})
            trainer.predict(planted, "test")
    finally:
        for seg in planted.arrays.values():
            for array in (seg.features, seg.labels, seg.day_offsets, seg.instrument_index):
                array.setflags(write=True)


@pytest.mark.parametrize("name", ["lstm", "gats", "hist", "igmtf"])
def test_predictions_do_not_depend_on_the_evaluation_batch(planted, name):
    """Small evaluation batches (several days per call, or less than a day: one day per call) give what one
    call over the whole segment gives."""
    trainer, _ = models.fit(name, planted, {**TINY, "n_epochs": 1})
    expected = trainer.predict(planted, "test")
    for rows in (7, 60):
        trainer.config.eval_batch_size = rows
        again = models.Trainer(trainer.net, trainer.config)
        pd.testing.assert_series_equal(again.predict(planted, "test"), expected, rtol=1e-5, atol=1e-6)


def test_compile_is_ignored_on_cpu(planted):
    plain, _ = models.fit("gats", planted, {**TINY, "n_epochs": 1})
    asked, _ = models.fit("gats", planted, {**TINY, "n_epochs": 1}, compile=True)
    pd.testing.assert_series_equal(asked.predict(planted, "test"), plain.predict(planted, "test"))


@pytest.mark.parametrize("name", ["lstm", "hist"])
def test_amp_on_cpu_trains_in_bf16_where_the_cpu_has_it(planted, name):
    plain, _ = models.fit(name, planted, {**TINY, "n_epochs": 2})
    mixed, _ = models.fit(name, planted, {**TINY, "n_epochs": 2}, amp=True)
    expected, got = plain.predict(planted, "test").to_numpy(), mixed.predict(planted, "test").to_numpy()
    if amp_unavailable("cpu") is None:
        assert mixed.precision.dtype == "bfloat16"
        assert np.isfinite(got).all() and not np.array_equal(got, expected)
        assert np.corrcoef(got, expected)[0, 1] > 0.95  # same training, bf16 rounding
    else:  # float32 without bf16 kernels (the AVX2 case is tested on every CPU in test_amp.py)
        assert mixed.precision.dtype == "float32"
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------ early stopping and the callback

def test_early_stopping_restores_the_best_epoch(planted):
    worsening = _flip_valid(planted)
    states = []

    def keep_state(metrics, trainer):
        states.append({key: value.clone() for key, value in trainer.net.state_dict().items()})

    trainer, result = models.fit("lstm", worsening, {**TINY, "n_epochs": 8, "early_stop": 3}, callback=keep_state)
    scores = [m.score for m in result.history]
    assert result.stopped_by == "early_stop"
    assert result.best_epoch == int(np.argmax(scores)) + 1 < len(result.history)
    assert len(result.history) == result.best_epoch + 3
    assert result.best_score == max(scores)
    for key, value in trainer.net.state_dict().items():
        torch.testing.assert_close(value, states[result.best_epoch - 1][key], rtol=0, atol=0)
    assert not torch.equal(states[-1]["fc_out.weight"], trainer.net.state_dict()["fc_out.weight"])


def test_callback_stops_training_and_sees_each_epoch(planted):
    seen = []

    def stop_at_two(metrics, trainer):
        seen.append((metrics.epoch, metrics.best_epoch, trainer is not None))
        return metrics.epoch == 2

    _, result = models.fit("lstm", planted, {**TINY, "n_epochs": 5}, callback=stop_at_two)
    assert result.stopped_by == "callback"
    assert [epoch for epoch, _, _ in seen] == [1, 2] and len(result.history) == 2
    assert all(m.seconds > 0 for m in result.history)


def test_n_epochs_ends_training(planted):
    _, result = models.fit("lstm", planted, {**TINY, "n_epochs": 2, "early_stop": 5})
    assert result.stopped_by == "n_epochs" and len(result.history) == 2


def test_nan_validation_score_does_not_crash(planted):
    broken = keep_rows(planted, {})
    valid = broken.segment("valid")
    features = valid.features.copy()
    features[3, 100] = np.nan  # one NaN input → NaN predictions → NaN validation loss (Qlib #1794 crashes)
    broken.arrays["valid"] = type(valid)(**{**valid.__dict__, "features": features})
    reported = []
    trainer, result = models.fit("lstm", broken, {**TINY, "n_epochs": 5, "early_stop": 2},
                                 callback=lambda metrics, _: reported.append(metrics.score))
    assert len(reported) == 2 and all(math.isnan(score) for score in reported)
    assert result.stopped_by == "early_stop" and result.best_epoch == 0 and math.isnan(result.best_score)
    assert np.isfinite(trainer.predict(broken, "test").to_numpy()).all()


def test_cross_sectional_model_refuses_rows_batches():
    net, cfg = models.from_hyperparameters("gats", {"hidden_size": 8})
    cfg.batch_mode = "rows"
    with pytest.raises(ValueError, match="batch_mode='day'"):
        models.Trainer(net, cfg)


def test_hist_without_concepts_is_refused(planted):
    no_concepts = type(planted)(**{**planted.__dict__, "concepts": None})
    with pytest.raises(ValueError, match="concept matrix"):
        models.fit("hist", no_concepts, {**TINY, "n_epochs": 1})


# ------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("name", ["lstm", "hist", "igmtf"])
def test_checkpoint_saved_and_loaded_predicts_the_same(planted, tmp_path, name):
    trainer, _ = models.fit(name, planted, {**TINY, "n_epochs": 1})
    trainer.save(tmp_path / "model.pt")
    loaded_name, hyperparameters, net = models.load_checkpoint(tmp_path / "model.pt")
    assert loaded_name == name and hyperparameters["hidden_size"] == 8 and hyperparameters["seed"] == 0
    _, config = models.from_hyperparameters(name, hyperparameters)
    again = models.Trainer(net, config)
    pd.testing.assert_series_equal(again.predict(planted, "test"), trainer.predict(planted, "test"))


def test_trainer_without_hyperparameters_saves_what_the_network_tells(planted, tmp_path):
    net, config = models.from_hyperparameters("gats", {"hidden_size": 8, "n_epochs": 1})
    models.Trainer(net, config).save(tmp_path / "gats.pt")
    name, hyperparameters, _ = models.load_checkpoint(tmp_path / "gats.pt")
    assert name == "gats" and hyperparameters["hidden_size"] == 8 and hyperparameters["n_epochs"] == 1
    row_net, row_config = models.from_hyperparameters("lstm", {"hidden_size": 8, "lr": 0.01})
    models.Trainer(row_net, row_config).save(tmp_path / "lstm.pt")
    assert models.load_checkpoint(tmp_path / "lstm.pt")[1]["lr"] == 0.01
    del row_net.hidden_size  # a network that does not tell its size cannot be saved without hyperparameters
    with pytest.raises(ValueError, match="hidden_size"):
        models.Trainer(row_net, row_config).save(tmp_path / "lstm.pt")


def test_load_checkpoint_refuses_a_bare_state_dict(tmp_path):
    torch.save(models.build("lstm", hidden_size=8).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not a checkpoint of ours"):
        models.load_checkpoint(tmp_path / "bare.pt")


# ------------------------------------------------------------------ resuming from a training state

@pytest.mark.parametrize("name", ["lstm", "gats", "igmtf"])
def test_a_fit_resumed_from_its_training_state_continues_exactly(planted, tmp_path, name):
    """Stopped after epoch 2 and resumed from the state saved then, a fit gives the uninterrupted fit's epochs,
    best epoch and weights bit for bit (dropout on, so the random state matters too)."""
    hp = {**TINY, "n_epochs": 5, "early_stop": 5, "dropout": 0.3, "num_layers": 2, "metric": "ic"}
    _, straight = models.fit(name, planted, hp)

    def stop_after_two(metrics, trainer):
        if metrics.epoch == 2:
            torch.save(trainer.training_state(), tmp_path / "state.pt")
            return True

    models.fit(name, planted, hp, callback=stop_after_two)
    state = models.read_training_state(tmp_path / "state.pt")
    net, config = models.from_hyperparameters(name, hp)
    resumed_trainer = models.Trainer(net, config)
    resumed = resumed_trainer.fit(planted, resume=state)
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4, 5]
    for a, b in zip(straight.history, resumed.history):
        assert (a.train_loss, a.valid_loss, a.valid_ic, a.best_epoch) == (b.train_loss, b.valid_loss, b.valid_ic,
                                                                           b.best_epoch)
    assert resumed.best_epoch == straight.best_epoch


def test_a_training_state_is_a_snapshot_that_training_on_does_not_change(planted, tmp_path):
    """A trial writes its state on a thread while the next epoch trains: the state taken after epoch 2, kept while
    the fit goes on to epoch 5 and saved only then, still resumes exactly (the optimizer's moments are updated
    in place by training: a state holding them by reference would have moved on)."""
    hp = {**TINY, "n_epochs": 5, "early_stop": 5, "dropout": 0.3, "num_layers": 2, "metric": "ic"}
    kept = {}

    def keep_epoch_two(metrics, trainer):
        if metrics.epoch == 2:
            kept["state"] = trainer.training_state()

    _, straight = models.fit("lstm", planted, hp, callback=keep_epoch_two)
    torch.save(kept["state"], tmp_path / "state.pt")
    net, config = models.from_hyperparameters("lstm", hp)
    resumed = models.Trainer(net, config).fit(planted, resume=models.read_training_state(tmp_path / "state.pt"))
    for a, b in zip(straight.history, resumed.history):
        assert (a.train_loss, a.valid_loss, a.valid_ic) == (b.train_loss, b.valid_loss, b.valid_ic)


def test_a_training_state_that_is_not_one_is_refused_naming_the_file(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"torn")
    with pytest.raises(ValueError, match="state.pt: not a training state"):
        models.read_training_state(tmp_path / "state.pt")
    torch.save({"format": 99}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a training state of format 1"):
        models.read_training_state(tmp_path / "other.pt")
