"""The comparison that decides: a single-window search against a walk-forward search of equal compute, each
confirmed over 5 seeds, both judged on the same rolling test against Qlib's default.

For each model (LSTM and GRU) on ``../shared/data/cn_csi300``, with train 2016-Q4 (a quarter: a CPU budget) and
the validation period 2017-H1:

1. a single-window search (``--single-samples`` trials: the whole half-year is one validation window);
2. a walk-forward search (``--folds`` folds of the same half-year, rolling train windows of a quarter, racing: a
   trial reports after each fold and ASHA prunes between folds), with ``--fold-samples`` trials, chosen so that both
   searches train about the same number of epochs (the table says how many each really trained);
3. each search's confirmation: its top ``--confirm`` configurations and Qlib's default on ``--confirm-seeds`` new
   seeds (the same seeds for both searches), over every fold for the walk-forward one;
4. the rolling test, out of sample after the validation period: the single-window winner, the walk-forward winner
   and Qlib's default, each retrained every ``--rolling`` trading days over the year 2017-07..2018-06 on the
   window before it (Qlib's RollingGen, ``--rolling-train``; a quarter of training, two months of validation), on
   the confirmation's seeds: test IC and Rank IC mean ± std over the seeds, the seed ensemble (the mean prediction
   of the seed models) scored as one model, the paired verdict against the default on the same seeds, and the
   top-k dropout backtest's annualized excess return.

The honest outcome is the goal: the table says whether either winner beats the default beyond noise. Each model
runs in its own process (``--cpus`` CPUs each, one torch thread per trial), both at once.

    python benchmarks/bench_walkforward.py [--models lstm,gru] [--single-samples 24] [--fold-samples 7]
                                           [--folds 4] [--max-epochs 3] [--confirm 1] [--confirm-seeds 5]
                                           [--rolling 40] [--rolling-train sliding] [--keep-runs DIR]
                                           [--no-record] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _search_util as util  # noqa: E402
from benchmarks import report  # noqa: E402
from alphatune.datasets.periods import LABEL_HORIZON  # noqa: E402

CN_CSI300 = ROOT.parent / "shared" / "data" / "cn_csi300"
SEGMENTS = {"train": ("2016-10-01", "2016-12-31"), "valid": ("2017-01-01", "2017-06-30"),
            "test": ("2017-07-01", "2018-06-30")}
# The rolling test's first window: a quarter to train, two months to validate (early stopping), then the test year.
ROLLING_SEGMENTS = {"train": ("2017-02-01", "2017-04-30"), "valid": ("2017-05-01", "2017-06-30"),
                    "test": ("2017-07-01", "2018-06-30")}
SMOKE_ROLLING = {"train": ("2018-12-17", "2018-12-28"), "valid": ("2019-01-16", "2019-02-28"),
                 "test": ("2019-03-01", "2019-03-29")}


def search(args: argparse.Namespace, scratch: Path, name: str, samples: int, folds: int) -> dict[str, Any]:
    """One search with its confirmation; what it cost (epochs and wall time, from its ledger) and what it chose.

    A search that already finished in ``scratch`` (its best.yaml names a confirmed winner: ``--keep-runs`` of a
    measurement cut short in its rolling test) is read, not run again; its cost comes from its ledger all the same.
    """
    from alphatune.evaluation.best import Best
    from alphatune.search import driver
    from alphatune.search.ledger import LEDGER, ledger_entries, read_confirmation, read_ledger
    from alphatune.search.options import SearchOptions

    segments = report.SMOKE_SEGMENTS if args.smoke else SEGMENTS
    options = SearchOptions(models=[args.model], data=None if args.smoke else str(args.source), samples=samples,
                            max_epochs=args.max_epochs, folds=folds, fold_train="rolling", confirm=args.confirm,
                            confirm_seeds=args.confirm_seeds, seed=args.seed, storage_path=str(scratch / "runs"),
                            name=name, progress_seconds=120, **segments)
    finished = scratch / "runs" / name / args.model
    if (finished / "best.yaml").is_file() and Best.read(finished / "best.yaml").confirmation.winner:
        print(f"[{args.model}] {name}: reusing the finished search in {finished}", file=sys.stderr, flush=True)
        work = finished
    else:
        [run_dir] = driver.run(options, stream=sys.stderr)
        work = run_dir.work
    _, runs = read_confirmation(work)
    trials = read_ledger(work) or []
    best = Best.read(work / "best.yaml")
    # Wall time from the ledger: the first trial created .. the last ended (the search) .. the last run confirmed.
    times = {}
    for entry in ledger_entries(work / LEDGER):
        if "time" in entry:
            times.setdefault(entry["event"], []).append(entry["time"])
    first, searched = min(times["trial"]), max(times["end"])
    confirmed = max(times.get("confirmed", [searched]))
    return {"name": name, "folds": folds, "samples": samples, "winner": best.confirmation.winner,
            "hyperparameters": best.hyperparameters, "seeds": best.confirmation.seeds,
            "search_epochs": sum(len(trial.epochs()) for trial in trials),
            "confirmation_epochs": sum(sum(fold["epochs"] for fold in entry.get("fold_results") or [])
                                       or int(entry.get("epoch") or 0) for entry in runs.values()),
            "search_s": searched - first, "confirmation_s": confirmed - searched,
            "trial_counts": best.search.trials, "pbo": best.overfitting.pbo, "pbo_note": best.overfitting.pbo_note,
            "against_default": best.confirmation.against_default, "windows": best.validation.folds,
            "winner_is_default": next(config.default for config in best.confirmation.configs
                                      if config.trial == best.confirmation.winner)}


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Both searches, then the rolling test of both winners and Qlib's default on the same windows and seeds."""
    import torch
    from alphatune.datasets import DataSpec
    from alphatune.datasets.periods import rolling
    from alphatune.evaluation.backtest import BacktestConfig
    from alphatune.evaluation.overfitting import paired
    from alphatune.evaluation.rolling import RollingConfig, log_windows, roll
    from alphatune.evaluation.evaluate import default_hyperparameters, full_config
    from alphatune.search import cluster

    cluster.start_ray(num_cpus=args.cpus)
    try:
        single = search(args, scratch, "single", args.single_samples, 1)
        walk = search(args, scratch, "walk", args.fold_samples, args.folds)
    finally:
        import ray
        ray.shutdown()
    segments = SMOKE_ROLLING if args.smoke else ROLLING_SEGMENTS
    spec = DataSpec(source="embedded" if args.smoke else str(args.source), **segments)
    ds = spec.open(progress=False)
    windows = rolling(spec.calendar(), *(tuple(ds.segments[name]) for name in ("train", "valid", "test")),
                      args.rolling, args.rolling_train)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log_windows(windows, log)
    metric = {"metric": single["hyperparameters"].get("metric", "ic")}
    configs = {"single-window winner": RollingConfig(dict(single["hyperparameters"])),
               "walk-forward winner": RollingConfig(dict(walk["hyperparameters"])),
               "Qlib's default": RollingConfig({**default_hyperparameters(args.model), **metric})}
    labels = list(configs)
    same_as = {}  # a winner that is another config (Qlib's default, say) is trained once
    for number, label in enumerate(labels):
        for earlier in labels[:number]:
            if label not in same_as and full_config(args.model, configs[label].hyperparameters) == \
                    full_config(args.model, configs[earlier].hyperparameters):
                same_as[label] = earlier
    torch.set_num_threads(1)
    began = time.time()
    roll(args.model, configs, [spec.window(window).open(progress=False) for window in windows], ds, single["seeds"],
         args.max_epochs, {"device": "cpu"}, BacktestConfig(), log, same_as=same_as)
    rolling_s = time.time() - began
    default_ic = {run.seed: run.metrics["IC"] for run in configs["Qlib's default"].runs}
    out = {}
    for label, config in configs.items():
        ic = {run.seed: run.metrics["IC"] for run in config.runs}
        versus = paired(ic, default_ic) if label != "Qlib's default" else None
        out[label] = {"IC": [run.metrics["IC"] for run in config.runs],
                      "Rank IC": [run.metrics["Rank IC"] for run in config.runs],
                      "excess": [run.metrics["annualized_return"] for run in config.runs],
                      "ensemble": config.ensemble, "epochs": sum(sum(run.epochs) for run in config.runs),
                      "verdict": versus.verdict("test IC") if versus else None,
                      "beyond_noise": versus.beyond_noise if versus else None}
    return {"model": args.model, "single": single, "walk": walk, "rolling": out, "rolling_s": rolling_s,
            "windows": [window.to_dict() for window in windows], "step": args.rolling,
            "rolling_train": args.rolling_train, "segments": report.SMOKE_SEGMENTS if args.smoke else SEGMENTS,
            "rolling_segments": segments, "max_epochs": args.max_epochs, "load": util.load_average()}


