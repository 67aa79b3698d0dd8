"""Qlib's default config vs the config a search found, per model, on the test segment of CSI300.

For each model: ``alphatune search run`` on ``../shared/data/cn_csi300`` (timed: the search's wall time and
budget), then ``alphatune evaluate`` on its best.yaml, which retrains the searched and the default
config over ``--seeds`` seeds and scores the test segment (IC, Rank IC, and the top-k dropout backtest's
annualised excess return with cost, information ratio and max drawdown over SH000300). Records the table
in docs/benchmarks.md.

Windows: ``quick`` (default, CPU-sized): train 2016, valid 2017-H1, test 2017-H2; ``full`` (Qlib's
scale, for a GPU machine): train 2010-2016, valid 2017-2018, test 2019-2020.

    python benchmarks/bench_evaluate.py --models all --samples 16 --seeds 3           # hours of CPU
    python benchmarks/bench_evaluate.py --models lstm,gru --max-epochs 4 --eval-epochs 6   # a CPU-sized budget
    python benchmarks/bench_evaluate.py --smoke   # a tiny search and evaluation of the embedded data; no record

GATs, HIST and IGMTF start both evaluated configs from the base their search pretrained (best.yaml's
``bases``), where the config's sizes fit it. The table is rewritten after every model, so an interrupted run
keeps the models it finished; run it again with the same ``--name`` and the searches and evaluations already
finished there (``<storage>/<name>/<model>/``: best.yaml with the search's wall time beside it, evaluation.yaml)
are reused, not rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alphatune import models  # noqa: E402
from benchmarks.report import SMOKE_HELP, SMOKE_SEGMENTS, markdown_table, write_section  # noqa: E402

WINDOWS = {
    "quick": {"train": "2016-01-01:2016-12-31", "valid": "2017-01-01:2017-06-30", "test": "2017-07-01:2017-12-31"},
    "full": {"train": "2010-01-01:2016-12-31", "valid": "2017-01-01:2018-12-31", "test": "2019-01-01:2020-12-31"},
    "smoke": {name: f"{start}:{end}" for name, (start, end) in SMOKE_SEGMENTS.items()},  # the embedded data
}
SEARCH_TIMING = "bench_search_seconds.json"  # the search's wall time, beside its best.yaml
COLUMNS = [("IC", "IC"), ("Rank IC", "Rank IC"), ("annualized_return", "Ann. excess return"),
           ("information_ratio", "IR"), ("max_drawdown", "Max DD")]


def search(model: str, args: argparse.Namespace) -> tuple[Path, float]:
    """Run one model's search; return its best.yaml and the wall time in seconds."""
    command = [sys.executable, "-m", "alphatune", "search", "run", "--model", model, "--data", str(args.data),
               *(f"--{name}={start}:{end}" for name, (start, end) in args.segments.items()),
               "--samples", str(args.samples), "--storage-path", str(args.storage_path), "--name", args.name,
               "--gpus-per-trial", str(args.gpus_per_trial), "--confirm", "0"]  # evaluate trains every seed itself
    if args.max_epochs is not None:
        command += ["--max-epochs", str(args.max_epochs)]
    if args.grace_epochs is not None:
        command += ["--grace-epochs", str(args.grace_epochs)]
    if models.REGISTRY[model].uses_concepts:
        command += ["--concepts", str(args.concepts)]
    best = args.storage_path.resolve() / args.name / model / "best.yaml"
    timing = best.parent / SEARCH_TIMING
    settings = {"command": command[3:]}  # what decides the search, without the interpreter
    if timing.is_file() and best.is_file():
        earlier = json.loads(timing.read_text())
        if "command" not in earlier:  # written before the settings were recorded
            print(f"[bench_evaluate] {model}: {timing} records no settings; taken as this run's", flush=True)
        elif earlier["command"] != settings["command"]:
            raise SystemExit(f"{model}: {best.parent} holds a search run with other settings "
                             f"({' '.join(earlier.get('command', []))}); pick another --name")
        print(f"[bench_evaluate] {model}: reusing the finished search in {best.parent}", flush=True)
        return best, earlier["seconds"]
    if best.parent.exists():
        raise SystemExit(f"{model}: {best.parent} holds an unfinished search; continue it with `alphatune search "
                         f"resume {best.parent}` (its wall time is then not the benchmark's) or pick another --name")
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - began
    if not best.is_file():
        raise SystemExit(f"{model}: the search finished without {best}")
    timing.write_text(json.dumps({"seconds": seconds, **settings}))
    return best, seconds


