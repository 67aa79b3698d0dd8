"""What a trial does per epoch besides training, at GPU-like epoch lengths (target: at most 10 ms per epoch).

On a GPU an epoch of Qlib's models takes 0.1-0.3 s, so a trial's per-epoch work outside training (saving its
training state for an exact resume, saving its best model, reporting to Tune, Tune's handling of the report)
must cost little. This measures it on the CPU with an LSTM small enough that an epoch takes about 0.1 s: a real
search (Ray Tune, Optuna, ASHA off: every trial runs all its epochs), one trial at a time, on two weeks of the
embedded data. For every epoch after a trial's first,

    non-training time = (this report's reported_at − the previous report's) − this epoch's training seconds

where ``seconds`` is what the trainer measured for the epoch (its training pass and the validation pass). The
same run also times the pieces alone, in this process: writing the training state (``state.pt``, atomically)
and the best model (``model.pt``).

    python benchmarks/bench_trial_overhead.py [--trials 4] [--epochs 30] [--no-record] [--smoke]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402

SPACE = """\
model: lstm
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
fixed: {hidden_size: 8, num_layers: 1, dropout: 0.0, batch_size: 1024, n_epochs: 200, early_stop: 200, seed: 0}
default: {lr: 1.0e-3}
"""
SEGMENTS = {"train": ("2018-12-03", "2018-12-14"), "valid": ("2019-01-02", "2019-01-15"),
            "test": ("2019-03-01", "2019-03-29")}


def pieces(ds, repeats: int = 50) -> dict[str, float]:
    """Milliseconds to write this trial model's training state and its model file, each atomically."""
    import torch
    from alphatune import models
    torch.set_num_threads(1)
    trainer, _ = models.fit("lstm", ds, {"hidden_size": 8, "num_layers": 1, "batch_size": 1024, "n_epochs": 1,
                                         "seed": 0})
    directory = Path(tempfile.mkdtemp(prefix="alphatune-overhead-"))
    try:
        out = {}
        for name, save in (("state", lambda path: torch.save(trainer.training_state(), path)),
                           ("model", trainer.save)):
            began = time.perf_counter()
            for _ in range(repeats):
                temporary = directory / f".{name}.tmp"
                save(temporary)
                os.replace(temporary, directory / f"{name}.pt")
            out[name] = (time.perf_counter() - began) / repeats * 1000
            out[f"{name}_bytes"] = (directory / f"{name}.pt").stat().st_size
        return out
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def search(ds_dir: Path, scratch: Path, trials: int, epochs: int) -> list[dict]:
    """Run the search; every trial's reports from the run's ledger."""
    import ray
    from alphatune.search import cluster, driver
    from alphatune.search.ledger import read_ledger
    from alphatune.search.options import SearchOptions
    (scratch / "space.yaml").write_text(SPACE)
    options = SearchOptions(models=["lstm"], confirm=0, space_files={"lstm": str(scratch / "space.yaml")}, data=str(ds_dir),
                            samples=trials, max_epochs=epochs, grace_epochs=epochs, max_concurrent=1,
                            sampler="random", seed=0, storage_path=str(scratch / "runs"), name="overhead",
                            progress_seconds=3600)
    cluster.start_ray(num_cpus=2)
    try:
        [run_dir] = driver.run(options, io.StringIO())
    finally:
        ray.shutdown()
    return [trial.results for trial in read_ledger(run_dir.work)]


def epoch_gaps(trials: list[list[dict]]) -> list[float]:
    """Milliseconds of non-training time of every trial epoch after a trial's first (see the module doc)."""
    gaps = []
    for rows in trials:
        rows = sorted(rows, key=lambda row: row["reported_at"])
        gaps += [(after["reported_at"] - before["reported_at"] - after["seconds"]) * 1000
                 for before, after in zip(rows, rows[1:])]
    return gaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.epochs, args.no_record = 1, 3, True
    from alphatune import datasets
    scratch = Path(tempfile.mkdtemp(prefix="alphatune-overhead-"))
    try:
        spec = datasets.DataSpec(**SEGMENTS)
        ds = spec.open(progress=False)
        datasets.save(ds, scratch / "data")
        parts = pieces(ds, repeats=3 if args.smoke else 50)
        trials = search(scratch / "data", scratch, args.trials, args.epochs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gaps = sorted(epoch_gaps(trials))
    seconds = [row["seconds"] for rows in trials for row in sorted(rows, key=lambda row: row["reported_at"])[1:]]
    q = lambda share: gaps[min(len(gaps) - 1, int(share * len(gaps)))]  # noqa: E731
    rows = [["epoch's training + validation (trainer)", f"{statistics.median(seconds) * 1000:.0f} ms median"],
            ["non-training time per epoch, median", f"{statistics.median(gaps):.1f} ms"],
            ["non-training time per epoch, 90th percentile", f"{q(0.9):.1f} ms"],
            ["non-training time per epoch, mean", f"{statistics.fmean(gaps):.1f} ms"],
            ["write state.pt, alone in this process (a trial writes it on a thread while the next epoch trains)",
             f"{parts['state']:.1f} ms ({parts['state_bytes']:,} bytes)"],
            ["write model.pt, alone in this process (a trial writes it at once, on improving epochs only)",
             f"{parts['model']:.1f} ms ({parts['model_bytes']:,} bytes)"]]
    table = report.markdown_table(["quantity", "measured"], rows)
    body = (f"A real search, {len(trials)} trials × {args.epochs} epochs, one at a time, LSTM hidden 8 on two "
            f"weeks of the embedded data ({len(gaps)} epoch gaps measured). Target: at most 10 ms of non-training "
            f"time per trial epoch. Each epoch's state is saved for an exact resume (tests check a resumed fit "
            f"equals an uninterrupted one); it is written while the next epoch trains, so after a kill at most the "
            f"last reported epoch is trained again. The rest is the trainer's bookkeeping, the snapshot of the "
            f"state, and the report to Tune, which returns once the driver has handled the result (Tune's round "
            f"trip).\n\n{table}")
    print(body)
    if not args.no_record:
        report.write_section("bench_trial_overhead", "Search: a trial's per-epoch work besides training", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
