"""Qlib's side of the yardstick benchmarks. Runs INSIDE the Qlib virtualenv (benchmarks/qlib_env.sh), never in ours.

It imports nothing from this project: the project's scripts call it as a subprocess and exchange plain files
(``.npy``, ``.pt``, ``.json``) through a temporary directory. Four commands:

``alpha360``  build Qlib's ``Alpha360`` handler with the processors of Qlib's Alpha360 YAMLs and write every
              segment's features, labels and (datetime, instrument) index; train/valid are the learn frame
              (DropnaLabel + CSRankNorm), test the infer frame with the raw label, as Qlib's models see them.
``networks``  build Qlib's eight bare networks with the Alpha360 defaults, perturb their parameters (so that a
              wrong mapping of a weight-norm gain or a bias cannot hide behind default values), save each
              ``state_dict`` with fixed inputs (a day batch, a concept matrix for HIST, a train-day memory for
              IGMTF) and Qlib's predictions in eval mode.
``base``      save a freshly initialised ``LSTMModel`` state_dict, the ``model_path`` of GATs, HIST and IGMTF.
``fit``       fit one of Qlib's eight model classes (``GPU=-1``) for a few epochs on a prepared dataset written
              by ``benchmarks/_qlib_bridge.py`` (wrapped in Qlib's own ``StaticDataLoader`` / ``DatasetH``, no
              processors), timing every ``train_epoch`` / ``test_epoch`` / IGMTF memory rebuild.

Local patches, applied only here and only around Qlib's HIST: ``torch.get_device`` returns the tensor's device
instead of -1 on CPU (Qlib's ``HISTModel.forward`` builds ``torch.device(-1)`` and fails otherwise), and the
``stock_index`` Series handed to ``HIST.train_epoch`` / ``test_epoch`` is replaced by a writable copy (under
pandas 3 ``Series.values`` is read-only and Qlib writes into it). Neither changes what Qlib computes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a throwaway file store for GRU's recorder (see fit)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

SEGMENTS = ("train", "valid", "test")
MODELS = ("lstm", "gru", "transformer", "localformer", "tcn", "gats", "hist", "igmtf")


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------

def init_qlib(provider_uri: str, kernels: int) -> None:
    """Initialise Qlib on a local data directory, quietly, with ``kernels`` worker processes."""
    import qlib

    if not (Path(provider_uri) / "calendars" / "day.txt").is_file():
        raise SystemExit(f"qlib_side: {provider_uri} is not a Qlib data directory (no calendars/day.txt)")
    qlib.init(provider_uri=provider_uri, region="cn", kernels=kernels, logging_level="WARNING")


def write_frame(out: Path, segment: str, features: pd.DataFrame, label: pd.Series) -> None:
    """Write one segment as ``<segment>_{features,labels,dates,instruments}.npy`` (row order kept)."""
    index = features.index
    np.save(out / f"{segment}_features.npy", np.ascontiguousarray(features.to_numpy(dtype=np.float32)))
    np.save(out / f"{segment}_labels.npy", label.to_numpy(dtype=np.float32))
    np.save(out / f"{segment}_dates.npy", index.get_level_values("datetime").to_numpy(dtype="datetime64[ns]"))
    np.save(out / f"{segment}_instruments.npy", index.get_level_values("instrument").to_numpy(dtype=str))


def read_frame(data: Path, segment: str) -> pd.DataFrame:
    """Read a segment written by ``write_frame`` (or the bridge) back as a Qlib-style two-level-column frame."""
    features = np.load(data / f"{segment}_features.npy")
    labels = np.load(data / f"{segment}_labels.npy")
    index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(np.load(data / f"{segment}_dates.npy")), np.load(data / f"{segment}_instruments.npy")],
        names=["datetime", "instrument"])
    names = json.loads((data / "feature_names.json").read_text())
    if features.shape != (len(index), len(names)) or labels.shape != (len(index),):
        raise SystemExit(f"qlib_side: {data}/{segment}_*.npy disagree in shape: features {features.shape}, "
                         f"labels {labels.shape}, index {len(index)}, names {len(names)}")
    columns = pd.MultiIndex.from_tuples([("feature", name) for name in names] + [("label", "LABEL0")])
    return pd.DataFrame(np.column_stack([features, labels[:, None]]), index=index, columns=columns)


@contextlib.contextmanager
def cpu_safe_get_device() -> Iterator[None]:
    """Let Qlib's HIST run on CPU: ``torch.get_device`` answers the tensor's device instead of -1."""
    original = torch.get_device
    torch.get_device = lambda tensor: tensor.device
    try:
        yield
    finally:
        torch.get_device = original


# ----------------------------------------------------------------------------------------------------------------
# alpha360
# ----------------------------------------------------------------------------------------------------------------

def alpha360(args: argparse.Namespace) -> None:
    """Run Qlib's Alpha360 handler with the YAML processors; write each segment and the timings."""
    from qlib.contrib.data.handler import Alpha360
    from qlib.data.dataset import DatasetH
    from qlib.data.dataset.handler import DataHandlerLP

    out = Path(args.out)
    segments = {"train": tuple(args.train), "valid": tuple(args.valid), "test": tuple(args.test)}
    started = time.perf_counter()
    init_qlib(args.provider_uri, args.kernels)
    handler = Alpha360(
        instruments=args.market, start_time=args.train[0], end_time=args.test[1],
        fit_start_time=args.train[0], fit_end_time=args.train[1],
        infer_processors=[
            {"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature", "clip_outlier": True}},
            {"class": "Fillna", "kwargs": {"fields_group": "feature"}},
        ],
        learn_processors=[{"class": "DropnaLabel"},
                          {"class": "CSRankNorm", "kwargs": {"fields_group": "label"}}],
    )
    handler_seconds = time.perf_counter() - started
    dataset = DatasetH(handler, segments=segments)
    for segment in SEGMENTS:
        key = DataHandlerLP.DK_I if segment == "test" else DataHandlerLP.DK_L
        frame = dataset.prepare(segment, col_set=["feature", "label"], data_key=key)
        write_frame(out, segment, frame["feature"], frame["label"].iloc[:, 0])
    names = list(dataset.prepare("train", col_set="feature", data_key=DataHandlerLP.DK_L).columns)
    (out / "feature_names.json").write_text(json.dumps(names))
    (out / "timing.json").write_text(json.dumps({
        "handler_seconds": handler_seconds, "total_seconds": time.perf_counter() - started,
        "kernels": args.kernels}))


