"""GPU speed, side by side in one run: per-model epoch time (Qlib's classes vs ours eager, with CUDA graphs, with
graphs and amp) with loss curves, the steps/s of 1, 4 and 8 concurrent trials, and a short search's epochs/s
with the share of time the GPU was busy.

On a CUDA machine (the lent H200: ``../shared/gpu/README.md``; carry ``.gpu`` with concepts.csv copied into it):

    bash .gpu/setup.sh && export PYTHONPATH=/tmp/site:$PWD ALPHATUNE_CACHE=/tmp/atcache PYTHONUNBUFFERED=1
    python3 benchmarks/bench_gpu.py --source /tmp/cn_trim --out $OUT --no-record
    # here, afterwards: python benchmarks/bench_gpu.py --render-from FILES_AT/bench_gpu.json

* **Epochs** (CSI300, train 2016, valid 2017-H1; Qlib's Alpha360 defaults; ``--epochs`` per side): Qlib's model
  class with ``GPU=0`` (through ``.gpu/qlib_gpu_side.py``), then ours from Qlib's initial weights (GATs, HIST and
  IGMTF from one fresh Qlib LSTM base on both sides) four times: eager float32 (no CUDA graphs, no TF32), CUDA
  graphs in strict float32, CUDA graphs with TF32 (the CUDA default), CUDA graphs with amp. Seconds per epoch
  are the mean over the epochs after the first (the first includes cuDNN's and the graphs' set-up), set-up
  before the first epoch excluded on both sides; Qlib's epoch re-scores the training set, ours does not (the
  trainer's default). Targets: 3x Qlib for LSTM, GRU, TCN, Transformer and Localformer, 5x for GATs, HIST and
  IGMTF, in float32.
* **Concurrent trials**: 1, 4 and 8 processes, each a bare trainer fitting Qlib's LSTM (graphs and TF32 as a
  search's trials have them), started together after a warm-up epoch; training steps/s over all of them (an
  epoch's validation pass included), the GPU's busy share, and whether CUDA MPS ran.
* **Search**: ``alphatune search run`` of the shipped LSTM space (``--search-samples`` trials, fractional GPUs),
  epochs/s over the whole search (Ray's start excluded), the most trials that ran at once against the slots,
  and the GPU's busy share (``nvidia-smi`` sampled every 0.2 s).

On a CPU machine it runs a reduced version on two weeks of the embedded data (all cores; no Qlib side: ``bench_models.py`` compares
with Qlib on a CPU; the static steps run eagerly; 1 and 2 processes; a 4-trial search) and says that the GPU
figures need a GPU. Results go to ``--out`` (``bench_gpu.json``, ``bench_gpu.md``) after every part, and to
docs/benchmarks.md unless ``--no-record``.

    python benchmarks/bench_gpu.py [--parts models concurrency search] [--models lstm gats ...] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alphatune import datasets, models  # noqa: E402
from benchmarks import report  # noqa: E402

MODELS = ("lstm", "gru", "tcn", "transformer", "localformer", "gats", "hist", "igmtf")
TARGET = {"lstm": 3, "gru": 3, "tcn": 3, "transformer": 3, "localformer": 3, "gats": 5, "hist": 5, "igmtf": 5}
PARTS = ("models", "concurrency", "search")
# Ours, each from the same initial weights: name -> training options (graphs/tf32 only matter on CUDA).
VARIANTS = {"eager": {"graphs": False, "tf32": False}, "graphs_strict": {"graphs": True, "tf32": False},
            "graphs": {"graphs": True, "tf32": True}, "graphs_amp": {"graphs": True, "tf32": True, "amp": True}}
CPU_VARIANTS = ("eager", "graphs_strict", "graphs_amp")
SEGMENTS = {"train": ("2016-01-01", "2016-12-31"), "valid": ("2017-01-01", "2017-06-30"),
            "test": ("2017-07-01", "2017-12-31")}
CPU_SEGMENTS = {"train": ("2018-12-03", "2018-12-14"), "valid": ("2019-01-02", "2019-01-15"),
                "test": ("2019-03-01", "2019-03-29")}  # of the embedded data: two weeks to train on
CONCEPTS = (ROOT / ".gpu" / "concepts.csv", ROOT.parent / "shared" / "data" / "csi300_2017_2019_mit" / "concepts.csv")
RESULTS = ROOT / "benchmarks" / "results"


def log(message: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- GPU busy

class GpuBusy:
    """While in its ``with`` block, samples the GPU's utilization (``nvidia-smi``, every 0.2 s); ``share`` is the
    mean busy share (0..1), ``None`` without CUDA or ``nvidia-smi``, or when no sample arrived."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.process: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "GpuBusy":
        smi = shutil.which("nvidia-smi")
        if torch.cuda.is_available() and smi:
            self.process = subprocess.Popen([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                             "-lms", "200", "-i", "0"], stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.samples.append(float(line.strip()) / 100)
            except ValueError:
                pass

    def __exit__(self, *_: Any) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.thread.join(timeout=10)

    @property
    def share(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def mps_running() -> bool | None:
    """Whether a CUDA MPS daemon serves this user (``None`` without CUDA)."""
    from alphatune.search.cluster import mps_pipe
    return (mps_pipe() is not None) if torch.cuda.is_available() else None


# ---------------------------------------------------------------------------------------------------- models

def after_first(epochs: list[dict[str, Any]]) -> float:
    """Mean seconds of the epochs after the first (the first, when it is the only one)."""
    timed = epochs[1:] or epochs
    return statistics.fmean(epoch["seconds"] for epoch in timed)


def models_part(ds: Any, scratch: Path, args: argparse.Namespace, results: dict[str, Any],
                save: Any) -> None:
    """Per model: Qlib's class (when ``args.qlib``), then ours in every variant, from the same initial weights."""
    from benchmarks.bench_models import run_ours, run_qlib
    from benchmarks._qlib_bridge import export_dataset, run_qlib_side, write_hist_files
    device = "cuda" if torch.cuda.is_available() else "cpu"
    variants = list(VARIANTS) if device == "cuda" else list(CPU_VARIANTS)
    if "graphs_amp" in variants and device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        variants.remove("graphs_amp")  # the trainer would ignore amp here: not a measurement of amp
    base: Path | None = None
    hist_files = (scratch / "none", scratch / "none")  # HIST is skipped below without a concept matrix
    if args.qlib:
        export_dataset(ds, scratch / "data")
        if ds.concepts is not None:
            hist_files = write_hist_files(ds.instruments, ds.concepts, scratch)
        base = scratch / "base_lstm.pt"
        run_qlib_side("base", "--out-file", str(base), "--seed", str(args.seed), gpu=device == "cuda")
    table = results.setdefault("models", {})
    for name in args.models:
        if name == "hist" and ds.concepts is None:
            table[name] = {"error": "the dataset has no concept matrix (give --concepts)"}
            continue
        log(f"{name}: {'Qlib, ' if args.qlib else ''}ours {', '.join(variants)}")
        row: dict[str, Any] = {"rows": {segment: len(ds.segment(segment).labels) for segment in ("train", "valid")}}
        try:
            if args.qlib:
                row["qlib"] = run_qlib(name, scratch / "data", scratch, args, base, hist_files, gpu=device == "cuda")
                init = scratch / f"init_{name}.pt"
            else:
                init = scratch / f"init_{name}.pt"
                torch.save(models.initial_network(models.get_spec(name).hyperparameters({"seed": args.seed}))
                           .state_dict(), init)
            for variant in variants:
                row[variant] = run_ours(name, ds, init, base, args, device=device, **VARIANTS[variant])
        except (SystemExit, Exception) as error:  # one model's failure is its row's, not the run's
            row = {"error": str(error).strip().splitlines()[-1][:300] if str(error).strip() else repr(error)}
            log(f"{name}: FAILED {row['error']}")
        table[name] = row
        save()


# ---------------------------------------------------------------------------------------------------- trials

def _trial_process(data_dir: str, model: str, device: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    """One bare trainer: a warm-up epoch, then (after ``go``) epochs until ``seconds`` have passed."""
    torch.set_num_threads(1)
    ds = datasets.load(data_dir)
    hp = models.get_spec(model).hyperparameters({"n_epochs": 10_000, "early_stop": 10_000, "seed": 0})
    trainer = models.Trainer(models.initial_network(hp), models.train_config(hp, device=device), hp)
    clock: dict[str, float] = {}
    epochs = 0

    def after_epoch(_: models.EpochMetrics, __: models.Trainer) -> bool:
        nonlocal epochs
        if "go" not in clock:
            ready.set()
            go.wait()
            clock["go"] = time.perf_counter()
            return False
        epochs += 1
        return time.perf_counter() - clock["go"] >= seconds

    trainer.fit(ds, callback=after_epoch)
    rows = len(ds.segment("train").labels)
    out.put({"epochs": epochs, "seconds": time.perf_counter() - clock["go"],
             "steps_per_epoch": rows // min(hp.batch_size, rows)})


def concurrency_part(data_dir: Path, args: argparse.Namespace, results: dict[str, Any], save: Any) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    context = multiprocessing.get_context("spawn")  # CUDA in children needs spawn
    rows = results.setdefault("concurrency", {"model": args.concurrency_model, "mps": mps_running(), "runs": []})
    for count in args.processes:
        log(f"{count} concurrent trial(s), {args.concurrency_seconds:g} s")
        ready = [context.Event() for _ in range(count)]
        go, out = context.Event(), context.Queue()
        workers = [context.Process(target=_trial_process, args=(str(data_dir), args.concurrency_model, device,
                                                                args.concurrency_seconds, ready[i], go, out))
                   for i in range(count)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 600
        while not all(event.is_set() for event in ready):  # a process that dies is an error at once, not a hang
            dead = [worker.exitcode for worker in workers if worker.exitcode is not None]
            if dead or time.monotonic() > deadline:
                for worker in workers:
                    worker.kill()
                raise SystemExit(f"a trial process {'exited ' + str(dead[0]) if dead else 'took 600 s'} "
                                 "before its warm-up epoch ended (its traceback is above)")
            time.sleep(0.2)
        with GpuBusy() as busy:
            go.set()
            each = [out.get(timeout=args.concurrency_seconds + 600) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        steps = sum(r["epochs"] * r["steps_per_epoch"] for r in each)
        wall = max(r["seconds"] for r in each)
        rows["runs"].append({"processes": count, "steps_per_second": steps / wall,
                             "epochs_per_second": sum(r["epochs"] for r in each) / wall, "busy": busy.share,
                             "each": each})
        save()


# ---------------------------------------------------------------------------------------------------- search

def peak_running(trials: list[Any]) -> int:
    """The most trials whose [start, last report] intervals overlap."""
    events = []
    for trial in trials:
        by_worker: dict[Any, list[dict[str, Any]]] = {}
        for row in trial.results:
            by_worker.setdefault(row.get("started_at"), []).append(row)
        for started, rows in by_worker.items():
            events += [(started, 1), (max(row["reported_at"] for row in rows), -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):
        running += step
        peak = max(peak, running)
    return peak


def search_part(data_dir: Path, scratch: Path, args: argparse.Namespace, results: dict[str, Any],
                save: Any) -> None:
    import ray
    from alphatune.search import cluster, driver
    from alphatune.search.ledger import read_ledger
    from alphatune.search.options import SearchOptions
    cuda = torch.cuda.is_available()
    options = SearchOptions(models=["lstm"], confirm=0, data=str(data_dir), samples=args.search_samples,
                            max_epochs=args.search_epochs, cpus_per_trial=args.search_cpus_per_trial,
                            gpus_per_trial=args.search_gpus_per_trial if cuda else 0.0, seed=args.seed,
                            storage_path=str(scratch / "runs"), name="bench-gpu", progress_seconds=30.0)
    log(f"search: {options.samples} trials, {options.max_epochs} epochs at most, "
        f"{options.gpus_per_trial:g} GPU / {options.cpus_per_trial:g} CPU per trial")
    cluster.start_ray()
    try:
        slots, plan = cluster.slot_plan(options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent)
        with GpuBusy() as busy:
            started = time.perf_counter()
            driver.run(options, sys.stderr)
            wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    trials = read_ledger(options.run_dir("lstm"))
    epochs = sum(len(trial.epochs()) for trial in trials)
    bare = results.get("concurrency", {}).get("runs", [])
    results["search"] = {"samples": options.samples, "max_epochs": options.max_epochs,
                         "gpus_per_trial": options.gpus_per_trial, "cpus_per_trial": options.cpus_per_trial,
                         "trials": len(trials), "epochs": epochs, "seconds": wall, "epochs_per_second": epochs / wall,
                         "slots": slots, "plan": plan, "peak_running": peak_running(trials), "busy": busy.share,
                         "mps": mps_running(),
                         "bare_epochs_per_second": bare[0]["epochs_per_second"] if bare else None}
    save()


# ---------------------------------------------------------------------------------------------------- report

def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def share(value: float | None, cuda: bool) -> str:
    return f"{value:.0%}" if value is not None else "not measured (no nvidia-smi)" if cuda else "no GPU"


MPS = {None: "no GPU", True: "CUDA MPS on", False: "CUDA MPS off"}


def models_section(results: dict[str, Any]) -> list[str]:
    table = results.get("models", {})
    if not table:
        return []
    cuda = results["device"] == "cuda"
    variants = [v for v in VARIANTS if any(v in row for row in table.values())]
    labels = {"eager": "eager fp32", "graphs_strict": "graphs fp32" if cuda else "static steps fp32 (eager)",
              "graphs": "graphs fp32 + TF32 (default)", "graphs_amp": "graphs + amp" if cuda else "static + amp"}
    has_qlib = any("qlib" in row for row in table.values())
    rows, curves = [], []
    for name, row in table.items():
        if "error" in row:
            rows.append([name, f"error: {row['error']}"] + ["-"] * (len(variants) + has_qlib))
            continue
        seconds = {v: after_first(row[v]["epochs"]) for v in variants if v in row}
        cells = [name, f"{row['rows']['train']:,} / {row['rows']['valid']:,}"]
        if has_qlib:
            qlib = after_first(row["qlib"]["epochs"])
            cells.append(f"{qlib:.3f}")
            cells += [f"{seconds[v]:.3f} (**{qlib / seconds[v]:.1f}×**)" if v in seconds else "-" for v in variants]
            strict = "graphs_strict" if "graphs_strict" in seconds else "eager"
            cells.append(f"{TARGET[name]}×: " + ("met" if qlib / seconds[strict] >= TARGET[name] else "**not met**"))
        else:
            cells += [f"{seconds[v]:.3f}" if v in seconds else "-" for v in variants]
        rows.append(cells)
        sides = (["qlib"] if "qlib" in row else []) + [v for v in variants if v in row]
        for epoch in range(len(row[variants[0]]["epochs"])):
            curves.append([name, epoch + 1, " / ".join(fmt(row[side]["epochs"][epoch]["valid_loss"], 4)
                                                       if epoch < len(row[side]["epochs"]) else "-"
                                                       for side in sides)])
    header = ["model", "rows train / valid"] + (["Qlib s/epoch"] if has_qlib else []) + [
        f"ours {labels[v]} s/epoch" + (" (speed-up)" if has_qlib else "") for v in variants] + (
        ["target (graphs fp32)"] if has_qlib else [])
    sides = (["Qlib"] if has_qlib else []) + [labels[v] for v in variants]
    return ["### Epoch time per model", report.markdown_table(header, rows),
            f"Validation loss per epoch ({' / '.join(sides)}; ours from the same initial weights and the same "
            "shuffling" + ("; Qlib from those weights with its own shuffling, so Qlib against ours differs by "
                           "seed noise" if has_qlib else "") + "):",
            report.markdown_table(["model", "epoch", "valid loss"], curves)]


def concurrency_section(results: dict[str, Any]) -> list[str]:
    part = results.get("concurrency")
    if not part or not part["runs"]:
        return []
    one = part["runs"][0]["steps_per_second"]
    cuda = results["device"] == "cuda"
    rows = [[r["processes"], f"{r['steps_per_second']:.1f}", f"{r['steps_per_second'] / one:.2f}×",
             f"{r['epochs_per_second']:.2f}", share(r["busy"], cuda)] for r in part["runs"]]
    return [f"### Concurrent trials ({part['model']}, one bare trainer per process; {MPS[part['mps']]})",
            report.markdown_table(["processes", "training steps/s, all together", "vs one", "epochs/s",
                                   "GPU busy"], rows)]


def search_section(results: dict[str, Any]) -> list[str]:
    part = results.get("search")
    if not part:
        return []
    rows = [["trials / epochs trained", f"{part['trials']} / {part['epochs']}"],
            ["wall seconds (Ray's start excluded)", f"{part['seconds']:.1f}"],
            ["epochs/s over the search", f"**{part['epochs_per_second']:.2f}**"],
            ["one bare trainer of Qlib's LSTM, epochs/s (above)", fmt(part["bare_epochs_per_second"], 2)],
            ["most trials running at once / slots", f"{part['peak_running']} / {part['slots']}"],
            ["GPU busy", share(part["busy"], results["device"] == "cuda")]]
    return [f"### Search: the shipped LSTM space, {part['samples']} trials, at most {part['max_epochs']} epochs, "
            f"{part['gpus_per_trial']:g} GPU and {part['cpus_per_trial']:g} CPU per trial ({MPS[part['mps']]})",
            report.markdown_table(["quantity", "measured"], rows), "Slot plan: " + "; ".join(part["plan"])]


def render(results: dict[str, Any]) -> str:
    cuda = results["device"] == "cuda"
    spans = ", ".join(f"{name} {a} .. {b}" for name, (a, b) in results["segments"].items() if name != "test")
    intro = (f"Data: {results['source']} ({spans}); Qlib's Alpha360 hyperparameters; {results['epochs']} epochs "
             f"per side, seed {results['seed']}, {results.get('threads', 1)} torch thread(s) per model fit, one per concurrent trial.")
    if not cuda:
        intro = ("**Reduced version on a CPU: the GPU figures (Qlib on the GPU, CUDA graphs, TF32, amp on CUDA, "
                 "GPU busy share, MPS) need a GPU; run this script on one.** On a CPU the static steps run "
                 "eagerly and there is no Qlib side (`bench_models.py` compares with Qlib on a CPU). " + intro)
    return "\n\n".join([intro, *models_section(results), *concurrency_section(results), *search_section(results)])


def record(results: dict[str, Any], out: Path | None, write_doc: bool) -> None:
    text = render(results)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gpu.json").write_text(json.dumps(results, indent=1))
        (out / "bench_gpu.md").write_text(text + "\n")
    if write_doc:
        cuda = results["device"] == "cuda"
        report.write_section("bench_gpu" if cuda else "bench_gpu_cpu",
                             "GPU speed" if cuda else "GPU speed: the reduced version on a CPU", text,
                             measured=f"{results['measured_utc']}; {results['machine']}",
                             command="python benchmarks/bench_gpu.py")


# ---------------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--source", default="/tmp/cn_trim" if cuda else "embedded",
                        help="a Qlib data directory, or 'embedded' (default: /tmp/cn_trim on CUDA, else embedded)")
    parser.add_argument("--concepts", type=Path, default=next((path for path in CONCEPTS if path.is_file()), None),
                        help="HIST's concepts table (default: .gpu/concepts.csv or the shared CSI300 one)")
    parser.add_argument("--epochs", type=int, default=3 if cuda else 2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qlib", action=argparse.BooleanOptionalAction, default=cuda,
                        help="measure Qlib's classes too (default: on CUDA only)")
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 4, 8] if cuda else [1, 2])
    parser.add_argument("--concurrency-model", default="lstm", choices=MODELS)
    parser.add_argument("--concurrency-seconds", type=float, default=15.0 if cuda else 5.0)
    parser.add_argument("--search-samples", type=int, default=32 if cuda else 4)
    parser.add_argument("--search-epochs", type=int, default=6 if cuda else 2)
    parser.add_argument("--search-gpus-per-trial", type=float, default=0.125)
    parser.add_argument("--search-cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--out", type=Path, help="also write bench_gpu.json and bench_gpu.md here, after every part")
    parser.add_argument("--no-record", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--render-from", type=Path, help="measure nothing: render (and record) a bench_gpu.json")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP + " (every part, LSTM only, on "
                        "this machine's device)")
    args = parser.parse_args(argv)
    if args.smoke:
        return main(["--models", "lstm", "--source", "embedded", "--epochs", "1", "--no-qlib", "--processes", "1",
                     "--concurrency-seconds", "1", "--search-samples", "2", "--search-epochs", "1", "--no-record"])
    if args.render_from:
        results = json.loads(args.render_from.read_text())
        record(results, None, not args.no_record)
        print(render(results))
        return 0
    args.threads = 1 if cuda else os.cpu_count() or 1  # bench_models' sides read it
    torch.set_num_threads(args.threads)
    embedded = args.source == "embedded"
    segments = CPU_SEGMENTS if embedded else SEGMENTS
    results: dict[str, Any] = {"device": "cuda" if cuda else "cpu", "machine": report.machine(),
                               "measured_utc": report.utc_now(), "source": args.source, "segments": segments,
                               "epochs": args.epochs, "seed": args.seed, "threads": args.threads}
    save = lambda: record(results, args.out, not args.no_record)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        scratch = Path(tmp)
        log(f"preparing {args.source}")
        spec = datasets.DataSpec(**({} if embedded else {"source": args.source}), **segments,
                                 concepts=None if embedded or args.concepts is None else str(args.concepts))
        ds = spec.open(progress=False)
        datasets.save(ds, scratch / "dataset")
        if "models" in args.parts:
            models_part(ds, scratch, args, results, save)
        if "concurrency" in args.parts:
            concurrency_part(scratch / "dataset", args, results, save)
        if "search" in args.parts:
            search_part(scratch / "dataset", scratch, args, results, save)
    save()
    print(render(results))
    return 0 if all("error" not in row for row in results.get("models", {}).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
