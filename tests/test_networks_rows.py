"""The five row-batch networks (LSTM, GRU, Transformer, Localformer, TCN): shapes, sizes, modes, seeds, CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from alphatune import models
from alphatune.cli import main as alphatune_main
from limits import HANG_SECONDS

ROW_MODELS = ("lstm", "gru", "transformer", "localformer", "tcn")
ROOT = Path(__file__).resolve().parent.parent


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("name", ROW_MODELS)
@pytest.mark.parametrize("rows", [0, 1, 2, 300])
def test_output_is_one_score_per_row(name: str, rows: int) -> None:
    torch.manual_seed(0)
    net = models.build(name)
    x = torch.randn(rows, 360)
    for train in (True, False) if rows <= 2 else (False,):
        net.train(train)
        with torch.no_grad():
            scores = net(x)
        assert scores.shape == (rows,)
        assert scores.dtype == torch.float32
        assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ROW_MODELS)
def test_rows_are_independent(name: str) -> None:
    """A row's score depends on that row only: NaN stays in its row, and batch-mates do not move it."""
    torch.manual_seed(0)
    net = models.build(name).eval()
    x = torch.randn(5, 360)
    poisoned = x.clone()
    poisoned[2, 100] = float("nan")
    with torch.no_grad():
        clean, scores = net(x), net(poisoned)
        alone = net(x[3:4])
    assert torch.isnan(scores[2]) and torch.isfinite(scores[[0, 1, 3, 4]]).all()
    torch.testing.assert_close(scores[[0, 1, 3, 4]], clean[[0, 1, 3, 4]])
    torch.testing.assert_close(alone, clean[3:4])


@pytest.mark.parametrize("name", ROW_MODELS)
def test_row_width_must_split_into_d_feat_blocks(name: str) -> None:
    with pytest.raises(RuntimeError, match=r"unflatten: Provided sizes \[6, -1\] don't multiply up to .* \(361\)"):
        models.build(name)(torch.randn(2, 361))


@pytest.mark.parametrize("name", ROW_MODELS)
def test_class_is_the_registry_entry(name: str) -> None:
    assert type(models.build(name)).__name__ == models.REGISTRY[name].network.split(":")[1]


@pytest.mark.parametrize("name", ROW_MODELS)
def test_network_keeps_its_hyperparameters(name: str) -> None:
    """The trainer writes checkpoints from these attributes."""
    changed = {"dropout": 0.25, "num_layers": 3}
    hyperparameters = models.get_spec(name).hyperparameters(changed)
    net = models.build(hyperparameters)
    assert {key: getattr(net, key) for key in hyperparameters.network_kwargs()} == hyperparameters.network_kwargs()
    assert hyperparameters.dropout == 0.25 and hyperparameters.num_layers == 3


def test_rnn_parameter_counts_match_qlib() -> None:
    lstm, gru = models.build("lstm"), models.build("gru")
    assert parameter_count(lstm.rnn) == 51_712 and parameter_count(lstm.fc_out) == 65
    assert parameter_count(gru.rnn) == 38_784 and parameter_count(gru.fc_out) == 65


def test_transformer_parameter_counts_match_qlib() -> None:
    net = models.build("transformer")
    layers = net.transformer_encoder.layers
    assert len(layers) == 2 and all(parameter_count(layer) == 281_152 for layer in layers)
    assert net.transformer_encoder.norm is None
    # Used parameters only: Qlib's extra, unused encoder layer is not built.
    assert parameter_count(net) == 6 * 64 + 64 + 2 * 281_152 + 65
    assert net.state_dict()["pos_encoder.pe"].shape == (1000, 1, 64)


def test_localformer_has_a_conv_per_layer_and_a_gru() -> None:
    net = models.build("localformer")
    convs = net.transformer_encoder.conv
    assert len(convs) == 2 and all(parameter_count(conv) == 64 * 64 * 3 + 64 for conv in convs)
    assert parameter_count(net.rnn) == 2 * 3 * (64 * 64 + 64 * 64 + 2 * 64)


def test_tcn_parameter_count_and_layout() -> None:
    net = models.build("tcn")
    first_block = 2 * 128 + 128 * 6 * 3 + 2 * 128 + 128 * 128 * 3 + 128 * 6 + 128   # conv1, conv2, downsample
    other_block = 2 * (2 * 128 + 128 * 128 * 3)
    assert parameter_count(net) == first_block + 4 * other_block + 129 == 448_257
    assert [block.conv1.dilation[0] for block in net.tcn.network] == [1, 2, 4, 8, 16]
    assert net.tcn.network[0].downsample is not None
    assert all(block.downsample is None for block in net.tcn.network[1:])
    # With as many channels as fields there is nothing to downsample, as in Qlib.
    assert models.build("tcn", n_chans=6).tcn.network[0].downsample is None


def test_tcn_is_causal() -> None:
    """Changing the newest day moves the score; changing only older days never reaches the future."""
    torch.manual_seed(0)
    net = models.build("tcn").eval()
    x = torch.randn(4, 360)
    channels_before = net.tcn(x.reshape(4, 6, 60))
    shifted = x.reshape(4, 6, 60).clone()
    shifted[:, :, 30] += 1.0
    channels_after = net.tcn(shifted)
    assert torch.equal(channels_before[:, :, :30], channels_after[:, :, :30])
    assert not torch.equal(channels_before[:, :, 30:], channels_after[:, :, 30:])


@pytest.mark.parametrize("name", ROW_MODELS)
def test_dropout_only_in_training(name: str) -> None:
    torch.manual_seed(0)
    dropout = {"tcn": 0.5}.get(name, 0.3)
    net = models.build(name, dropout=dropout)
    x = torch.randn(16, 360)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", ROW_MODELS)