# ----------------------------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------------------------

def build_network(name: str) -> torch.nn.Module:
    """Qlib's bare network for ``name`` with the Alpha360 YAML hyperparameters."""
    from qlib.contrib.model import (pytorch_gats, pytorch_gru, pytorch_hist, pytorch_igmtf, pytorch_localformer,
                                    pytorch_lstm, pytorch_tcn, pytorch_transformer)

    cpu = torch.device("cpu")
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "lstm": lambda: pytorch_lstm.LSTMModel(d_feat=6, hidden_size=64, num_layers=2, dropout=0.0),
        "gru": lambda: pytorch_gru.GRUModel(d_feat=6, hidden_size=64, num_layers=2, dropout=0.0),
        "transformer": lambda: pytorch_transformer.Transformer(6, 64, 2, 2, 0.0, cpu),
        "localformer": lambda: pytorch_localformer.Transformer(6, 64, 2, 2, 0.0, cpu),
        "tcn": lambda: pytorch_tcn.TCNModel(num_input=6, output_size=1, num_channels=[128] * 5, kernel_size=3,
                                            dropout=0.5),
        "gats": lambda: pytorch_gats.GATModel(d_feat=6, hidden_size=64, num_layers=2, dropout=0.7,
                                              base_model="LSTM"),
        "hist": lambda: pytorch_hist.HISTModel(d_feat=6, hidden_size=64, num_layers=2, dropout=0.0,
                                               base_model="LSTM"),
        "igmtf": lambda: pytorch_igmtf.IGMTFModel(d_feat=6, hidden_size=64, num_layers=2, dropout=0.0,
                                                  base_model="LSTM"),
    }
    return builders[name]()


