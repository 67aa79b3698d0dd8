"""Command line: ``python -m datasets prepare --source PATH [--market csi300] [--train A:B] ... --out DIR``.

Prints a summary (stocks, days and rows per segment, share of missing feature values, notes) and stage lines
on stderr while it works. ``--source`` left out means the embedded CSI300 2017–2019 data.
"""

from __future__ import annotations

import argparse
import sys

from datasets.build import prepare
from datasets.errors import DataError
from datasets.prepared import PreparedDataset


def date_range(text: str) -> tuple[str, str]:
    """``A:B`` → (A, B); dates are checked later by ``prepare``."""
    start, sep, end = text.partition(":")
    if not sep or not start or not end:
        raise argparse.ArgumentTypeError(f"expected START:END (e.g. 2017-01-01:2018-12-31), got {text!r}")
    return start, end


def summary_text(ds: PreparedDataset) -> str:
    """The summary table and the notes that explain its figures."""
    info = ds.summary()
    lines = [f"source     {info['source']}", f"market     {info['market']}  (benchmark: {ds.benchmark or 'none'}"
             f"{'' if ds.market is not None and ds.market.benchmark_close is not None else ', not in the source'})",
             f"stocks     {info['stocks']}", f"saved at   {ds.path}", "",
             "| segment | dates | days | rows | stocks | missing feature values (set to 0) | rows without a label |",
             "|---|---|---|---|---|---|---|"]
    for name in ds.arrays:
        seg = info[name]
        unlabelled = (f"{seg.get('rows_dropped_no_label', 0):,} dropped" if name != "test"
                      else f"{seg['nan_raw_label_share']:.2%} kept (NaN)")
        lines.append(f"| {name} | {seg['range'][0]} .. {seg['range'][1]} | {seg['days']:,} | {seg['rows']:,} | "
                     f"{seg['stocks']} | {seg.get('missing_feature_share', float('nan')):.1%} | {unlabelled} |")
    lines += ["", "missing feature values: a window's days before a stock's first trade or during a suspension, and "
                  "whole fields the source lacks; by field (train):"]
    by_field = info.get("train", {}).get("missing_by_field") or {}
    if by_field:
        lines.append("  " + ", ".join(f"{field} {share:.1%}" + (" (the source has no vwap)" if share >= 0.999 else "")
                                      for field, share in by_field.items()))
    lines.append("rows without a label: the label needs the next two closes; train and valid drop such rows (as "
                 "Qlib's DropnaLabel), test keeps them with a NaN label (the last days of the data, suspensions)")
    if ds.concepts is not None:
        lines.append(f"\nconcepts   {ds.concepts.shape[1]} (matrix {ds.concepts.shape[0]} x {ds.concepts.shape[1]})")
    lines += [f"note: {note}" for note in info["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("prepare", help="prepare Alpha360 arrays from a source and save them")
    run.add_argument("--source", default=None, help="Qlib data directory or CSV/Parquet price table "
                                                    "(default: the embedded CSI300 2017-2019 data)")
    run.add_argument("--market", default="csi300", help="instruments file name, membership table path, or 'all'")
    for name in ("train", "valid", "test"):
        run.add_argument(f"--{name}", type=date_range, default=None, metavar="START:END",
                         help=f"{name} segment, inclusive (default: the source's)")
    run.add_argument("--benchmark", default="SH000300", help="benchmark index symbol (default SH000300)")
    run.add_argument("--concepts", default=None, help="(symbol, concept) table for HIST")
    run.add_argument("--out", required=True, help="directory to write the prepared dataset into")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    try:
        ds = prepare(args.source, market=args.market, train=args.train, valid=args.valid, test=args.test,
                     benchmark=args.benchmark, concepts=args.concepts, out=args.out, progress=not args.quiet)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_text(ds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
