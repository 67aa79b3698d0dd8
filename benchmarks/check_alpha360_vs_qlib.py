"""Parity check: our ``datasets.prepare`` against Qlib's own Alpha360 handler, row set, features and labels.

Qlib's side runs in the Qlib virtualenv (``benchmarks/qlib_side.py alpha360``: the ``Alpha360`` handler with the
processors of Qlib's Alpha360 YAMLs, RobustZScoreNorm(clip_outlier) + Fillna on features, DropnaLabel +
CSRankNorm on the learn label, fit window = the train segment). Train and valid are compared with Qlib's learn
frame, test with its infer frame and raw label. The target is a difference of exactly 0 everywhere.

    python benchmarks/check_alpha360_vs_qlib.py [--source DIR] [--train A B --valid A B --test A B] [--kernels 2]
    python benchmarks/check_alpha360_vs_qlib.py --smoke   # no Qlib: ours against ours saved and loaded again

Prints a markdown table and records it in docs/benchmarks.md (section ``check_alpha360_vs_qlib``); exits 1 when
any segment differs (the table is still recorded).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alphatune import datasets  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks._qlib_bridge import CN_CSI300, SEGMENTS, SegmentFiles, read_segment, run_qlib_side  # noqa: E402


def compare_segment(name: str, ours: SegmentFiles, qlib: SegmentFiles) -> dict[str, object]:
    """Row set, order, feature and label differences of one segment (labels: NaN positions must agree too)."""
    only_ours = ours.index.difference(qlib.index)
    only_qlib = qlib.index.difference(ours.index)
    common = ours.index.intersection(qlib.index)
    at_ours = ours.index.get_indexer(common)
    at_qlib = qlib.index.get_indexer(common)
    feature_diff = np.abs(ours.features[at_ours].astype(np.float64) - qlib.features[at_qlib])
    ours_label, qlib_label = ours.labels[at_ours].astype(np.float64), qlib.labels[at_qlib].astype(np.float64)
    nan_mismatch = int((np.isnan(ours_label) != np.isnan(qlib_label)).sum())
    both = ~np.isnan(ours_label) & ~np.isnan(qlib_label)
    label_diff = np.abs(ours_label[both] - qlib_label[both])
    worst = np.unravel_index(int(np.argmax(feature_diff)), feature_diff.shape) if feature_diff.size else (0, 0)
    return {
        "segment": name, "rows_ours": len(ours.index), "rows_qlib": len(qlib.index),
        "only_ours": len(only_ours), "only_qlib": len(only_qlib),
        "same_order": bool(ours.index.equals(qlib.index)),
        "feature_max_abs": float(feature_diff.max()) if feature_diff.size else 0.0,
        "features_differing": int((feature_diff > 0).sum()),
        "label_max_abs": float(label_diff.max()) if label_diff.size else 0.0,
        "labels_differing": int((label_diff > 0).sum()),
        "label_nan_mismatch": nan_mismatch,
        "worst_feature": (f"{common[worst[0]][1]} {common[worst[0]][0].date()} col {worst[1]}"
                          if len(common) and feature_diff.max() > 0 else "-"),
        "first_only_ours": " ".join(map(str, only_ours[0])) if len(only_ours) else "-",
        "first_only_qlib": " ".join(map(str, only_qlib[0])) if len(only_qlib) else "-",
    }


def ours_as_files(ds: datasets.PreparedDataset, name: str) -> SegmentFiles:
    seg = ds.segment(name)
    return SegmentFiles(np.asarray(seg.features), np.asarray(seg.labels), seg.index())


def smoke() -> int:
    """``--smoke``: the comparison of this script run on two weeks of the embedded data, ours against ours saved
    and memory-mapped back (``datasets.save`` / ``load``): proves the script runs and the save is exact, says
    nothing about Qlib."""
    ds = datasets.DataSpec(**report.SMOKE_SEGMENTS).open(progress=False)
    with tempfile.TemporaryDirectory(prefix="alpha360_smoke_") as scratch:
        datasets.save(ds, Path(scratch) / "data")
        loaded = datasets.load(Path(scratch) / "data")
        rows = [compare_segment(name, ours_as_files(ds, name), ours_as_files(loaded, name)) for name in SEGMENTS]
    print(report.markdown_table(["segment", "rows", "features max abs diff", "labels max abs diff"],
                                [[r["segment"], r["rows_ours"], r["feature_max_abs"], r["label_max_abs"]]
                                 for r in rows]))
    exact = all(r["feature_max_abs"] == 0 and r["label_max_abs"] == 0 and r["same_order"] for r in rows)
    return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=CN_CSI300, help="a Qlib data directory")
    parser.add_argument("--market", default="csi300")
    parser.add_argument("--train", nargs=2, default=["2016-01-01", "2016-12-31"])
    parser.add_argument("--valid", nargs=2, default=["2017-01-01", "2017-06-30"])
    parser.add_argument("--test", nargs=2, default=["2017-07-01", "2017-12-31"])
    parser.add_argument("--kernels", type=int, default=2, help="Qlib's worker processes")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP + " (Qlib's side is not run: "
                        "ours is compared with itself saved and loaded again)")
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke()
    segments = {name: tuple(getattr(args, name)) for name in SEGMENTS}

    with tempfile.TemporaryDirectory(prefix="alpha360_qlib_") as scratch:
        qlib_dir = Path(scratch)
        qlib_wall = run_qlib_side("alpha360", "--provider-uri", str(args.source), "--market", args.market,
                                  *[f for name in SEGMENTS for f in (f"--{name}", *segments[name])],
                                  "--kernels", str(args.kernels), "--out", str(qlib_dir))
        qlib_handler = float(pd.read_json(qlib_dir / "timing.json", typ="series")["handler_seconds"])
        qlib = {name: read_segment(qlib_dir, name) for name in SEGMENTS}

        started = time.perf_counter()
        ds = datasets.prepare(str(args.source), market=args.market, **segments, cache_dir=qlib_dir / "cache",
                              progress=False)  # an empty cache: a fresh prepare, timed
        ours_seconds = time.perf_counter() - started
        rows = [compare_segment(name, ours_as_files(ds, name), qlib[name]) for name in SEGMENTS]

    exact = all(r["only_ours"] == 0 and r["only_qlib"] == 0 and r["same_order"] and r["feature_max_abs"] == 0
                and r["label_max_abs"] == 0 and r["label_nan_mismatch"] == 0 for r in rows)
    table = report.markdown_table(
        ["segment", "dates", "rows ours / Qlib", "rows only ours / only Qlib", "same order",
         "features max abs diff (values ≠)", "labels max abs diff (values ≠)", "label NaN mismatches"],
        [[r["segment"], " .. ".join(segments[r["segment"]]), f"{r['rows_ours']:,} / {r['rows_qlib']:,}",
          f"{r['only_ours']} / {r['only_qlib']}", "yes" if r["same_order"] else "no",
          f"{r['feature_max_abs']:.3g} ({r['features_differing']:,})",
          f"{r['label_max_abs']:.3g} ({r['labels_differing']:,})", r["label_nan_mismatch"]] for r in rows])
    details = [f"- {r['segment']}: worst feature {r['worst_feature']}; first row only ours: "
               f"{r['first_only_ours']}; only Qlib: {r['first_only_qlib']}"
               for r in rows if r["worst_feature"] != "-" or r["only_ours"] or r["only_qlib"]]
    timing = report.markdown_table(
        ["prepare", "seconds"],
        [["ours: `datasets.prepare` (fresh, no cache)", f"{ours_seconds:.1f}"],
         [f"Qlib: `Alpha360` handler, kernels={args.kernels}", f"{qlib_handler:.1f}"],
         ["Qlib: whole subprocess (imports, init, handler, export)", f"{qlib_wall:.1f}"],
         ["ratio Qlib handler / ours", f"{qlib_handler / ours_seconds:.1f}×"]])
    body = "\n\n".join([
        f"Source `{args.source}`, market `{args.market}`; robust z-score fitted on the train segment. Train and "
        "valid against Qlib's learn frame (DropnaLabel + CSRankNorm), test against its infer frame with the raw "
        "label. Target: 0 everywhere.",
        table, *(["\n".join(details)] if details else []),
        f"**Result: {'identical (every difference is exactly 0)' if exact else 'DIFFERENT'}.**",
        "Prepare time, measured one after the other in this run (the machine is shared with other engineers' "
        "jobs right now, so absolute seconds are noisy):", timing])
    print(body)
    if not args.no_record:
        report.write_section("check_alpha360_vs_qlib", "Alpha360: ours vs Qlib's handler (parity)", body)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