def evaluate(best: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate one best.yaml in a fresh process (reusing an evaluation.yaml newer than the search); return
    evaluation.yaml's content."""
    done = best.parent / "evaluation.yaml"
    if done.is_file() and best.stat().st_mtime < done.stat().st_mtime:
        record = yaml.safe_load(done.read_text())
        runs = len(record["configs"]["searched"]["runs"])
        if runs == args.seeds and record.get("epochs_cap", args.eval_epochs) == args.eval_epochs:
            print(f"[bench_evaluate] reusing {done}", flush=True)
            return record
        print(f"[bench_evaluate] {done} has {runs} seed(s), epochs cap {record.get('epochs_cap')}: evaluating "
              f"again with {args.seeds}, cap {args.eval_epochs}", flush=True)
    command = [sys.executable, "-m", "alphatune", "evaluate", str(best), "--seeds", str(args.seeds),
               "--device", args.device]
    if args.eval_epochs is not None:
        command += ["--epochs", str(args.eval_epochs)]
    subprocess.run(command, check=True, cwd=ROOT)
    return yaml.safe_load((best.parent / "evaluation.yaml").read_text())


def cell(config: dict[str, Any], key: str) -> str:
    mean, std = config["mean"][key], config["std"][key]
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def epochs_cell(config: dict[str, Any]) -> str:
    """Best epoch / epochs trained of each seed's run, e.g. ``3/6, 6/6, 2/6``."""
    return ", ".join(f"{run['best_epoch']}/{run['epochs']}" for run in config["runs"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="comma-separated registry names, or 'all'")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cn_csi300")
    parser.add_argument("--concepts", type=Path, default=ROOT.parent / "shared/data/csi300_2017_2019_mit/concepts.csv",
                        help="HIST's (symbol, concept) table (cn_csi300 has none)")
    parser.add_argument("--window", choices=WINDOWS, default="quick")
    parser.add_argument("--samples", type=int, default=16, help="trials per search (ASHA-pruned)")
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs a trial may train at most "
                        "(default: the search's own default)")
    parser.add_argument("--grace-epochs", type=int, default=None, help="ASHA's first rung (default: the "
                        "search's own)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per config in the evaluation")
    parser.add_argument("--eval-epochs", type=int, default=None,
                        help="cap n_epochs of both evaluated configs (a budget: Qlib's configs allow up to 200 "
                        "with early stopping; default: no cap)")
    parser.add_argument("--device", default="cpu", help="torch device for the evaluation's training")
    parser.add_argument("--note", help="a sentence on why the models left out of this run are missing")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--storage-path", type=Path, default=ROOT / "runs")
    parser.add_argument("--name", default=f"bench-evaluate-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    args.segments = {name: tuple(span.split(":")) for name, span in WINDOWS[args.window].items()}
    if args.smoke:
        scratch = Path(tempfile.mkdtemp(prefix="bench-evaluate-smoke-"))
        try:
            return main(["--models", "lstm", "--data", "embedded", "--samples", "2", "--max-epochs", "1",
                         "--seeds", "1", "--eval-epochs", "1", "--storage-path", str(scratch), "--no-record",
                         "--window", "smoke"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    names = list(models.REGISTRY) if args.models == "all" else [m.strip() for m in args.models.split(",")]
    unknown = [name for name in names if name not in models.REGISTRY]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)} (known: {', '.join(models.REGISTRY)})")

    rows: list[list[str]] = []
    header = ["model", "config", *(title for _, title in COLUMNS), "best epoch / epochs per seed", "search"]
    for done, model in enumerate(names, start=1):
        load_before = os.getloadavg()[0]
        best, seconds = search(model, args)
        record = evaluate(best, args)
        budget = f"{args.samples} trials" + (f", ≤{args.max_epochs} epochs" if args.max_epochs else "")
        for label in ("default", "searched"):
            config = record["configs"][label]
            rows.append([model, label, *(cell(config, key) for key, _ in COLUMNS), epochs_cell(config),
                         f"{seconds / 60:.1f} min, {budget}" if label == "searched" else ""])
        print(markdown_table(header, rows[-2:]), flush=True)
        print(f"[bench_evaluate] {model}: load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
              flush=True)
        if not args.no_record:
            write_section("bench_evaluate", "Searched vs Qlib default config on the test segment",
                          report(args, record["benchmark"], header, rows, names[done:]))
    print(report(args, record["benchmark"], header, rows, []))
    return 0


def report(args: argparse.Namespace, benchmark: str, header: list[str], rows: list[list[str]],
           not_run: list[str]) -> str:
    """The section's prose and table; ``not_run`` names the models this run has not reached yet."""
    models_run = {row[0] for row in rows}
    window = WINDOWS[args.window]
    cap = (f" Both configs trained at most {args.eval_epochs} epoch(s) per seed (Qlib's configs allow up to 200 "
           f"with early stopping 20: on this CPU that does not fit), keeping the best validation epoch. So this "
           f"compares the two at the same small budget, not at Qlib's: a search capped at a few epochs favours "
           f"configurations that learn fast, and Qlib's defaults (GATs, HIST and IGMTF train at lr 1e-4) may do "
           f"better with the epochs they were chosen for."
           if args.eval_epochs is not None else " Each config trained with its own n_epochs and early stopping.")
    missing = f" Not run yet: {', '.join(not_run)}." if not_run else ""
    left_out = [name for name in models.REGISTRY if name not in models_run and name not in not_run]
    if left_out:
        missing += f" Not in this run: {', '.join(left_out)}." + (f" {args.note}" if args.note else "")
    return (f"`{args.data.name}`, train {window['train']}, valid {window['valid']}, test {window['test']}; "
            f"the search: {args.samples} trials, TPE + ASHA on valid IC"
            f"{f', at most {args.max_epochs} epochs each' if args.max_epochs else ''}; then each config "
            f"retrained with {args.seeds} seed(s) (mean ± std, std with ddof 1).{cap} GATs, HIST and IGMTF start "
            f"both configs from the LSTM/GRU base their search pretrained where the sizes fit."
            + (f" HIST's concepts are `{args.concepts.parent.name}/{args.concepts.name}` (a fixed membership of "
               f"2017–2019 list stocks; stocks outside it have none)." if "hist" in models_run else "")
            + f" Portfolio numbers "
            f"are the top-k dropout backtest's annualised excess return with cost over {benchmark} (Qlib's rules, "
            f"N = 238).{missing}\n\n" + markdown_table(header, rows))


if __name__ == "__main__":
    sys.exit(main())
