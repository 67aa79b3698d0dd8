"""Is the search's winner real? A search with confirmation on real data: PBO, and the test IC of the single-seed
winner, the confirmed winner and Qlib's default, each over the confirmation's seeds.

One ``search.driver.run`` (TPE + ASHA, ``--samples`` trials, then the confirmation of the top ``--confirm``
configurations and Qlib's default on ``--confirm-seeds`` new seeds each), on ``../shared/data/cn_csi300`` with
train 2016-Q4 (a quarter: a CPU budget), valid 2017-H1, test 2017-H2. Then every confirmation run's model (its
kept epoch) predicts the test segment (``evaluation.evaluate.score_confirmed``, as ``alphatune evaluate`` reuses them): the test IC of the
search's single-seed winner (its top trial, always among the confirmed), of the confirmed winner (best mean
validation IC) and of Qlib's default, each as mean ± std over the same seeds. The search's and the
confirmation's wall times come from the run's own ledger (the confirmation's plan is written when it starts).

    python benchmarks/bench_confirmation.py [--model gru] [--samples 32] [--confirm 4] [--confirm-seeds 5]
                                            [--max-epochs 3] [--no-record] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _search_util as util  # noqa: E402
from benchmarks import report  # noqa: E402

CN_CSI300 = ROOT.parent / "shared" / "data" / "cn_csi300"
SEGMENTS = {"train": ("2016-10-01", "2016-12-31"), "valid": ("2017-01-01", "2017-06-30"),
            "test": ("2017-07-01", "2017-12-31")}


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Run the search with its confirmation; score every confirmation run on the test segment."""
    from alphatune import datasets
    from alphatune.evaluation.backtest import BacktestConfig
    from alphatune.evaluation.best import Best
    from alphatune.evaluation.evaluate import score_confirmed
    from alphatune.search import cluster, driver
    from alphatune.search.ledger import read_confirmation
    from alphatune.search.options import SearchOptions

    segments = report.SMOKE_SEGMENTS if args.smoke else SEGMENTS
    options = SearchOptions(models=[args.model], data=None if args.smoke else str(args.source), samples=args.samples,
                            max_epochs=args.max_epochs, confirm=args.confirm, confirm_seeds=args.confirm_seeds,
                            seed=args.seed, storage_path=str(scratch / "runs"), name="confirmation",
                            progress_seconds=60, **segments)
    cluster.start_ray(num_cpus=args.cpus)
    try:
        started = time.time()
        [run_dir] = driver.run(options, stream=sys.stderr)
        ended = time.time()
    finally:
        import ray
        ray.shutdown()
    plan, runs = read_confirmation(run_dir.work)
    if plan is None or not runs:
        raise SystemExit(f"{run_dir}: the search ended before its confirmation (interrupted?); nothing to measure")
    confirmation_started = plan["time"]
    confirmation_ended = max(entry["time"] for entry in runs.values())
    best = Best.read(run_dir / "best.yaml")
    ds = datasets.DataSpec.from_dict(best.data).open(progress=False)
    scored: dict[str, dict[str, Any]] = {}
    for config in best.confirmation.configs:
        test_ic = {}
        for run in config.runs:
            if run.checkpoint is not None:
                test_ic[run.seed] = score_confirmed(best.model, run, ds, BacktestConfig(), "cpu").metrics["IC"]
        scored[config.trial] = {"default": config.default, "search_value": config.search_value,
                                "valid": {run.seed: run.value for run in config.runs}, "test_ic": test_ic}
    return {"model": args.model, "segments": segments, "samples": args.samples, "max_epochs": args.max_epochs, "seeds": best.confirmation.seeds,
            "search_s": confirmation_started - started, "confirmation_s": confirmation_ended - confirmation_started,
            "total_s": ended - started, "winner": best.confirmation.winner,
            "search_winner": best.confirmation.search_winner, "against_default": best.confirmation.against_default,
            "pbo": best.overfitting.pbo, "pbo_note": best.overfitting.pbo_note, "blocks": best.overfitting.blocks,
            "splits": best.overfitting.splits, "trials": best.overfitting.trials, "days": best.overfitting.days,
            "bar": best.overfitting.bar, "configs": scored, "trial_counts": best.search.trials}


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.fmean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def render(result: dict[str, Any], smoke: bool) -> str:
    configs = result["configs"]
    default = next(key for key, config in configs.items() if config["default"])
    roles = [("single-seed winner (the search's best trial)", result["search_winner"]),
             ("confirmed winner (best mean valid IC)", result["winner"]), ("Qlib's default", default)]
    rows = []
    for role, key in roles:
        config = configs[key]
        valid = [v for v in config["valid"].values() if v is not None]
        rows.append([role, key, "-" if config["search_value"] is None else f"{config['search_value']:.4f}",
                     mean_std(valid), mean_std(list(config["test_ic"].values()))])
    table = report.markdown_table(["config", "trial", "valid IC in the search (one seed)",
                                   f"valid IC, {len(result['seeds'])} new seeds", "test IC, the same seeds"], rows)
    others = report.markdown_table(
        ["confirmed config", "valid IC in the search", "valid IC over the seeds", "test IC over the seeds"],
        [[key + (" (default)" if config["default"] else ""),
          "-" if config["search_value"] is None else f"{config['search_value']:.4f}",
          mean_std([v for v in config["valid"].values() if v is not None]), mean_std(list(config["test_ic"].values()))]
         for key, config in configs.items()])
    bar = result["bar"] or {}
    share = result["confirmation_s"] / result["search_s"]
    pbo = (f"PBO {result['pbo']:.2f} (CSCV over {result['trials']} trials' daily valid IC, {result['days']} days in "
           f"{result['blocks']} blocks, {result['splits']} splits)" if result["pbo"] is not None
           else f"no PBO ({result['pbo_note']})")
    versus = result["against_default"] or {}
    windows = result.get("segments", SEGMENTS)
    data = ("the embedded data" if smoke else "cn_csi300") + " (" + ", ".join(
        f"{name} {start} .. {end}" for name, (start, end) in windows.items()) + ")"
    return "\n\n".join([
        ("Smoke run (embedded data, a few days): checks the script, measures nothing. " if smoke else "")
        + f"`{result['model']}` on {data}, {result['samples']}-trial TPE + ASHA search (at most {result['max_epochs']} epochs "
        f"per trial; outcomes {result['trial_counts']}), then its top configurations and Qlib's default trained "
        f"again on {len(result['seeds'])} new seeds each (seeds {', '.join(map(str, result['seeds']))}), 2 CPUs, "
        f"one torch thread per trial. Test IC: each confirmation run's model (its kept epoch) on the test segment, "
        f"as `alphatune evaluate` reuses them.",
        table,
        f"The search's odds of overfitting: {pbo}. The best of {bar.get('trials', '-')} equally good trials "
        f"would reach valid IC {bar.get('bar', float('nan')):.4f} by chance (trials' mean {bar.get('mean', float('nan')):.4f}, "
        f"std {bar.get('std', float('nan')):.4f}); the search's best {bar.get('search_best', float('nan')):.4f} "
        f"{'clears' if bar.get('clears') else 'does not clear'} it. Confirmed winner against Qlib's default on the "
        f"same seeds (valid IC): {versus.get('verdict', '-')}.",
        f"Cost: the search took {result['search_s'] / 60:.1f} min (data, Ray, {result['samples']} trials), the "
        f"confirmation {result['confirmation_s'] / 60:.1f} min: **{100 * share:.0f} %** of the search's time "
        f"({len(configs)} configurations × {len(result['seeds'])} seeds at the search's epoch budget). Load average at "
        f"the end: {util.load_average()} (the machine is shared).",
        "Every confirmed configuration:", others])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=CN_CSI300, help="a Qlib data directory")
    parser.add_argument("--model", default="gru")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--confirm", type=int, default=4)
    parser.add_argument("--confirm-seeds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the search's seed")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the private Ray node")
    parser.add_argument("--json", type=Path, help="also write the measured numbers here")
    parser.add_argument("--render-from", type=Path, help="measure nothing: render (and record) a --json file")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.samples, args.confirm, args.confirm_seeds, args.max_epochs, args.no_record = \
            "lstm", 3, 1, 2, 1, True
    if args.render_from:
        result = json.loads(args.render_from.read_text())
    else:
        if not args.smoke and not args.source.is_dir():
            raise SystemExit(f"{args.source}: not found; pass --source with a Qlib data directory")
        scratch = util.scratch_dir("alphatune-confirm-")
        try:
            result = measure(args, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
    body = render(result, args.smoke)
    print(body)
    if not args.no_record:
        report.write_section("bench_confirmation", "Search: is the winner real? Confirmation, PBO and Qlib's default",
                             body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
