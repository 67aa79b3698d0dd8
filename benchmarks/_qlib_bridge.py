"""Our side of the bridge to Qlib: find the Qlib virtualenv, run ``qlib_side.py`` in it, exchange files.

Qlib lives in a virtualenv of its own (``benchmarks/qlib_env.sh``; ``$QLIB_VENV``, default ``/work/qlib-venv``)
because it pins an older pyarrow. Nothing here imports Qlib: data crosses as ``.npy`` files in a directory,
one set per segment (``<segment>_{features,labels,dates,instruments}.npy``) plus ``feature_names.json``, the
format ``qlib_side.read_frame`` / ``write_frame`` read and write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
QLIB_SIDE = Path(__file__).resolve().parent / "qlib_side.py"
CN_CSI300 = REPO.parent / "shared" / "data" / "cn_csi300"
CONCEPTS_CSV = REPO.parent / "shared" / "data" / "csi300_2017_2019_mit" / "concepts.csv"
SEGMENTS = ("train", "valid", "test")


def qlib_python() -> Path:
    """The Qlib virtualenv's interpreter; a clear error says how to create it when it is missing."""
    venv = Path(os.environ.get("QLIB_VENV", "/work/qlib-venv"))
    python = venv / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"no Qlib virtualenv at {venv} (set QLIB_VENV or run: bash benchmarks/qlib_env.sh)")
    return python


def qlib_gpu_side() -> Path:
    """``.gpu/qlib_gpu_side.py`` (``bash ../shared/gpu/pack.sh`` puts it there): runs ``qlib_side.py`` with Qlib's
    models on the GPU (``GPU=0``) in this interpreter, where Qlib is installed beside the project (the GPU
    machine's ``/tmp/site``)."""
    path = REPO / ".gpu" / "qlib_gpu_side.py"
    if not path.is_file():
        raise SystemExit(f"no {path}: build it with `bash ../shared/gpu/pack.sh` and carry .gpu to the GPU machine")
    return path


def run_qlib_side(*args: str, timeout: float | None = None, gpu: bool = False) -> float:
    """Run ``qlib_side.py <args>`` in the Qlib virtualenv (``gpu``: through ``qlib_gpu_side``, Qlib's models on
    cuda:0, in this interpreter); return its wall-clock seconds.

    Qlib's log goes to this process's stderr only when the command fails (the last 40 lines, then SystemExit).
    """
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    command = [str(qlib_python()), str(QLIB_SIDE)]
    if gpu:
        command = [sys.executable, str(qlib_gpu_side())]
        env["ALPHATUNE_PROJECT"] = str(REPO)
    started = time.perf_counter()
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise SystemExit(f"qlib_side.py {args[0]} failed (exit {done.returncode}):\n{tail}")
    return seconds


@dataclass
class SegmentFiles:
    """One segment read back from the exchange format."""

    features: np.ndarray     # float32 [rows, 360]
    labels: np.ndarray       # float32 [rows]
    index: pd.MultiIndex     # (datetime, instrument)


def export_dataset(ds: object, out: Path) -> None:
    """Write every segment of a ``PreparedDataset`` in the exchange format (the frames models train on)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "feature_names.json").write_text(json.dumps(list(ds.feature_names)))
    for name in SEGMENTS:
        seg = ds.segment(name)
        np.save(out / f"{name}_features.npy", np.ascontiguousarray(seg.features, dtype=np.float32))
        np.save(out / f"{name}_labels.npy", np.asarray(seg.labels, dtype=np.float32))
        np.save(out / f"{name}_dates.npy", seg.row_dates().astype("datetime64[ns]"))
        np.save(out / f"{name}_instruments.npy", np.asarray(seg.instruments[seg.instrument_index], dtype=str))


def read_segment(directory: Path, name: str) -> SegmentFiles:
    """Read segment ``name`` of the exchange format in ``directory``."""
    index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(np.load(directory / f"{name}_dates.npy")),
         np.load(directory / f"{name}_instruments.npy").astype(str)], names=["datetime", "instrument"])
    return SegmentFiles(np.load(directory / f"{name}_features.npy"), np.load(directory / f"{name}_labels.npy"),
                        index)


def write_hist_files(instruments: np.ndarray, matrix: np.ndarray, out: Path) -> tuple[Path, Path]:
    """Qlib HIST's two inputs: ``stock2concept.npy`` (the matrix) and ``stock_index.npy`` (pickled symbol → row)."""
    stock2concept, stock_index = out / "stock2concept.npy", out / "stock_index.npy"
    np.save(stock2concept, matrix)
    np.save(stock_index, np.array({str(symbol): row for row, symbol in enumerate(instruments)}, dtype=object),
            allow_pickle=True)
    return stock2concept, stock_index


def python_banner() -> str:
    """Which interpreter runs our side, for the report notes."""
    return f"ours: {sys.executable}; Qlib: {qlib_python()}"
