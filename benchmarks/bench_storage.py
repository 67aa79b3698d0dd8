"""The same search with its run directory on local disk and in an S3 bucket (a local S3-compatible server).

A real search (Ray Tune, Optuna, no pruning: every trial runs all its epochs), one trial at a time, LSTM hidden 8
on two weeks of the embedded data, so that an epoch takes about 0.1 s (GPU-like) and the storage's share shows.
Both searches run one after the other in this process against a fresh private Ray each. On S3 (moto's server on
127.0.0.1, real HTTP through pyarrow) the trials write ``trials/<id>/state.pt`` and ``model.pt`` into the bucket
and the driver puts its own files there after every ended trial. Reported: the search's wall time (``driver.run``,
Ray already started), and each trial epoch's non-training time, from the run's ledger:

    non-training time = (this report's reported_at − the previous report's) − this epoch's training seconds

    python benchmarks/bench_storage.py [--trials 4] [--epochs 20] [--no-record] [--smoke]

Needs the test extras (moto's server): ``pip install -e ".[test]"``.
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
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks import report  # noqa: E402
from benchmarks.bench_trial_overhead import SEGMENTS, SPACE, epoch_gaps  # noqa: E402


def search(storage: str, data: Path, scratch: Path, trials: int, epochs: int) -> tuple[float, list[float]]:
    """``(wall seconds of driver.run, non-training milliseconds of every trial epoch after the first)``."""
    import ray
    from alphatune.search import cluster, driver
    from alphatune.search.ledger import read_ledger
    from alphatune.search.options import SearchOptions
    (scratch / "space.yaml").write_text(SPACE)
    options = SearchOptions(models=["lstm"], confirm=0, space_files={"lstm": str(scratch / "space.yaml")}, data=str(data),
                            samples=trials, max_epochs=epochs, grace_epochs=epochs, max_concurrent=1,
                            sampler="random", seed=0, storage_path=storage, name="storage", progress_seconds=3600)
    cluster.start_ray(num_cpus=2)
    try:
        began = time.perf_counter()
        [run_dir] = driver.run(options, io.StringIO())
        wall = time.perf_counter() - began
    finally:
        ray.shutdown()
    return wall, epoch_gaps([trial.results for trial in read_ledger(run_dir.work)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.epochs, args.no_record = 1, 3, True
    from alphatune import datasets
    from servers import s3_server
    scratch = Path(tempfile.mkdtemp(prefix="alphatune-storage-"))
    saved = dict(os.environ)
    try:
        os.environ["ALPHATUNE_CACHE"] = str(scratch / "cache")
        ds = datasets.DataSpec(**SEGMENTS).open(progress=False)
        datasets.save(ds, scratch / "data")
        disk = search(str(scratch / "runs"), scratch / "data", scratch, args.trials, args.epochs)
        with s3_server(("bench",)) as s3:
            os.environ.update(s3.env)
            bucket = search("s3://bench/runs", scratch / "data", scratch, args.trials, args.epochs)
            stored = sum(item["Size"] for item in s3.client().list_objects_v2(Bucket="bench").get("Contents", []))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for name, (wall, gaps) in (("local disk", disk), ("S3 (moto on 127.0.0.1)", bucket)):
        rows.append([name, f"{wall:.1f} s", f"{statistics.median(gaps):.1f} ms", f"{statistics.fmean(gaps):.1f} ms",
                     f"{sorted(gaps)[int(0.9 * (len(gaps) - 1))]:.1f} ms"])
    table = report.markdown_table(["run directory", "search wall time", "non-training per epoch, median", "mean",
                                   "90th percentile"], rows)
    body = (f"The same search twice, {args.trials} trials × {args.epochs} epochs one at a time (LSTM hidden 8, two "
            f"weeks of the embedded data, epochs of about 0.1 s), measured side by side in one run; the bucket held "
            f"{stored / 1e6:.1f} MB at the end. On S3 each epoch's state and each improving epoch's model go over HTTP "
            f"(the state on the trial's writer thread, while the next epoch trains), and the driver puts its records "
            f"into the bucket after every ended trial.\n\n{table}")
    print(body)
    if not args.no_record:
        report.write_section("bench_storage", "Storage: a search on local disk and in an S3 bucket", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