def test_same_seed_same_initial_weights(name: str) -> None:
    torch.manual_seed(7)
    first = models.build(name).state_dict()
    torch.manual_seed(7)
    second = models.build(name).state_dict()
    torch.manual_seed(8)
    other = models.build(name).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_rnn_init_follows_qlib_build_order() -> None:
    for name, rnn_class in (("lstm", nn.LSTM), ("gru", nn.GRU)):
        torch.manual_seed(0)
        rnn, fc_out = rnn_class(6, 64, 2, batch_first=True), nn.Linear(64, 1)
        torch.manual_seed(0)
        ours = models.build(name).state_dict()
        expected = {**{f"rnn.{k}": v for k, v in rnn.state_dict().items()},
                    **{f"fc_out.{k}": v for k, v in fc_out.state_dict().items()}}
        assert ours.keys() == expected.keys()
        assert all(torch.equal(ours[key], expected[key]) for key in ours)


def test_transformer_init_follows_qlib_build_order() -> None:
    """Qlib: embedding, one encoder layer (deep-copied into the stack), read-out."""
    torch.manual_seed(0)
    feature_layer = nn.Linear(6, 64)
    layer = nn.TransformerEncoderLayer(64, 2, dropout=0.0)
    decoder_layer = nn.Linear(64, 1)
    torch.manual_seed(0)
    net = models.build("transformer")
    assert all(torch.equal(a, b) for a, b in zip(net.feature_layer.parameters(), feature_layer.parameters()))
    for built in net.transformer_encoder.layers:
        assert all(torch.equal(a, b) for a, b in zip(built.parameters(), layer.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(net.decoder_layer.parameters(), decoder_layer.parameters()))


def test_localformer_init_follows_qlib_build_order() -> None:
    """Qlib: GRU, embedding, one encoder layer, one conv (each deep-copied per layer), read-out."""
    torch.manual_seed(0)
    rnn = nn.GRU(64, 64, 2)
    feature_layer = nn.Linear(6, 64)
    layer = nn.TransformerEncoderLayer(64, 2, dropout=0.0)
    conv = nn.Conv1d(64, 64, 3, 1, 1)
    decoder_layer = nn.Linear(64, 1)
    torch.manual_seed(0)
    net = models.build("localformer")
    expected = [rnn, feature_layer, copy.deepcopy(layer), copy.deepcopy(layer), conv, conv, decoder_layer]
    built = [net.rnn, net.feature_layer, *net.transformer_encoder.layers, *net.transformer_encoder.conv,
             net.decoder_layer]
    for ours, theirs in zip(built, expected):
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


def test_one_layer_rnn_accepts_dropout_without_warning() -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = models.build("gru", num_layers=1, dropout=0.5)
    assert net(torch.randn(3, 360)).shape == (3,)


@pytest.mark.parametrize("name", ROW_MODELS)
def test_d_feat_and_sizes_are_honoured(name: str) -> None:
    sizes = {"lstm": {"hidden_size": 16, "num_layers": 1}, "gru": {"hidden_size": 16, "num_layers": 3},
             "transformer": {"d_model": 16, "nhead": 4, "num_layers": 1},
             "localformer": {"d_model": 16, "nhead": 4, "num_layers": 3},
             "tcn": {"n_chans": 8, "num_layers": 3, "kernel_size": 2}}[name]
    net = models.build(name, d_feat=4, **sizes)
    assert net(torch.randn(5, 4 * 20)).shape == (5,)


@pytest.mark.parametrize("name", ROW_MODELS)
def test_every_parameter_is_used(name: str) -> None:
    """No registered-but-unused layers (Qlib's warts): the loss reaches every parameter."""
    torch.manual_seed(0)
    net = models.build(name, dropout=0.0)
    net(torch.randn(8, 360)).square().mean().backward()
    unused = [key for key, parameter in net.named_parameters() if parameter.grad is None]
    assert unused == []


def test_build_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="unknown model 'lstmx'"):
        models.build("lstmx")
    with pytest.raises(ValueError, match="unknown hyperparameter 'hidden'"):
        models.build("lstm", hidden=3)
    with pytest.raises(ValueError, match=r"dropout=1.5 is out of range"):
        models.build("tcn", dropout=1.5)
    with pytest.raises(ValueError, match=r"hidden_size=2.5 must be an integer"):
        models.build("gru", hidden_size=2.5)
    with pytest.raises(ValueError, match="d_model=64 must be divisible by nhead=3"):
        models.build("transformer", nhead=3)
    with pytest.raises(ValueError, match="lr are training hyperparameters"):
        models.build("localformer", lr=0.1)


def test_cli_lists_every_model_with_defaults_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert alphatune_main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listing] == list(models.REGISTRY)
    by_name = {entry["name"]: entry for entry in listing}
    assert by_name["lstm"]["parameters"] == 51_712 + 65
    assert by_name["tcn"]["parameters"] == 448_257
    assert by_name["gats"]["batch_mode"] == "day"
    assert by_name["transformer"]["hyperparameters"]["reg"]["default"] == 1e-3
    assert by_name["tcn"]["hyperparameters"]["dropout"] == {"default": 0.5, "network": True, "range": [0.0, 0.99]}
    completed = subprocess.run([sys.executable, "-m", "alphatune", "models", "list"], cwd=ROOT, capture_output=True, text=True,
                               timeout=HANG_SECONDS)
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    for name in models.REGISTRY:
        assert f"\n{name} " in "\n" + text
    assert "hidden_size=64 [1, 4096]" in text and "metric=loss {loss,ic}" in text and "448,257" in text