def perturb_(net: torch.nn.Module, generator: torch.Generator, scale: float = 0.2) -> None:
    """Multiply every parameter element by ``1 + scale * N(0, 1)`` and shift it by ``0.02 * N(0, 1)``.

    Default initialisations hide mapping mistakes (a weight-norm gain equal to ``|v|``, zero biases); perturbed
    weights do not. Buffers (the positional encoding) are left alone.
    """
    with torch.no_grad():
        for parameter in net.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            shift = torch.randn(parameter.shape, generator=generator)
            parameter.mul_(1 + scale * noise).add_(0.02 * shift)


def day_batch(generator: torch.Generator, rows: int) -> torch.Tensor:
    """A processed-looking day batch: N(0, 1) features clipped to ±3, two all-zero rows (suspended stocks)."""
    x = torch.randn(rows, 360, generator=generator).clamp_(-3, 3)
    x[:2] = 0.0
    return x


def networks(args: argparse.Namespace) -> None:
    """Save every Qlib network's perturbed state_dict, fixed inputs and Qlib's eval-mode predictions."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    generator = torch.Generator().manual_seed(args.seed)
    x = day_batch(generator, args.rows)
    np.save(out / "x.npy", x.numpy())

    # HIST: a 0/1 stock -> concept matrix; the first 5 stocks have no concept, the last 4 concepts no stock.
    concepts = (torch.rand(args.rows, args.concepts, generator=generator) < 0.08).float()
    concepts[:5] = 0.0
    concepts[:, -4:] = 0.0
    np.save(out / "concepts.npy", concepts.numpy())

    # IGMTF: memory days of varying size, encoded by Qlib's own network (get_hidden=True) below.
    sizes = torch.randint(args.rows // 2, args.rows + 1, (args.memory_days,), generator=generator)
    memory_x = torch.cat([day_batch(generator, int(n)) for n in sizes])
    np.save(out / "memory_x.npy", memory_x.numpy())
    np.save(out / "memory_offsets.npy", np.concatenate([[0], np.cumsum(sizes.numpy())]).astype(np.int64))

    summary: dict[str, Any] = {}
    for name in args.models:
        torch.manual_seed(args.seed)
        net = build_network(name)
        # Each model's own perturbation stream: its weights do not depend on which other models are checked.
        perturb_(net, torch.Generator().manual_seed(args.seed * 100 + MODELS.index(name)))
        net.eval()
        with torch.no_grad():
            if name == "hist":
                with cpu_safe_get_device():
                    pred = net(x, concepts)
            elif name == "igmtf":
                offsets = np.load(out / "memory_offsets.npy")
                hidden = [net(memory_x[a:b], get_hidden=True) for a, b in zip(offsets[:-1], offsets[1:])]
                memory = np.empty(len(hidden), dtype=object)
                memory[:] = hidden
                day_means = torch.cat([h.mean(dim=0, keepdim=True) for h in hidden])
                np.save(out / "igmtf_memory_hidden.npy", torch.cat(hidden).numpy())
                np.save(out / "igmtf_x_hidden.npy", net(x, get_hidden=True).numpy())
                pred = net(x, train_hidden=memory, train_hidden_day=day_means)
            else:
                pred = net(x)
        torch.save(net.state_dict(), out / f"{name}.pt")
        np.save(out / f"{name}_pred.npy", pred.numpy())
        summary[name] = {"qlib_class": f"{type(net).__module__}.{type(net).__name__}",
                         "parameters": sum(p.numel() for p in net.parameters()),
                         "pred_std": float(pred.std())}
    (out / "networks.json").write_text(json.dumps(summary, indent=1))


def base(args: argparse.Namespace) -> None:
    """Save a freshly initialised ``LSTMModel`` (6, 64, 2) state_dict: the GATs/HIST/IGMTF ``model_path``."""
    from qlib.contrib.model.pytorch_lstm import LSTMModel

    torch.manual_seed(args.seed)
    torch.save(LSTMModel(d_feat=6, hidden_size=64, num_layers=2, dropout=0.0).state_dict(), args.out_file)


# ----------------------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------------------

class _WritableValues:
    """Stands in for a pandas Series where Qlib's HIST only reads ``.values`` and writes into that array."""

    def __init__(self, series: pd.Series) -> None:
        self.values = np.array(series.to_numpy(), copy=True)