def mean_std(values: list[float]) -> str:
    import statistics
    if not values:
        return "-"
    return f"{statistics.fmean(values):+.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def render(results: list[dict[str, Any]], smoke: bool) -> str:
    first = results[0]
    rows, costs, verdicts = [], [], []
    for result in results:
        for label, numbers in result["rolling"].items():
            rows.append([result["model"], label, mean_std(numbers["IC"]), mean_std(numbers["Rank IC"]),
                         f"{numbers['ensemble']['IC']:+.4f}", f"{numbers['ensemble']['Rank IC']:+.4f}",
                         mean_std(numbers["excess"]), numbers["verdict"] or "-"])
        for key in ("single", "walk"):
            run = result[key]
            costs.append([result["model"], "single window" if key == "single" else f"walk-forward, {run['folds']} folds",
                          run["samples"], run["trial_counts"], run["search_epochs"], f"{run['search_s'] / 60:.1f}",
                          run["confirmation_epochs"], f"{run['confirmation_s'] / 60:.1f}",
                          "-" if run["pbo"] is None else f"{run['pbo']:.2f}",
                          (run["against_default"] or {}).get("verdict", "-")])
        beyond = [label for label, numbers in result["rolling"].items() if numbers["beyond_noise"]]
        verdicts.append(f"**{result['model']}**: " + (
            "; ".join(f"the {label} differs from Qlib's default beyond noise on the rolling test "
                      f"({result['rolling'][label]['verdict']})" for label in beyond) if beyond else
            "neither winner differs from Qlib's default beyond seed-to-seed noise on the rolling test"))
    segments = first["segments"]
    text = [("Smoke run (embedded data, a few days): checks the script, measures nothing. " if smoke else "")
            + f"{'The embedded data' if smoke else 'cn_csi300'}: search train {segments['train'][0]}..{segments['train'][1]}, validation "
            f"{segments['valid'][0]}..{segments['valid'][1]} (one window, or {first['walk']['folds']} walk-forward folds "
            f"with rolling train windows of the same length and a {LABEL_HORIZON}-day embargo); at most "
            f"{first['max_epochs']} epochs per trial (per fold), TPE + ASHA (the walk-forward search prunes between folds). Both confirmed on the same "
            f"{len(first['single']['seeds'])} seeds. Rolling test: {len(first['windows'])} windows of {first['step']} "
            f"trading days over {first['rolling_segments']['test'][0]}..{first['rolling_segments']['test'][1]} "
            f"({first['rolling_train']} train windows of a quarter, two months of validation, Qlib's RollingGen), each "
            f"config retrained on every window for every seed; IC against the raw label of each test day; "
            f"excess: the top-k dropout backtest's annualized excess return with cost over the CSI300 index.",
            report.markdown_table(["model", "config", "rolling test IC (mean ± std over seeds)", "Rank IC",
                                   "ensemble IC", "ensemble Rank IC", "annualized excess", "paired vs default (test IC)"],
                                  rows),
            "\n\n".join(verdicts),
            "What each search cost (epochs: every epoch trained, by every trial or confirmation run; time: wall "
            "minutes on this machine):",
            report.markdown_table(["model", "search", "trials", "outcomes", "search epochs", "search min",
                                   "confirmation epochs", "confirmation min", "PBO", "confirmed winner vs default "
                                   "(validation)"], costs),
            "Rolling test time: " + ", ".join(f"{result['model']} {result['rolling_s'] / 60:.0f} min" for result in results)
            + f". Load average at the end: {first['load']}."]
    return "\n\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=CN_CSI300, help="a Qlib data directory")
    parser.add_argument("--models", default="lstm,gru")
    parser.add_argument("--model", help=argparse.SUPPRESS)  # one model, in a process of its own
    parser.add_argument("--single-samples", type=int, default=24)
    parser.add_argument("--fold-samples", type=int, default=7)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--confirm", type=int, default=1)
    parser.add_argument("--confirm-seeds", type=int, default=5)
    parser.add_argument("--rolling", type=int, default=40, help="trading days between retrainings")
    parser.add_argument("--rolling-train", default="sliding", choices=("sliding", "expanding"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of each model's private Ray node")
    parser.add_argument("--json", type=Path, help="also write the measured numbers here")
    parser.add_argument("--keep-runs", type=Path, help="keep the searches' runs under DIR/<model>; a search already "
                        "finished there is read, not run again (to finish a measurement cut short in its rolling test)")
    parser.add_argument("--render-from", type=Path, nargs="+", help="measure nothing: render --json files")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.single_samples, args.fold_samples, args.folds = "lstm", 2, 2, 2
        args.max_epochs, args.confirm, args.confirm_seeds, args.rolling, args.no_record = 1, 1, 2, 10, True
    if args.model:  # a child: one model, its numbers as JSON
        scratch = args.keep_runs / args.model if args.keep_runs else util.scratch_dir("alphatune-wf-")
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            result = measure(args, scratch)
        finally:
            if not args.keep_runs:
                shutil.rmtree(scratch, ignore_errors=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        return 0
    if args.render_from:
        results = [json.loads(path.read_text()) for path in args.render_from]
    else:
        if not args.smoke and not args.source.is_dir():
            raise SystemExit(f"{args.source}: not found; pass --source with a Qlib data directory")
        scratch = util.scratch_dir("alphatune-wf-parent-")
        children = {}
        for model in args.models.split(","):
            out = (args.json.with_name(f"{args.json.stem}-{model}.json") if args.json else scratch / f"{model}.json")
            command = [sys.executable, __file__, *(argv or sys.argv[1:]), "--model", model, "--json", str(out)]
            children[model] = (subprocess.Popen(command), out)
        failed = [model for model, (child, _) in children.items() if child.wait() != 0]
        if failed:
            raise SystemExit(f"the runs of {', '.join(failed)} failed (their output is above)")
        results = [json.loads(out.read_text()) for _, out in children.values()]
        shutil.rmtree(scratch, ignore_errors=True)
    body = render(results, args.smoke)
    print(body)
    if not args.no_record:
        report.write_section("bench_walkforward", "Search: one validation window or walk-forward folds, judged on a "
                             "rolling test", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
