"""Per-model epoch time, ours vs Qlib's own implementation, measured side by side in one run, with loss curves.

For each model in turn (never both sides at once): Qlib's model class (pyqlib, ``GPU=-1``, in the Qlib
virtualenv via ``benchmarks/qlib_side.py fit``) is fitted for ``--epochs`` epochs on our prepared dataset,
wrapped in Qlib's own ``StaticDataLoader``/``DatasetH`` (the Alpha360 parity check shows that data equals
Qlib's handler output); then ours is fitted twice from the very same initial weights (Qlib's network's initial
state_dict, loaded with ``models.load_qlib_weights``): with the default ``eval_train=False`` and with
``eval_train=True``, which re-scores the training set every epoch as Qlib does (the like-for-like number), then a
third time with ``amp=True`` (bf16 autocast; opt-in, the trainer's default is full precision). The script refuses
to run on a CPU without oneDNN bf16 kernels, where the trainer would silently ignore ``amp``.
Hyperparameters and batch sizes are Qlib's Alpha360 YAML values from ``models.REGISTRY``; GATs, HIST and IGMTF
start both sides from the same freshly initialised Qlib ``LSTMModel`` state_dict; HIST's concepts come from
``csi300_2017_2019_mit/concepts.csv``, aligned to the dataset's instruments, the same matrix for both sides.

An epoch is timed on Qlib's side as the sum of its ``[get_train_hidden,] train_epoch, test_epoch(train),
test_epoch(valid)`` calls and on ours by the trainer (``EpochMetrics.seconds``): neither includes the one-off
set-up before the first epoch. CPU seconds (``time.process_time``, all threads of the process) are recorded
too, since wall time on a shared machine depends on the neighbours; ours' first-epoch CPU time includes our
set-up. Both processes use ``--threads`` torch threads. The 1-minute load average is recorded before and after
each model, so a reader sees how busy the shared machine was.

``--keep-from FILE`` (a ``--json`` file of an earlier run) fills the models not measured in this run from that
run; their rows say when they were measured and have no amp column if that run had none. ``--render-from FILE``
measures nothing and only re-renders a run's ``--json`` results (the rows keep their measurement times). The
recorded table's raw results are ``benchmarks/results/bench_models.json``.

    python benchmarks/bench_models.py [--models lstm gru ...] [--epochs 2] [--threads 1] [--no-record]
                                      [--json OUT.json] [--keep-from EARLIER.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alphatune import datasets  # noqa: E402
from alphatune import models  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks._qlib_bridge import (CN_CSI300, CONCEPTS_CSV, export_dataset, run_qlib_side,  # noqa: E402
                                     write_hist_files)

RESULTS_JSON = Path(__file__).resolve().parent / "results" / "bench_models.json"

# Cheapest first: the table is recorded after every model, so a run cut short still reports the ones done.
MODELS = ("lstm", "gru", "gats", "hist", "igmtf", "tcn", "transformer", "localformer")
TARGET = {"lstm": 2, "gru": 2, "transformer": 2, "localformer": 2, "tcn": 2, "gats": 5, "hist": 5, "igmtf": 5}


def qlib_hyperparameters(name: str, seed: int) -> dict[str, Any]:
    """Qlib's constructor arguments: the registry's Alpha360 defaults (Qlib ignores the ones it does not take)."""
    return {**models.REGISTRY[name].defaults, "seed": seed}


def run_qlib(name: str, data: Path, scratch: Path, args: argparse.Namespace, base: Path,
             hist_files: tuple[Path, Path], gpu: bool = False) -> dict[str, Any]:
    """Fit Qlib's model class (``gpu``: on cuda:0); its initial network weights are left in
    ``scratch/init_<name>.pt``."""
    out = scratch / f"qlib_{name}"
    wall = run_qlib_side(
        "fit", "--model", name, "--data", str(data), "--provider-uri", str(args.source),
        "--hyperparameters", json.dumps(qlib_hyperparameters(name, args.seed)), "--epochs", str(args.epochs),
        "--threads", str(args.threads), "--model-path", str(base), "--stock2concept", str(hist_files[0]),
        "--stock-index", str(hist_files[1]), "--init-out", str(scratch / f"init_{name}.pt"), "--out", str(out),
        gpu=gpu)
    result = json.loads((out / "fit.json").read_text())
    result["process_seconds"] = wall
    return result


def run_ours(name: str, ds: datasets.PreparedDataset, init: Path | None, base: Path | None,
             args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """Fit our network from the initial weights in ``init`` (Qlib's network's; ``None``: our own fresh ones) and
    the base (GATs, HIST, IGMTF); ``options`` go to the training config (default device: CPU). Per-epoch wall
    (trainer) and CPU seconds, and the curves."""
    spec = models.REGISTRY[name]
    net = models.build(name)
    if init is not None:
        models.load_qlib_weights(net, init)
    if spec.pretrained_base and base is not None:
        models.load_base(net, base)
    cfg = models.train_config(name, **{"n_epochs": args.epochs, "seed": args.seed, "device": "cpu", **options})
    trainer = models.Trainer(net, cfg)
    cpu_marks = [time.process_time()]

    def mark(metrics: models.EpochMetrics, _: models.Trainer) -> None:
        cpu_marks.append(time.process_time())

    started = time.perf_counter()
    result = trainer.fit(ds, callback=mark)
    fit_seconds = time.perf_counter() - started
    cpu = np.diff(cpu_marks)
    return {"fit_seconds": fit_seconds, "epochs": [
        {"seconds": m.seconds, "cpu_seconds": float(cpu[i]), "train_loss": m.train_loss, "valid_loss": m.valid_loss,
         "valid_ic": m.valid_ic, "valid_score": m.score, "train_score": m.train_score}
        for i, m in enumerate(result.history)]}


def mean_of(epochs: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(e[key] for e in epochs)


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def load_kept(path: Path) -> dict[str, dict[str, Any]]:
    """An earlier run's ``--json`` results, each model marked ``kept`` with the time it was measured.

    Files written before per-model times were recorded get the file's modification time, i.e. when that run
    recorded its last model (``measured_utc`` then reads "run ending ..."). Failed models are left out.
    """
    try:
        earlier = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"--keep-from {path}: not a readable bench_models JSON file ({error})")
    ended = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
    kept = {}
    for name, r in earlier.items():
        if name not in TARGET:
            raise SystemExit(f"--keep-from {path}: unknown model {name!r}")
        if "error" not in r:
            kept[name] = {**r, "kept": True, "measured_utc": r.get("measured_utc", f"run ending {ended}")}
    return kept


def met(speed_up: float, target: int) -> str:
    return "yes" if speed_up >= target else "**no**"


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def speed_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", f"{TARGET[name]}×", "-",
                         f"error: {r['error']}"])
            continue
        qlib, ours, like = (mean_of(r[side]["epochs"], "seconds") for side in ("qlib", "ours", "ours_eval_train"))
        qlib_cpu, ours_cpu, like_cpu = (mean_of(r[side]["epochs"], "cpu_seconds")
                                        for side in ("qlib", "ours", "ours_eval_train"))
        rescoring = mean_of(r["qlib"]["epochs"], "rescore_train_seconds")
        # Qlib's training pass (and IGMTF's memory rebuild): what an epoch costs with Qlib's own arithmetic and
        # nothing else, so Qlib's epoch / this is the speed-up of doing only that, at Qlib's speed
        ceiling = qlib / (mean_of(r["qlib"]["epochs"], "train_pass_seconds")
                          + mean_of(r["qlib"]["epochs"], "memory_seconds"))
        if "ours_amp" in r:
            amp = mean_of(r["ours_amp"]["epochs"], "seconds")
            amp_cpu = mean_of(r["ours_amp"]["epochs"], "cpu_seconds")
            amp_cells = [f"{amp:.2f}", f"**{qlib / amp:.1f}×**"]
            cpu_cell = f"{qlib_cpu / ours_cpu:.1f}× / {qlib_cpu / amp_cpu:.1f}× / {qlib_cpu / like_cpu:.1f}×"
            met_cell = f"{met(qlib / ours, TARGET[name])} / {met(qlib / amp, TARGET[name])}"
        else:
            amp_cells = ["not measured", "-"]
            cpu_cell = f"{qlib_cpu / ours_cpu:.1f}× / - / {qlib_cpu / like_cpu:.1f}×"
            met_cell = f"{met(qlib / ours, TARGET[name])} / -"
        load = r.get("load_average")
        when = r.get("measured_utc", "")
        when = (f"kept: {when}" + ("" if "ours_amp" in r else ", no amp column measured") if r.get("kept")
                else when) + (
            f"; load {load[0]:.1f}→{load[1]:.1f}" if load else "")
        rows.append([name, f"{r['rows']['train']:,} / {r['rows']['valid']:,}", f"{qlib:.1f} ({rescoring:.1f})",
                     f"{ours:.2f}", f"**{qlib / ours:.1f}×**", f"{ceiling:.1f}×", *amp_cells, f"{like:.2f}", f"{qlib / like:.1f}×",
                     cpu_cell, f"{TARGET[name]}×", met_cell, when])
    return report.markdown_table(
        ["model", "rows train / valid", "Qlib s/epoch (of which re-scoring train)", "ours s/epoch (fp32, default)",
         "speed-up", "ceiling: Qlib's epoch / Qlib's training pass", "ours, amp (bf16) s/epoch", "speed-up, amp", "ours s/epoch, eval_train",
         "speed-up like for like", "CPU-time speed-up (default / amp / like for like)", "target",
         "met (fp32 / amp)", "measured (1-min load average before→after)"], rows)


def targets_summary(results: dict[str, dict[str, Any]]) -> str:
    """One sentence per precision: which models reach their target speed-up over Qlib (wall time per epoch)."""
    measured = {name: r for name, r in results.items() if "error" not in r}
    if not measured:
        return "No model was measured."

    def verdict(side: str) -> str:
        done = {name: r for name, r in measured.items() if side in r}
        if not done:
            return "not measured"
        hits = [name for name, r in done.items()
                if mean_of(r["qlib"]["epochs"], "seconds") / mean_of(r[side]["epochs"], "seconds") >= TARGET[name]]
        missed = [name for name in done if name not in hits]
        return (f"{len(hits)} of {len(done)} models meet their target"
                + (f" ({', '.join(hits)})" if hits else "")
                + (f"; missed: {', '.join(missed)}" if missed else ""))

    return ("**Targets** (2× for lstm, gru, tcn, transformer, localformer; 5× for gats, hist, igmtf; wall-clock "
            f"seconds per epoch vs Qlib): full precision, the trainer's default: {verdict('ours')}. "
            f"With `amp=True` (bf16 autocast, opt-in; not the default): {verdict('ours_amp')}.")


def ceiling_summary(results: dict[str, dict[str, Any]]) -> str:
    """What the ceiling column says: which models' full-precision epoch is at, past or short of it."""
    at, past, short = [], [], []
    for name, r in results.items():
        if "error" in r:
            continue
        qlib = mean_of(r["qlib"]["epochs"], "seconds")
        ceiling = qlib / (mean_of(r["qlib"]["epochs"], "train_pass_seconds")
                          + mean_of(r["qlib"]["epochs"], "memory_seconds"))
        speed_up = qlib / mean_of(r["ours"]["epochs"], "seconds")
        (past if speed_up > 1.05 * ceiling else at if speed_up >= 0.95 * ceiling else short).append(name)
    groups = [f"{label}: {', '.join(names)}" for label, names in
              (("at it (within 5 %)", at), ("past it", past), ("short of it", short)) if names]
    return ("The ceiling column is Qlib's epoch over Qlib's own training pass (its optimizer steps, plus IGMTF's "
            "memory rebuild): the speed-up of an epoch that does nothing but train, at Qlib's speed. On a CPU both "
            "sides run the same oneDNN RNN, convolution and attention kernels for that pass, so skipping Qlib's "
            "re-scoring of the training set and scoring the validation set in large batches can take ours to the "
            "ceiling, and only a cheaper training pass (fewer operations per day, as in our GATs) past it. "
            f"Full precision, ours vs the ceiling: {'; '.join(groups)}. Where 2× or 5× lies above the ceiling, "
            "full precision on a CPU cannot reach it with the same arithmetic: it takes bf16 (`amp=True`) or a "
            "GPU, where Qlib's per-batch copies and Python per day weigh far more.")