def build_model(name: str, hyperparameters: dict[str, Any], paths: dict[str, str]) -> Any:
    """Qlib's model class for ``name`` on CPU with the given (Alpha360 YAML) hyperparameters."""
    from qlib.contrib.model import (pytorch_gats, pytorch_gru, pytorch_hist, pytorch_igmtf, pytorch_localformer,
                                    pytorch_lstm, pytorch_tcn, pytorch_transformer)

    classes = {"lstm": pytorch_lstm.LSTM, "gru": pytorch_gru.GRU, "transformer": pytorch_transformer.TransformerModel,
               "localformer": pytorch_localformer.LocalformerModel, "tcn": pytorch_tcn.TCN,
               "gats": pytorch_gats.GATs, "hist": pytorch_hist.HIST, "igmtf": pytorch_igmtf.IGMTF}
    extra: dict[str, Any] = {}
    if name in ("gats", "hist", "igmtf"):
        extra["model_path"] = paths["model_path"]
    if name == "hist":
        extra.update(stock2concept=paths["stock2concept"], stock_index=paths["stock_index"])
    return classes[name](GPU=-1, **hyperparameters, **extra)


def network_of(model: Any) -> torch.nn.Module:
    """The bare network inside one of Qlib's model classes."""
    for attribute in ("lstm_model", "gru_model", "model", "tcn_model", "GAT_model", "HIST_model", "igmtf_model"):
        if isinstance(getattr(model, attribute, None), torch.nn.Module):
            return getattr(model, attribute)
    raise SystemExit(f"qlib_side: no network attribute found on {type(model).__name__}")


