"""Wall time of a search of short trials with and without Tune's actor reuse (``TuneConfig(reuse_actors=...)``).

Same search both ways, run one after the other in this process with one Ray session (order A-B-A to expose drift
on a shared machine): a tiny LSTM space on two months of the embedded data, 16 trials of at most 2 epochs.

    python -m benchmarks.bench_search_reuse_actors [--trials 16]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import ray

from benchmarks.report import markdown_table, write_section
from search import driver
from search.options import SearchOptions
from search.results import read_trials
from search.rundir import read_manifest

SPACE = """\
model: lstm
params:
  hidden_size: {type: int, low: 4, high: 16, log: true}
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
fixed: {num_layers: 1, batch_size: 1024}
default: {hidden_size: 8, lr: 1.0e-3}
"""
SEGMENTS = {"train": ("2018-11-01", "2018-12-31"), "valid": ("2019-01-01", "2019-01-31"),
            "test": ("2019-02-01", "2019-02-28")}


def one_search(workdir: Path, reuse: bool, trials: int, tag: str) -> tuple[float, int, int]:
    """(wall seconds, trials ended, epochs trained) of one search."""
    space = workdir / "space.yaml"
    space.write_text(SPACE)
    options = SearchOptions(models=["lstm"], space_files={"lstm": str(space)}, segments=dict(SEGMENTS),
                            samples=trials, max_epochs=2, grace_epochs=1, sampler="random", seed=0,
                            reuse_actors=reuse, storage_path=str(workdir / "runs"), name=tag,
                            progress_seconds=3600.0)
    start = time.perf_counter()
    [run_dir] = driver.run(options, stream=io.StringIO())
    seconds = time.perf_counter() - start
    records = read_trials(run_dir, read_manifest(run_dir))
    return seconds, len(records), sum(record.epochs for record in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    driver.start_ray(num_cpus=2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-reuse-") as directory:
        for index, reuse in enumerate((True, False, True)):
            seconds, ended, epochs = one_search(Path(directory), reuse, args.trials, f"run{index}")
            rows.append([index + 1, "yes" if reuse else "no", ended, epochs, f"{seconds:.1f}",
                         f"{ended / seconds * 60:.1f}"])
            print(f"reuse_actors={reuse}: {seconds:.1f} s for {ended} trials, {epochs} epochs", flush=True)
    ray.shutdown()
    table = markdown_table(["order", "reuse_actors", "trials", "epochs", "wall s", "trials / min"], rows)
    body = (f"One Ray session, 2 CPUs, 1 CPU per trial; {args.trials} trials of a tiny LSTM "
            f"(hidden 4-16, 1 layer) for at most 2 epochs (ASHA, grace 1) on two months of the embedded data; "
            f"runs in order A-B-A in one process. The machine was shared with other jobs while this ran, so "
            f"compare the rows of one run only.\n\n{table}\n")
    print(body)
    write_section("bench_search_reuse_actors", "Search: Tune actor reuse for short trials", body)


if __name__ == "__main__":
    main()
