"""Qlib weight compatibility: state_dicts with Qlib's names and shapes (built by hand from the reference, section
3 and 3.10 of qlib-models.md) load into our networks, and give the predictions of Qlib's forward computation,
written here the way Qlib computes it (sequence-first, pad-and-chomp TCN, old-style weight norm)."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from alphatune import models
from alphatune.models.qlib_weights import read_state_dict

Shapes = dict[str, tuple[int, ...]]


# ---- Qlib's parameter names and shapes, per model ------------------------------------------------------------

def rnn_shapes(prefix: str, gates: int, input_size: int, hidden: int, layers: int) -> Shapes:
    shapes: Shapes = {}
    for layer in range(layers):
        width = input_size if layer == 0 else hidden
        shapes |= {f"{prefix}weight_ih_l{layer}": (gates * hidden, width),
                   f"{prefix}weight_hh_l{layer}": (gates * hidden, hidden),
                   f"{prefix}bias_ih_l{layer}": (gates * hidden,), f"{prefix}bias_hh_l{layer}": (gates * hidden,)}
    return shapes


def linear_shapes(prefix: str, outputs: int, inputs: int, bias: bool = True) -> Shapes:
    return {f"{prefix}weight": (outputs, inputs), **({f"{prefix}bias": (outputs,)} if bias else {})}


def encoder_layer_shapes(prefix: str, d_model: int, feedforward: int = 2048) -> Shapes:
    return {f"{prefix}self_attn.in_proj_weight": (3 * d_model, d_model),
            f"{prefix}self_attn.in_proj_bias": (3 * d_model,),
            **linear_shapes(f"{prefix}self_attn.out_proj.", d_model, d_model),
            **linear_shapes(f"{prefix}linear1.", feedforward, d_model),
            **linear_shapes(f"{prefix}linear2.", d_model, feedforward),
            f"{prefix}norm1.weight": (d_model,), f"{prefix}norm1.bias": (d_model,),
            f"{prefix}norm2.weight": (d_model,), f"{prefix}norm2.bias": (d_model,)}


def qlib_shapes(name: str, hp: dict) -> Shapes:
    """Every entry of the state_dict of Qlib's module for ``name``, used or not."""
    d_feat = hp.get("d_feat", 6)
    if name in ("lstm", "gru"):
        hidden = hp["hidden_size"]
        return {**rnn_shapes("rnn.", 4 if name == "lstm" else 3, d_feat, hidden, hp["num_layers"]),
                **linear_shapes("fc_out.", 1, hidden)}
    if name in ("transformer", "localformer"):
        d = hp["d_model"]
        shapes = rnn_shapes("rnn.", 3, d, d, hp["num_layers"]) if name == "localformer" else {}
        shapes |= {**linear_shapes("feature_layer.", d, d_feat), "pos_encoder.pe": (1000, 1, d),
                   **encoder_layer_shapes("encoder_layer.", d)}
        for layer in range(hp["num_layers"]):
            shapes |= encoder_layer_shapes(f"transformer_encoder.layers.{layer}.", d)
            if name == "localformer":
                shapes |= {f"transformer_encoder.conv.{layer}.weight": (d, d, 3),
                           f"transformer_encoder.conv.{layer}.bias": (d,)}
        return shapes | linear_shapes("decoder_layer.", 1, d)
    if name == "tcn":
        shapes = {}
        widths = [d_feat] + [hp["n_chans"]] * hp["num_layers"]
        for block in range(hp["num_layers"]):
            inputs, outputs = widths[block], widths[block + 1]
            for conv, alias, width in (("conv1", "net.0", inputs), ("conv2", "net.4", outputs)):
                for module in (conv, alias):
                    shapes |= {f"tcn.network.{block}.{module}.bias": (outputs,),
                               f"tcn.network.{block}.{module}.weight_g": (outputs, 1, 1),
                               f"tcn.network.{block}.{module}.weight_v": (outputs, width, hp["kernel_size"])}
            if inputs != outputs:
                shapes |= {f"tcn.network.{block}.downsample.weight": (outputs, inputs, 1),
                           f"tcn.network.{block}.downsample.bias": (outputs,)}
        return shapes | linear_shapes("linear.", 1, hp["n_chans"])
    hidden = hp["hidden_size"]
    shapes = rnn_shapes("rnn.", 4 if hp["base_model"] == "LSTM" else 3, d_feat, hidden, hp["num_layers"])
    if name == "gats":
        return shapes | {**linear_shapes("transformation.", hidden, hidden), "a": (2 * hidden, 1),
                         **linear_shapes("fc.", hidden, hidden), **linear_shapes("fc_out.", 1, hidden)}
    if name == "hist":
        for layer in ("fc_es", "fc_is", "fc_es_middle", "fc_is_middle", "fc_es_fore", "fc_is_fore", "fc_indi_fore",
                      "fc_es_back", "fc_is_back", "fc_indi"):
            shapes |= linear_shapes(f"{layer}.", hidden, hidden)
        for layer in ("fc_out_es", "fc_out_is", "fc_out_indi", "fc_out"):
            shapes |= linear_shapes(f"{layer}.", 1, hidden)
        return shapes
    if name == "igmtf":
        return shapes | {**linear_shapes("lins.linear0.", hidden, hidden),
                         **linear_shapes("lins.linear1.", hidden, hidden),
                         **linear_shapes("project1.", hidden, hidden, bias=False),
                         **linear_shapes("project2.", hidden, hidden, bias=False),
                         **linear_shapes("fc_out_pred.", 1, 2 * hidden),
                         **linear_shapes("fc_output.", 2 * hidden, 2 * hidden)}
    raise KeyError(name)