def amp_gap_summary(results: dict[str, dict[str, Any]]) -> str:
    """Per model, the largest valid-loss gap amp vs full precision (same seed) next to Qlib vs ours (other seed)."""
    cells = []
    for name, r in results.items():
        if "error" in r or "ours_amp" not in r:
            continue
        amp_gap = max(abs(a["valid_loss"] - o["valid_loss"]) for a, o in zip(r["ours_amp"]["epochs"],
                                                                            r["ours"]["epochs"]))
        seed_gap = max(abs(q["valid_loss"] - o["valid_loss"]) for q, o in zip(r["qlib"]["epochs"],
                                                                             r["ours"]["epochs"]))
        cells.append(f"{name} {amp_gap:.4f} / {seed_gap:.4f}" + (" (**amp gap larger**)" if amp_gap > seed_gap
                                                                 else ""))
    if not cells:
        return ""
    return ("Largest valid-loss gap per model over the epochs, amp vs full precision (same seed and shuffling) / "
            "Qlib vs ours in full precision (different shuffling: one sample of seed noise): "
            + "; ".join(cells) + ".")


def curve_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, r in results.items():
        if "error" in r:
            continue
        metric = models.REGISTRY[name].defaults["metric"]
        amp_epochs = r["ours_amp"]["epochs"] if "ours_amp" in r else [None] * len(r["ours"]["epochs"])
        for epoch, (q, o, lk, a) in enumerate(zip(r["qlib"]["epochs"], r["ours"]["epochs"],
                                                  r["ours_eval_train"]["epochs"], amp_epochs), start=1):
            amp_loss, amp_score = (fmt(a["valid_loss"]), fmt(a["valid_score"])) if a else ("-", "-")
            rows.append([name, metric, epoch, f"{fmt(q['train_score'])} / {fmt(lk['train_score'])}",
                         f"{fmt(q['valid_loss'])} / {fmt(o['valid_loss'])} / {fmt(lk['valid_loss'])} / {amp_loss}",
                         f"{fmt(q['valid_score'])} / {fmt(o['valid_score'])} / {fmt(lk['valid_score'])} / "
                         f"{amp_score}"])
    return report.markdown_table(
        ["model", "metric", "epoch", "train score, Qlib / ours (eval_train)",
         "valid loss, Qlib / ours / ours (eval_train) / ours amp", "valid score, Qlib / ours / ours (eval_train) / "
         "ours amp"], rows)


