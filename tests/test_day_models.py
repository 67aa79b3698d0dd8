"""GATs, HIST and IGMTF: Qlib's parameter names and shapes, one-day and many-day forwards, edge days, pretrained bases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphatune import models
from alphatune.models.hist import HIST
from alphatune.models.igmtf import IGMTF
from planted import planted_dataset

H = 64



def rnn_shapes(gates: int, layers: int = 2, d_feat: int = 6) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for layer in range(layers):
        shapes[f"rnn.weight_ih_l{layer}"] = (gates * H, d_feat if layer == 0 else H)
        shapes[f"rnn.weight_hh_l{layer}"] = (gates * H, H)
        shapes[f"rnn.bias_ih_l{layer}"] = (gates * H,)
        shapes[f"rnn.bias_hh_l{layer}"] = (gates * H,)
    return shapes


def linear(name: str, out: int, inp: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out, inp), **({f"{name}.bias": (out,)} if bias else {})}


QLIB_SHAPES = {  # reference 3.6-3.8 and 3.10: the parameters Qlib's forward uses, with the LSTM base
    "gats": {**rnn_shapes(4), **linear("transformation", H, H), "a": (2 * H, 1), **linear("fc", H, H),
             **linear("fc_out", 1, H)},
    "hist": {**rnn_shapes(4), **{k: v for name in ("fc_es", "fc_es_back", "fc_es_fore", "fc_is", "fc_is_back",
                                                   "fc_is_fore", "fc_indi") for k, v in linear(name, H, H).items()},
             **linear("fc_out", 1, H)},
    "igmtf": {**rnn_shapes(4), **linear("lins.linear0", H, H), **linear("lins.linear1", H, H),
              **linear("project1", H, H, bias=False), **linear("project2", H, H, bias=False),
              **linear("fc_out_pred", 1, 2 * H)},
}


@pytest.mark.parametrize("name", QLIB_SHAPES)
def test_state_dict_has_qlib_names_and_shapes(name):
    net = models.build(name)
    assert {key: tuple(value.shape) for key, value in net.state_dict().items()} == QLIB_SHAPES[name]


def test_gru_base_has_three_gates():
    shapes = {k: tuple(v.shape) for k, v in models.build("gats", base_model="GRU").state_dict().items()}
    assert shapes["rnn.weight_ih_l0"] == (3 * H, 6)


def _call(net, x, concepts, offsets=None):
    """Rows ``x`` whose concept rows are ``concepts`` (HIST looks them up by instrument: here row i is instrument i)."""
    if isinstance(net, HIST):
        net.set_concepts(concepts)
    return net(x, offsets, torch.arange(len(x)))


def _small(name: str, **extra):
    torch.manual_seed(0)
    net = models.build(name, hidden_size=8, **extra).eval()
    return net


def _with_memory(net, days=(4, 6, 5)):
    if isinstance(net, IGMTF):
        offsets = np.concatenate([[0], np.cumsum(days)])
        with torch.no_grad():
            net.set_memory(net.encode(torch.randn(int(offsets[-1]), 360)), offsets)
    return net


@pytest.mark.parametrize("name", ["gats", "hist", "igmtf"])
@pytest.mark.parametrize("n", [1, 2, 30])
def test_one_day_gives_one_score_per_stock(name, n):
    net = _with_memory(_small(name))
    x = torch.randn(n, 360)
    concepts = (torch.rand(n, 5) < 0.5).float()
    out = _call(net, x, concepts)
    assert out.shape == (n,) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["gats", "hist", "igmtf"])
def test_many_days_in_one_call_equal_one_call_per_day(name):
    net = _with_memory(_small(name, **({"k_day": 2, "n_neighbor": 3} if name == "igmtf" else {})))
    offsets = [0, 5, 6, 13, 16]  # a single-stock day among them
    x = torch.randn(16, 360)
    concepts = (torch.rand(16, 4) < 0.4).float()
    concepts[5] = 0.0  # a stock without any concept
    with torch.no_grad():
        together = _call(net, x, concepts, offsets)
        alone = torch.cat([_call(net, x[a:b], concepts[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_single_stock_day_trains_with_finite_gradients():
    for name in ("gats", "hist", "igmtf"):
        net = _with_memory(_small(name)).train()
        out = _call(net, torch.randn(1, 360), torch.zeros(1, 5))
        out.square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None), name


def test_hist_runs_on_cpu_and_uses_its_concepts():
    net = _small("hist")
    x = torch.randn(12, 360)
    grouped = torch.zeros(12, 3)
    grouped[:6, 0], grouped[6:, 1] = 1.0, 1.0
    with torch.no_grad():
        assert not torch.allclose(_call(net, x, grouped), _call(net, x, torch.zeros(12, 3)))


def test_igmtf_memory_edges():
    net = _small("igmtf", k_day=50, n_neighbor=500)  # more days and neighbours than the memory holds
    with pytest.raises(RuntimeError, match="set_memory"):
        net(torch.randn(3, 360))
    _with_memory(net, days=(1, 2))
    assert torch.isfinite(net(torch.randn(4, 360))).all()
    assert not any(key.startswith("memory") for key in net.state_dict())


def test_igmtf_memory_follows_the_weights():
    net = _with_memory(_small("igmtf"))
    before = net.memory_mean.clone()
    with torch.no_grad():
        net.lins.linear1.bias.add_(1.0)
        net.set_memory(net.encode(torch.randn(15, 360)), [0, 4, 10, 15])
    assert not torch.allclose(before, net.memory_mean)


# ------------------------------------------------------------------ pretrained bases

@pytest.fixture(scope="module")
def planted():
    return planted_dataset(40, 20, seed=2)


@pytest.fixture(scope="module")
def qlib_lstm_pkl(tmp_path_factory):
    """A Qlib-style LSTMModel state_dict (rnn.* and fc_out.*, hidden 8) saved as a .pkl."""
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("base") / "model_lstm_csi300.pkl"
    torch.save(models.build("lstm", hidden_size=8).state_dict(), path)
    return path


@pytest.mark.parametrize("name,copied", [("gats", ("rnn.", "fc_out.")), ("hist", ("rnn.", "fc_out.")),
                                         ("igmtf", ("rnn.",))])
def test_pretrained_base_copies_rnn_and_fc_out_as_qlib(planted, qlib_lstm_pkl, name, copied):
    base = torch.load(qlib_lstm_pkl, weights_only=True)
    # SGD at the smallest allowed rate: one epoch moves no weight by more than 1e-7 · 3 · steps
    trainer, _ = models.fit(name, planted, {"hidden_size": 8, "n_epochs": 1, "lr": 1e-7, "optimizer": "gd",
                                            "seed": 0}, pretrained=str(qlib_lstm_pkl))
    state = trainer.net.state_dict()
    for key, value in base.items():
        if key.startswith(copied):
            torch.testing.assert_close(state[key], value, rtol=0, atol=1e-4)
        else:
            assert key not in state or not torch.allclose(state[key], value, atol=1e-3)


def test_pretrained_base_of_another_size_is_refused(planted, qlib_lstm_pkl):
    with pytest.raises(ValueError, match=r"rnn\.weight_ih_l0 has shape \[32, 6\].*expects \[64, 6\]"):
        models.fit("gats", planted, {"hidden_size": 16, "n_epochs": 1}, pretrained=str(qlib_lstm_pkl))
    with pytest.raises(ValueError, match="GRU"):
        models.fit("gats", planted, {"hidden_size": 8, "base_model": "GRU", "n_epochs": 1},
                   pretrained=str(qlib_lstm_pkl))


def test_pretrain_trains_the_base_first(planted):
    trainer, result = models.fit("hist", planted, {"hidden_size": 8, "n_epochs": 1, "seed": 0}, pretrained="pretrain")
    assert len(result.history) == 1 and np.isfinite(result.history[0].score)
    random_start, _ = models.fit("hist", planted, {"hidden_size": 8, "n_epochs": 1, "seed": 0})
    # same seed, same initial network: only the pretrained base makes the difference
    assert not torch.allclose(trainer.net.rnn.weight_ih_l0, random_start.net.rnn.weight_ih_l0)


def test_pretrained_base_from_our_own_lstm_checkpoint(planted, tmp_path):
    lstm, _ = models.fit("lstm", planted, {"hidden_size": 8, "n_epochs": 1, "seed": 1})
    lstm.save(tmp_path / "lstm.pt")
    trainer, _ = models.fit("igmtf", planted, {"hidden_size": 8, "n_epochs": 1, "lr": 1e-7, "optimizer": "gd"},
                            pretrained=str(tmp_path / "lstm.pt"))
    torch.testing.assert_close(trainer.net.rnn.weight_hh_l1, lstm.net.rnn.weight_hh_l1, rtol=0, atol=1e-4)