def sinusoid_table(d_model: int, length: int = 1000) -> torch.Tensor:
    """Qlib's positional table ``[length, 1, d_model]``, computed in float64 from the formula, stored float32."""
    table = torch.zeros(length, d_model, dtype=torch.float64)
    for i in range(0, d_model, 2):
        rate = math.exp(i * -math.log(10000.0) / d_model)
        table[:, i] = torch.sin(torch.arange(length, dtype=torch.float64) * rate)
        table[:, i + 1] = torch.cos(torch.arange(length, dtype=torch.float64) * rate)
    return table.float().unsqueeze(1)


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for ``shapes``, scaled like trained weights; TCN's aliases share their conv's tensors."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if ".net.0." in key or ".net.4." in key:
            continue
        if key.endswith("pos_encoder.pe"):
            state[key] = sinusoid_table(shape[-1], shape[0])
        elif key.endswith(("norm1.weight", "norm2.weight")) or key.endswith("weight_g"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    for key in shapes:
        for alias, conv in ((".net.0.", ".conv1."), (".net.4.", ".conv2.")):
            if alias in key:
                state[key] = state[key.replace(alias, conv)]
    return state


# ---- Qlib's forward computations, as Qlib writes them ----------------------------------------------------------

def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def qlib_rnn(kind: type[nn.RNNBase], state, input_size: int, hidden: int, layers: int, batch_first: bool):
    rnn = kind(input_size, hidden, layers, batch_first=batch_first)
    rnn.load_state_dict(sub_state(state, "rnn."))
    return rnn.eval()


def qlib_forward(name: str, hp: dict, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    d_feat, rows = hp.get("d_feat", 6), len(x)
    if name in ("lstm", "gru"):
        rnn = qlib_rnn(nn.LSTM if name == "lstm" else nn.GRU, state, d_feat, hp["hidden_size"], hp["num_layers"],
                       batch_first=True)
        out, _ = rnn(x.reshape(rows, d_feat, -1).permute(0, 2, 1))
        return functional.linear(out[:, -1, :], state["fc_out.weight"], state["fc_out.bias"]).squeeze(-1)
    if name in ("transformer", "localformer"):
        d = hp["d_model"]
        src = x.reshape(rows, d_feat, -1).permute(0, 2, 1)
        src = functional.linear(src, state["feature_layer.weight"], state["feature_layer.bias"]).transpose(1, 0)
        output = src + state["pos_encoder.pe"][: src.size(0), :]                                # [T, N, d]
        out = output
        for layer_index in range(hp["num_layers"]):
            layer = nn.TransformerEncoderLayer(d, hp["nhead"], dropout=0.0)                     # sequence-first
            layer.load_state_dict(sub_state(state, f"transformer_encoder.layers.{layer_index}."))
            layer.eval()
            if name == "localformer":
                conv = f"transformer_encoder.conv.{layer_index}."
                out = output.transpose(1, 0).transpose(2, 1)                                    # [N, d, T]
                out = functional.conv1d(out, state[conv + "weight"], state[conv + "bias"], padding=1)
                out = out.transpose(2, 1).transpose(1, 0)                                       # [T, N, d]
                output = layer(output + out)
            else:
                output = layer(output)
        if name == "localformer":
            output, _ = qlib_rnn(nn.GRU, state, d, d, hp["num_layers"], batch_first=False)(output + out)
        return functional.linear(output.transpose(1, 0)[:, -1, :], state["decoder_layer.weight"],
                                 state["decoder_layer.bias"]).squeeze(-1)
    if name == "tcn":
        hidden = x.reshape(rows, d_feat, -1)
        for block in range(hp["num_layers"]):
            dilation = 2**block
            padding = (hp["kernel_size"] - 1) * dilation
            out = hidden
            for conv in ("conv1", "conv2"):
                prefix = f"tcn.network.{block}.{conv}."
                v, g = state[prefix + "weight_v"], state[prefix + "weight_g"]
                weight = g * v / v.norm(dim=(1, 2), keepdim=True)                               # weight norm, dim 0
                out = functional.conv1d(out, weight, state[prefix + "bias"], padding=padding, dilation=dilation)
                out = torch.relu(out[:, :, :-padding].contiguous())                             # chomp
            downsample = f"tcn.network.{block}.downsample."
            residual = (functional.conv1d(hidden, state[downsample + "weight"], state[downsample + "bias"])
                        if downsample + "weight" in state else hidden)
            hidden = torch.relu(out + residual)
        return functional.linear(hidden[:, :, -1], state["linear.weight"], state["linear.bias"]).squeeze(-1)
    raise KeyError(name)


CASES = [
    ("lstm", {"hidden_size": 64, "num_layers": 2, "dropout": 0.0}),
    ("lstm", {"hidden_size": 16, "num_layers": 3, "dropout": 0.0}),
    ("gru", {"hidden_size": 64, "num_layers": 2, "dropout": 0.0}),
    ("transformer", {"d_model": 64, "nhead": 2, "num_layers": 2, "dropout": 0.0}),
    ("transformer", {"d_model": 32, "nhead": 4, "num_layers": 3, "dropout": 0.0}),
    ("localformer", {"d_model": 64, "nhead": 2, "num_layers": 2, "dropout": 0.0}),
    ("localformer", {"d_model": 16, "nhead": 2, "num_layers": 1, "dropout": 0.0}),
    ("tcn", {"n_chans": 128, "num_layers": 5, "kernel_size": 3, "dropout": 0.5}),
    ("tcn", {"n_chans": 6, "num_layers": 3, "kernel_size": 2, "dropout": 0.1}),
]


@pytest.mark.parametrize(("name", "hp"), CASES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(CASES)])
def test_qlib_state_dict_loads_and_predicts_like_qlib(name: str, hp: dict) -> None:
    state = random_state(qlib_shapes(name, hp))
    net = models.load_qlib_weights(models.build(name, **hp), state).eval()
    x = torch.randn(20, 360, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = net(x), qlib_forward(name, hp, state, x)
    assert ours.shape == (20,)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert theirs.std() > 0.01   # the comparison is not between constants


def test_our_positional_table_is_qlibs() -> None:
    """Float32 like Qlib's: within 1e-5 over the 60 days used, within 1e-4 out to position 999."""
    ours, exact = models.build("transformer").state_dict()["pos_encoder.pe"], sinusoid_table(64)
    torch.testing.assert_close(ours[:60], exact[:60], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-4)


def test_tcn_weight_norm_names_are_mapped() -> None:
    hp = {"n_chans": 8, "num_layers": 2, "kernel_size": 3, "dropout": 0.0}
    state = random_state(qlib_shapes("tcn", hp))
    net = models.load_qlib_weights(models.build("tcn", **hp), state)
    conv = net.tcn.network[1].conv2
    assert torch.equal(conv.parametrizations.weight.original0, state["tcn.network.1.conv2.weight_g"])
    assert torch.equal(conv.parametrizations.weight.original1, state["tcn.network.1.conv2.weight_v"])


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer", "localformer", "tcn"])
def test_our_own_state_dict_loads_back(name: str) -> None:
    torch.manual_seed(3)
    source = models.build(name).eval()
    target = models.load_qlib_weights(models.build(name), source.state_dict()).eval()
    x = torch.randn(20, 360)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


QLIB_UNUSED = {"gats": set(), "igmtf": {"fc_output.weight", "fc_output.bias"},
               "hist": {f"{layer}.{kind}" for layer in ("fc_es_middle", "fc_is_middle", "fc_indi_fore", "fc_out_es",
                                                        "fc_out_is", "fc_out_indi") for kind in ("weight", "bias")}}


@pytest.mark.parametrize("base_model", ["LSTM", "GRU"])
@pytest.mark.parametrize("name", ["gats", "hist", "igmtf"])
def test_day_models_take_qlib_state_dicts(name: str, base_model: str) -> None:
    """Qlib's names for every used parameter; exactly the parameters Qlib never uses are dropped."""
    hp = {"hidden_size": 16, "num_layers": 2, "base_model": base_model}
    state = random_state(qlib_shapes(name, hp))
    net = models.load_qlib_weights(models.build(name, **hp), state)
    ours = net.state_dict()
    assert set(ours) == set(state) - QLIB_UNUSED[name]
    assert all(torch.equal(ours[key], state[key]) for key in ours)


# ---- refusals -----------------------------------------------------------------------------------------------

LSTM_HP = {"hidden_size": 64, "num_layers": 2, "dropout": 0.0}


def assert_refused(net: nn.Module, state, message: str) -> None:
    before = {key: value.clone() for key, value in net.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        models.load_qlib_weights(net, state)
    assert all(torch.equal(before[key], value) for key, value in net.state_dict().items())


def test_missing_key_is_refused() -> None:
    state = random_state(qlib_shapes("lstm", LSTM_HP))
    del state["fc_out.bias"]
    assert_refused(models.build("lstm"), state, r"lstm: weights do not fit the network: missing 'fc_out.bias' \(1,\)")


def test_unexpected_key_is_refused() -> None:
    state = random_state(qlib_shapes("lstm", LSTM_HP)) | {"fc_extra.weight": torch.zeros(2, 2)}
    assert_refused(models.build("lstm"), state, r"unexpected 'fc_extra.weight' \(2, 2\)")


def test_wrong_shape_is_refused_with_both_shapes() -> None:
    state = random_state(qlib_shapes("gru", {"hidden_size": 32, "num_layers": 2}))
    assert_refused(models.build("gru"), state,
                   r"'rnn.weight_ih_l0' has shape \(96, 6\), the network expects \(192, 6\)")


def test_unused_modules_are_dropped_only_for_their_model() -> None:
    # HIST's unused head means nothing to an LSTM: refused, not silently dropped.
    state = random_state(qlib_shapes("lstm", LSTM_HP)) | {"fc_out_es.weight": torch.zeros(1, 64)}
    assert_refused(models.build("lstm"), state, "unexpected 'fc_out_es.weight'")
    # A Transformer without its unused encoder_layer copy loads too; a near-miss name does not.
    hp = {"d_model": 64, "nhead": 2, "num_layers": 2, "dropout": 0.0}
    state = {key: value for key, value in random_state(qlib_shapes("transformer", hp)).items()
             if not key.startswith("encoder_layer.")}
    models.load_qlib_weights(models.build("transformer"), state)
    assert_refused(models.build("transformer"), state | {"encoder_layers.norm1.weight": torch.ones(64)},
                   "unexpected 'encoder_layers.norm1.weight'")


def test_tcn_alias_that_differs_is_refused() -> None:
    hp = {"n_chans": 8, "num_layers": 2, "kernel_size": 3, "dropout": 0.0}
    state = random_state(qlib_shapes("tcn", hp))
    state["tcn.network.1.net.4.weight_v"] = state["tcn.network.1.net.4.weight_v"] + 1.0
    assert_refused(models.build("tcn", **hp), state,
                   r"'tcn.network.1.net.4.weight_v' should equal 'tcn.network.1.conv2.weight_v'")


def test_unregistered_network_is_refused() -> None:
    with pytest.raises(ValueError, match="torch.nn.modules.linear.Linear is not a registered network"):
        models.load_qlib_weights(nn.Linear(2, 2), {})


# ---- files ----------------------------------------------------------------------------------------------------

def test_qlib_pkl_file_loads_from_a_path(tmp_path: Path) -> None:
    state = random_state(qlib_shapes("lstm", LSTM_HP))
    path = tmp_path / "model_lstm_csi300.pkl"
    torch.save(state, path)
    for source in (path, str(path)):
        net = models.load_qlib_weights(models.build("lstm"), source)
        assert torch.equal(net.fc_out.weight, state["fc_out.weight"])


def with_storage_location(path: Path, location: str) -> None:
    """Rewrite a CPU ``torch.save`` file so that its tensors say they were saved on ``location`` (e.g. cuda:0)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    old = b"X\x03\x00\x00\x00cpu"   # the pickled location string 'cpu'
    new = b"X" + len(location).to_bytes(4, "little") + location.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            archive.writestr(info, data)
    path.write_bytes(buffer.getvalue())


def test_a_checkpoint_saved_on_cuda_loads_on_cpu(tmp_path: Path) -> None:
    state = random_state(qlib_shapes("gru", LSTM_HP))
    path = tmp_path / "model_gru_csi300.pkl"
    torch.save(state, path)
    with_storage_location(path, "cuda:0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)          # what a load without map_location does here
    net = models.load_qlib_weights(models.build("gru"), path)
    assert torch.equal(net.rnn.weight_hh_l1, state["rnn.weight_hh_l1"])
    assert all(tensor.device.type == "cpu" for tensor in read_state_dict(path).values())


def test_our_checkpoint_form_is_recognised(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = models.build("gru", hidden_size=16)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": "gru", "hyperparameters": {"hidden_size": 16, "lr": 1e-3}, "state_dict": source.state_dict()},
               path)
    assert read_state_dict(path).keys() == source.state_dict().keys()
    net = models.load_qlib_weights(models.build("gru", hidden_size=16), path)
    assert torch.equal(net.fc_out.weight, source.fc_out.weight)


def test_files_that_are_not_state_dicts_are_refused(tmp_path: Path) -> None:
    pickled_module = tmp_path / "module.pkl"
    torch.save(nn.Linear(2, 2), pickled_module)
    with pytest.raises(ValueError, match=r"module.pkl: not a torch state_dict that loads with weights_only=True"):
        read_state_dict(pickled_module)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pkl: not a torch state_dict"):
        read_state_dict(garbage)
    a_list = tmp_path / "list.pkl"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(ValueError, match="list.pkl: expected a state_dict"):
        read_state_dict(a_list)
    with pytest.raises(ValueError, match="entry 'step' is a int, not a tensor"):
        read_state_dict({"weight": torch.zeros(1), "step": 3})
    with pytest.raises(FileNotFoundError, match="no weights file at"):
        read_state_dict(tmp_path / "absent.pkl")