def render(results: dict[str, dict[str, Any]], kept: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown report: set-up, the speed table and the loss curves of the models measured so far.

    ``kept`` rows (an earlier run's) stand in, marked as such, for every model this run has not measured (yet);
    models of ``args.models`` with neither are listed as pending.
    """
    pending = [name for name in args.models if name not in results and name not in kept]
    shown = {name: results[name] if name in results else kept[name]
             for name in MODELS if name in results or name in kept}
    kept_shown = [name for name in shown if shown[name].get("kept")]
    return "\n\n".join([
        f"CSI300 from `{args.source.name}`: train {' .. '.join(args.train)}, valid {' .. '.join(args.valid)}; "
        f"Qlib's Alpha360 YAML hyperparameters and batch sizes; {args.epochs} epochs per side, seed {args.seed}, "
        f"{args.threads} torch thread(s) per side, CPU. Per model: Qlib's class (pyqlib 0.9.7, `GPU=-1`) first, "
        "then ours three times from the same initial weights (Qlib's network's, loaded with "
        "`models.load_qlib_weights`; GATs/HIST/IGMTF on both sides from the same fresh `LSTMModel` base): "
        "full precision (the default), `eval_train=True`, and `amp=True` (bf16 autocast on this CPU's oneDNN "
        "bf16 kernels). Seconds per epoch are the mean over the epochs, set-up excluded on both sides. Qlib's "
        "epoch re-scores the whole training set; ours skips it unless `eval_train=True` (the like-for-like "
        "column). Qlib's HIST runs with a local CPU patch (`torch.get_device`) and a writable copy of its "
        "`stock_index` (pandas 3), see `benchmarks/qlib_side.py`.",
        "**This 2-core machine is shared with other engineers' jobs: the last column gives the 1-minute load "
        "average before and after each model. Absolute seconds are noisy; the ratios, measured side by side in "
        "one run, are what count, and the CPU-time ratio is the less neighbour-sensitive one.**"
        + (f" Rows {', '.join(kept_shown)} are kept from an earlier run (`--keep-from`; when, and under what "
           "load, in the last column) and were not re-measured in this run; an earlier run without amp has no amp "
           "column." + (f" {args.note}" if args.note else "") if kept_shown else ""),
        speed_table(shown),
        targets_summary(shown),
        ceiling_summary(shown),
        *([f"Not measured yet in this run: {', '.join(pending)}."] if pending else []),
        "Loss curves (same start, different shuffling streams: agreement within seed noise is the expectation; "
        "ours and ours (eval_train) share one seed and shuffling stream, and amp shows what bf16 rounding "
        "changes). Scores are Qlib's: −loss for `loss` models, mean daily IC for `ic` models; the train score is "
        "over the whole training set in eval mode (Qlib every epoch, ours with `eval_train=True`).",
        *([gaps] if (gaps := amp_gap_summary(shown)) else []),
        curve_table(shown)])


def smoke(args: argparse.Namespace) -> int:
    """``--smoke``: our side only (no Qlib here), one epoch of LSTM (or ``--models``) from its own fresh weights on
    two weeks of the embedded data; prints seconds per epoch and records nothing."""
    ds = datasets.DataSpec(**report.SMOKE_SEGMENTS).open(progress=False)
    rows = []
    for name in args.models:
        ours = run_ours(name, ds, None, None, args, eval_train=False)
        rows.append([name, f"{mean_of(ours['epochs'], 'seconds'):.2f}", fmt(ours["epochs"][-1]["valid_loss"])])
    print("Smoke run, ours only (Qlib's side needs its virtualenv: benchmarks/qlib_env.sh)\n\n"
          + report.markdown_table(["model", "ours s/epoch", "valid loss"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, help="default: all (--smoke: lstm)")
    parser.add_argument("--source", type=Path, default=CN_CSI300, help="a Qlib data directory")
    parser.add_argument("--train", nargs=2, default=["2016-01-01", "2016-02-29"])
    parser.add_argument("--valid", nargs=2, default=["2016-03-01", "2016-03-15"])
    parser.add_argument("--test", nargs=2, default=["2016-03-16", "2016-03-31"],
                        help="not trained on; Qlib's fit prepares a test segment, so it must exist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--json", type=Path, help="also write every measured number to this JSON file (default "
                        "when recording: benchmarks/results/bench_models.json, the recorded table's raw results)")
    parser.add_argument("--keep-from", type=Path,
                        help="an earlier run's --json file: its models not measured here are shown, marked as kept")
    parser.add_argument("--render-from", type=Path,
                        help="measure nothing: render (and record) the results of an earlier run's --json file")
    parser.add_argument("--note", help="a sentence saying why rows are kept (shown only if some are)")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP + " (ours only, one epoch each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.epochs, args.models = 1, args.models or ["lstm"]
        return smoke(args)
    args.models = args.models or list(MODELS)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("this CPU has no oneDNN bf16 kernels: the trainer would ignore amp=True, so the amp "
                         "column would be full precision in disguise")
    if args.json is None and not args.no_record:
        args.json = RESULTS_JSON
    kept = load_kept(args.keep_from) if args.keep_from else {}
    if args.render_from:
        results = json.loads(args.render_from.read_text())
        if not args.no_record:
            report.write_section("bench_models", "Epoch time per model: ours vs Qlib", render(results, kept, args))
        print(render(results, kept, args))
        return 0 if all("error" not in r for r in results.values()) else 1

    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        scratch = Path(tmp)
        ds = datasets.prepare(str(args.source), train=tuple(args.train), valid=tuple(args.valid),
                              test=tuple(args.test), concepts=CONCEPTS_CSV, cache_dir=scratch / "cache",
                              progress=False)
        if ds.concepts is None:
            raise SystemExit(f"datasets.prepare attached no concept matrix from {CONCEPTS_CSV} (HIST needs one)")
        export_dataset(ds, scratch / "data")
        hist_files = write_hist_files(ds.instruments, ds.concepts, scratch)
        base = scratch / "base_lstm.pt"
        run_qlib_side("base", "--out-file", str(base), "--seed", str(args.seed))

        results: dict[str, dict[str, Any]] = {}
        for name in args.models:
            print(f"{name}: Qlib ...", file=sys.stderr, flush=True)
            measured_utc, load_before = utc_now(), os.getloadavg()[0]
            try:
                qlib = run_qlib(name, scratch / "data", scratch, args, base, hist_files)
                print(f"{name}: ours ...", file=sys.stderr, flush=True)
                init = scratch / f"init_{name}.pt"
                ours = run_ours(name, ds, init, base, args, eval_train=False)
                like = run_ours(name, ds, init, base, args, eval_train=True)
                amp = run_ours(name, ds, init, base, args, eval_train=False, amp=True)
            except (SystemExit, Exception) as error:  # one model's failure is reported in its row, not hidden
                results[name] = {"error": str(error).splitlines()[-1][:200]}
                print(f"{name}: FAILED {error}", file=sys.stderr, flush=True)
            else:
                results[name] = {"rows": qlib["rows"], "qlib": qlib, "ours": ours, "ours_eval_train": like,
                                 "ours_amp": amp, "measured_utc": measured_utc,
                                 "load_average": [load_before, os.getloadavg()[0]]}
                print(f"{name}: Qlib {mean_of(qlib['epochs'], 'seconds'):.1f} s/epoch, ours "
                      f"{mean_of(ours['epochs'], 'seconds'):.2f} s/epoch, amp "
                      f"{mean_of(amp['epochs'], 'seconds'):.2f} s/epoch", file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
            if not args.no_record:
                report.write_section("bench_models", "Epoch time per model: ours vs Qlib",
                                     render(results, kept, args))

    print(render(results, kept, args))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
