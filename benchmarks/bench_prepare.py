"""Time and peak memory of ``datasets.prepare``: CSI300 2010-2020 from ../shared/data/cn_csi300, and the embedded data.

Each measurement runs in a fresh Python process (peak memory is that process's ``ru_maxrss``, which counts numpy
buffers, unlike tracemalloc). Targets (issue 2): a fresh prepare of CSI300 2010-2020 under 30 s with peak
memory under 3× the prepared arrays, and a second prepare from the saved result under 2 s.

    python benchmarks/bench_prepare.py [--source DIR] [--repeat N] [--no-record] [--smoke]

Prints a markdown table and records it in docs/benchmarks.md (section ``bench_prepare``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402

CN_CSI300 = ROOT.parent / "shared" / "data" / "cn_csi300"
SEGMENTS = {"train": ("2010-01-01", "2016-12-31"), "valid": ("2017-01-01", "2018-12-31"),
            "test": ("2019-01-01", "2020-12-31")}

# Runs in the child process: prepare once, then report seconds, peak RSS and the prepared arrays' size.
CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
import numpy as np
from alphatune import datasets
imported = time.perf_counter()
baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
source, cache, segments = sys.argv[1] or None, sys.argv[2], json.loads(sys.argv[3])
began = time.perf_counter()
ds = datasets.prepare(source, cache_dir=cache, progress=False, **segments)
prepared = time.perf_counter()
touched = sum(float(ds.segment(n).features[::4096].sum()) for n in ds.arrays)  # read a page of each segment
arrays = sum(getattr(ds.segment(n), f).nbytes for n in ds.arrays
             for f in ("features", "labels", "raw_labels", "day_offsets", "dates", "instrument_index"))
market = ds.market
arrays += sum(a.nbytes for a in (market.close, market.factor, market.change)) if market is not None else 0
print(json.dumps({"import_s": imported - started, "prepare_s": prepared - began,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "baseline_mb": baseline_kb / 1024, "arrays_mb": arrays / 2**20,
                  "rows": {n: len(ds.segment(n)) for n in ds.arrays}}))
"""


def measure(source: str, cache: Path, segments: dict) -> dict:
    """One prepare in a fresh interpreter; returns the child's JSON line."""
    result = subprocess.run([sys.executable, "-c", CHILD, source, str(cache), json.dumps(segments)],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=CN_CSI300, help="Qlib data directory (default cn_csi300)")
    parser.add_argument("--repeat", type=int, default=2, help="fresh prepares of the Qlib directory to time")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP)
    args = parser.parse_args(argv)
    source, segments = str(args.source), SEGMENTS
    if args.smoke:
        source, segments, args.repeat, args.no_record = "", report.SMOKE_SEGMENTS, 1, True
    elif not args.source.is_dir():
        raise SystemExit(f"{args.source}: not found; this benchmark needs the Qlib data directory")

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as scratch:
        runs = [("CSI300 2010-2020, fresh (empty cache)", source, segments, Path(scratch) / f"fresh{i}")
                for i in range(args.repeat)]
        runs.append(("CSI300 2010-2020, second prepare (saved result)", source, segments,
                     Path(scratch) / "fresh0"))
        if not args.smoke:
            runs.append(("embedded CSI300 2017-2019, fresh", "", {}, Path(scratch) / "embedded"))
            runs.append(("embedded CSI300 2017-2019, second prepare", "", {}, Path(scratch) / "embedded"))
        for label, source, segments, cache in runs:
            result = measure(source, cache, segments)
            print(f"{label}: {json.dumps(result)}", file=sys.stderr)
            rows.append((label, result))

    table = report.markdown_table(
        ["run", "prepare s", "peak RSS MB", "RSS after imports MB", "prepared arrays MB", "peak / arrays",
         "rows train / valid / test"],
        [[label, f"{r['prepare_s']:.2f}", f"{r['peak_mb']:,.0f}", f"{r['baseline_mb']:,.0f}",
          f"{r['arrays_mb']:,.0f}", f"{r['peak_mb'] / r['arrays_mb']:.2f}",
          " / ".join(f"{n:,}" for n in r["rows"].values())] for label, r in rows])
    fresh = [r for label, r in rows if "fresh (empty" in label]
    second = next(r for label, r in rows if "second prepare (saved" in label)
    worst_fresh = max(r["prepare_s"] for r in fresh)
    worst_ratio = max(r["peak_mb"] / r["arrays_mb"] for r in fresh)
    verdict = (f"Targets: fresh prepare < 30 s: **{'met' if worst_fresh < 30 else 'missed'}** (slowest "
               f"{worst_fresh:.1f} s); peak memory < 3× arrays: **{'met' if worst_ratio < 3 else 'missed'}** "
               f"(worst {worst_ratio:.2f}×); second prepare < 2 s: **{'met' if second['prepare_s'] < 2 else 'missed'}** "
               f"({second['prepare_s']:.2f} s).")
    body = "\n\n".join([
        f"Source `{args.source}` (train 2010–2016, valid 2017–2018, test 2019–2020) and the embedded data. "
        "Each row is one `datasets.prepare` call in a fresh Python process; *prepare s* excludes interpreter "
        "start and imports, *peak RSS* is the process's `ru_maxrss` (imports included). A fresh prepare reads "
        "the bins, builds and processes the features and writes the Arrow files; the second prepare finds the "
        "saved result by its cache key and memory-maps it. The machine is shared with other engineers' jobs, so "
        "seconds are noisy; the rows were measured one after the other in this run.",
        table, verdict])
    print(body)
    if not args.no_record:
        report.write_section("bench_prepare", "Data preparation: time and peak memory", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