def instrument(model: Any, name: str, events: list[dict[str, Any]]) -> None:
    """Wrap the model's per-epoch methods so each call is timed and its return value kept, in call order."""
    def timed(method_name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if name == "hist" and method_name in ("train_epoch", "test_epoch"):
                args = (*args[:2], _WritableValues(args[2]))
            started, cpu_started = time.perf_counter(), time.process_time()
            with cpu_safe_get_device() if name == "hist" else contextlib.nullcontext():
                result = method(*args)
            events.append({"call": method_name, "seconds": time.perf_counter() - started,
                           "cpu_seconds": time.process_time() - cpu_started,
                           "result": [float(v) for v in result] if method_name == "test_epoch" else None})
            return result
        return call

    for method_name in ("get_train_hidden", "train_epoch", "test_epoch"):
        if hasattr(model, method_name):
            setattr(model, method_name, timed(method_name, getattr(model, method_name)))


def epochs_from(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Group the timed calls into epochs: [memory rebuild,] train pass, test on train, test on valid."""
    starter = "get_train_hidden" if name == "igmtf" else "train_epoch"
    epochs: list[list[dict[str, Any]]] = []
    for event in events:
        if event["call"] == starter:
            epochs.append([])
        if not epochs:
            raise SystemExit(f"qlib_side: {event['call']} ran before the first {starter}")
        epochs[-1].append(event)
    summary = []
    for calls in epochs:
        tests = [c for c in calls if c["call"] == "test_epoch"]
        if len(tests) != 2:
            raise SystemExit(f"qlib_side: expected 2 test_epoch calls per epoch, got {len(tests)}")
        summary.append({
            "seconds": sum(c["seconds"] for c in calls),
            "cpu_seconds": sum(c["cpu_seconds"] for c in calls),
            "train_pass_seconds": sum(c["seconds"] for c in calls if c["call"] == "train_epoch"),
            "memory_seconds": sum(c["seconds"] for c in calls if c["call"] == "get_train_hidden"),
            "rescore_train_seconds": tests[0]["seconds"], "valid_seconds": tests[1]["seconds"],
            "train_loss": tests[0]["result"][0], "train_score": tests[0]["result"][1],
            "valid_loss": tests[1]["result"][0], "valid_score": tests[1]["result"][1]})
    return summary


def fit(args: argparse.Namespace) -> None:
    """Fit Qlib's model class for ``args.epochs`` epochs on the bridge's data; write timings and curves."""
    from qlib.data.dataset import DatasetH
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.data.dataset.loader import StaticDataLoader
    from qlib.workflow import R

    torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    init_qlib(args.provider_uri, kernels=1)
    frames = {segment: read_frame(data, segment) for segment in SEGMENTS}
    segments = {segment: (str(frame.index.get_level_values(0).min().date()),
                          str(frame.index.get_level_values(0).max().date())) for segment, frame in frames.items()}
    handler = DataHandlerLP(data_loader=StaticDataLoader(pd.concat(frames.values()).sort_index()))
    dataset = DatasetH(handler, segments=segments)

    hyperparameters = json.loads(args.hyperparameters)
    hyperparameters["n_epochs"] = args.epochs
    model = build_model(args.model, hyperparameters,
                        {"model_path": args.model_path, "stock2concept": args.stock2concept,
                         "stock_index": args.stock_index})
    if args.init_out:
        torch.save(network_of(model).state_dict(), args.init_out)
    events: list[dict[str, Any]] = []
    instrument(model, args.model, events)
    evals_result: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        # Qlib's GRU logs its curves to the active recorder at the end of fit: give it a throwaway mlflow store.
        recorder = (R.start(experiment_name="qlib_side_fit", uri=f"file:{scratch}/mlruns") if args.model == "gru"
                    else contextlib.nullcontext())
        with recorder:
            started = time.perf_counter()
            model.fit(dataset, evals_result=evals_result, save_path=f"{scratch}/model.pt")
            fit_seconds = time.perf_counter() - started
    (out / "fit.json").write_text(json.dumps({
        "model": args.model, "threads": torch.get_num_threads(), "fit_seconds": fit_seconds,
        "rows": {segment: len(frame) for segment, frame in frames.items()},
        "epochs": epochs_from(events, args.model), "evals_result": evals_result}, indent=1))


# ----------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    a = commands.add_parser("alpha360", help="Qlib's Alpha360 handler -> segment .npy files")
    a.add_argument("--provider-uri", required=True)
    a.add_argument("--market", default="csi300")
    for segment in SEGMENTS:
        a.add_argument(f"--{segment}", nargs=2, metavar=("START", "END"), required=True)
    a.add_argument("--kernels", type=int, default=2)
    a.add_argument("--out", required=True)

    n = commands.add_parser("networks", help="Qlib's 8 networks -> state_dicts, inputs, predictions")
    n.add_argument("--out", required=True)
    n.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--rows", type=int, default=300)
    n.add_argument("--concepts", type=int, default=40)
    n.add_argument("--memory-days", type=int, default=24)
    n.add_argument("--threads", type=int, default=2)

    b = commands.add_parser("base", help="a fresh LSTMModel state_dict for the GATs/HIST/IGMTF base")
    b.add_argument("--out-file", required=True)
    b.add_argument("--seed", type=int, default=0)

    f = commands.add_parser("fit", help="fit one Qlib model class, timing each epoch")
    f.add_argument("--model", required=True, choices=MODELS)
    f.add_argument("--data", required=True, help="directory written by benchmarks/_qlib_bridge.py")
    f.add_argument("--provider-uri", required=True, help="any Qlib data directory (qlib.init needs one)")
    f.add_argument("--hyperparameters", required=True, help="JSON dict of Qlib constructor arguments")
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--model-path", help="LSTM/GRU state_dict for the GATs/HIST/IGMTF base")
    f.add_argument("--stock2concept", help="HIST: .npy stocks x concepts")
    f.add_argument("--stock-index", help="HIST: .npy pickled dict symbol -> row")
    f.add_argument("--init-out", help="save the network's initial state_dict here before fitting")
    f.add_argument("--out", required=True)

    args = parser.parse_args(argv)
    if args.command == "base":
        Path(args.out_file).parent.mkdir(parents=True, exist_ok=True)
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    {"alpha360": alpha360, "networks": networks, "base": base, "fit": fit}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
