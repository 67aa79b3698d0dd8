"""Static training steps (what a CUDA graph captures): on CPU, run eagerly, they give the eager step's loss,
gradients and predictions, padded days and all."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from alphatune import models
from alphatune.models.steps import StaticStep, check_replay, pad_days
from alphatune.models.segments import load_segment
from planted import planted_dataset

SIZES = {"lstm": {"hidden_size": 8}, "gru": {"hidden_size": 8}, "tcn": {"n_chans": 8, "num_layers": 2},
         "transformer": {"d_model": 8, "num_layers": 1}, "localformer": {"d_model": 8, "num_layers": 1},
         "gats": {"hidden_size": 8}, "hist": {"hidden_size": 8}, "igmtf": {"hidden_size": 8}}


@pytest.fixture(scope="module")
def planted():
    return planted_dataset(30, 25, seed=2, missing=0.3)  # days of different sizes: padding is exercised


def trainer_and_segment(name: str, ds, **options):
    hp = models.get_spec(name).hyperparameters({**SIZES[name], "batch_size": 64, "seed": 0, "dropout": 0.0})
    net = models.initial_network(hp)
    trainer = models.Trainer(net, models.train_config(hp, **options), hp)
    trainer._attach(ds)
    return trainer, load_segment(ds, "train", trainer.device, labelled_only=True)


def gradients(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.grad.clone() for name, parameter in net.named_parameters() if parameter.grad is not None}


def test_days_are_padded_to_the_widest_with_a_mask() -> None:
    rows, mask = pad_days(np.array([0, 3, 4, 8]), torch.device("cpu"))
    assert rows.tolist() == [[0, 1, 2, 0], [3, 3, 3, 3], [4, 5, 6, 7]]
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False], [True] * 4]


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_a_static_step_equals_the_eager_step(name, planted):
    """Same batch, same weights: the static step's loss and every gradient equal the eager step's (within 1e-6);
    a day model's day is padded to the segment's widest day (the day below is narrower). No dropout: the two
    steps draw different random numbers."""
    trainer, seg = trainer_and_segment(name, planted)
    trainer._refresh(seg)
    optimizer = torch.optim.SGD(trainer.net.parameters(), lr=0.0)  # no update: both see the same weights
    day_model = isinstance(trainer.net, models.DayModel)
    if day_model:
        counts = np.diff(seg.offsets)
        day = int(np.argmin(counts))
        assert counts[day] < counts.max()
        eager_rows, batch = slice(int(seg.offsets[day]), int(seg.offsets[day + 1])), torch.tensor([day])
    else:
        batch = torch.randperm(seg.n_rows, generator=torch.Generator().manual_seed(0))[:64]
        eager_rows = batch
    trainer.net.train()
    eager_loss = trainer._step(optimizer, seg, eager_rows)
    eager_grads = gradients(trainer.net)
    static = StaticStep(trainer.net, seg, optimizer, 3.0, trainer._autocast, day_model, 64, graphs=False)
    static_loss = static(batch)
    static_grads = gradients(trainer.net)
    torch.testing.assert_close(static_loss, eager_loss, rtol=1e-6, atol=1e-6)
    assert eager_grads.keys() == static_grads.keys()
    for key in eager_grads:
        torch.testing.assert_close(static_grads[key], eager_grads[key], rtol=1e-6, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", ["lstm", "gats", "hist", "igmtf"])
def test_a_fit_with_static_steps_follows_the_eager_fit(name, planted):
    """graphs=True off CUDA runs the static steps eagerly (with one warning): the same epochs as the eager fit."""
    hp = {**SIZES[name], "batch_size": 64, "seed": 0, "n_epochs": 3, "early_stop": 3, "dropout": 0.0}
    _, eager = models.fit(name, planted, hp)
    with pytest.warns(UserWarning, match="CUDA graphs need a CUDA device"):
        static_trainer, static = models.fit(name, planted, hp, graphs=True)
    for a, b in zip(eager.history, static.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.valid_loss == pytest.approx(b.valid_loss, rel=1e-5)
        assert a.valid_ic == pytest.approx(b.valid_ic, rel=1e-4, abs=1e-6)


def test_graphs_are_off_by_default_on_cpu(planted):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer, _ = models.fit("lstm", planted, {"hidden_size": 8, "n_epochs": 1})
    assert trainer.precision.graphs is False and trainer._static is None


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_the_captured_part_of_a_step_never_reads_a_value_on_the_host(name, planted):
    """A CUDA graph cannot capture an op whose result the host must see (``.item()``, ``nonzero``, boolean
    indexing, a data-dependent shape). Run forward, loss, backward and clipping on fake tensors, which have shapes
    but no values: such an op raises. (The optimizer is the capturable fused Adam on CUDA, not checked here.)"""
    from torch._subclasses.fake_tensor import FakeTensorMode
    trainer, seg = trainer_and_segment(name, planted)
    trainer._refresh(seg)
    day_model = isinstance(trainer.net, models.DayModel)
    optimizer = torch.optim.SGD(trainer.net.parameters(), lr=0.0)
    static = StaticStep(trainer.net, seg, optimizer, 3.0, trainer._autocast, day_model, 64, graphs=False)
    static(torch.tensor([0]) if day_model else torch.arange(64))  # fills the buffers, as the warm-up does
    with FakeTensorMode(allow_non_fake_inputs=True):
        loss = static.forward_loss()
        loss.backward()
        torch.nn.utils.clip_grad_value_(trainer.net.parameters(), 3.0)


class _Replay:
    """Stands in for a captured CUDA graph on CPU: ``replay()`` runs ``step`` (the static step on its buffers,
    gradients written afresh as a replay writes them, or a deliberately wrong one) and leaves its loss where a
    graph leaves it (``static.loss``)."""

    def __init__(self, static: StaticStep, step) -> None:
        self.static, self.step, self.replays = static, step, 0

    def replay(self) -> None:
        self.replays += 1
        self.static.loss = self.step()


@pytest.mark.parametrize("name", ["lstm", "gats"])
def test_a_first_replay_that_disagrees_with_the_eager_step_falls_back_with_one_warning(name, planted) -> None:
    """The check every captured step passes before it is trusted, run on CPU: a replay that trains on a stale
    batch (the index buffer left as it was, a classic capture bug) is caught on its first replay, the step stays
    eager with one warning naming the model, and the batch is trained once, as the eager step trains it."""
    trainer, seg = trainer_and_segment(name, planted)
    trainer._refresh(seg)
    optimizer = torch.optim.Adam(trainer.net.parameters(), lr=1e-3)
    day_model = isinstance(trainer.net, models.DayModel)
    static = StaticStep(trainer.net, seg, optimizer, 3.0, trainer._autocast, day_model, 64, graphs=False)
    first, second = (torch.tensor([0]), torch.tensor([1])) if day_model else (torch.arange(64), torch.arange(64, 128))
    static(first)  # a warm-up step: the optimizer has its moments now

    def stale_batch() -> torch.Tensor:  # trains the batch of the step before, whatever the index buffer holds
        current = static.index.clone()
        static.index.copy_(first)
        loss = static._eager_step()
        static.index.copy_(current)
        return loss

    static.index.copy_(second)
    expected = check_replay(static._eager_step, static._eager_step, trainer.net, optimizer)  # agrees with itself
    assert expected[0] is None
    static.index.copy_(second)
    before = copy.deepcopy((trainer.net.state_dict(), optimizer.state_dict()))
    wrong = _Replay(static, stale_batch)
    with pytest.warns(UserWarning, match=rf"CUDA graphs off for {type(trainer.net).__name__} in this fit, the step "
                                         r"runs eagerly: its first replay gave loss .* the eager step .* from the same "
                                         r"state \(tolerance 0\.001 relative\)"):
        loss = static.adopt(wrong)
    assert wrong.replays == 1 and static.graph is None and not static.graphs and torch.isfinite(loss)
    trained = copy.deepcopy(trainer.net.state_dict())
    trainer.net.load_state_dict(before[0])
    optimizer.load_state_dict(before[1])
    static.index.copy_(second)
    once = static._eager_step()  # the same batch, trained once, eagerly, from the same state
    assert float(once) == pytest.approx(float(loss), rel=1e-6)
    for key, value in trainer.net.state_dict().items():
        torch.testing.assert_close(trained[key], value, rtol=1e-6, atol=1e-7, msg=key)
    static.index.copy_(second)
    right = _Replay(static, static._eager_step)
    assert static.adopt(right) is not None and static.graph is right  # a replay that agrees is kept
