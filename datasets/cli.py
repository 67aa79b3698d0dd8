"""``alphatune prepare``: build Alpha360 arrays from a source and save them, printing a summary that explains itself.

Stage lines go to stderr while it works; ``--data`` (or ``--source``) left out means the embedded CSI300
2017–2019 data. The arguments are derived from ``PrepareOptions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphatune.arguments import option
from alphatune.datasets.options import DataOptions


@dataclass
class PrepareOptions(DataOptions):
    """``alphatune prepare``: a data spec and where to save the prepared arrays."""

    out: str = option("", "the directory to write the prepared dataset into", metavar="DIR", show="required")
    quiet: bool = option(False, "no progress lines on stderr", action="store_true")


def summary_text(ds: Any) -> str:
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


def prepare_main(options: PrepareOptions) -> int:
    from alphatune.datasets.build import prepare
    from alphatune.datasets.errors import DataError
    if not options.out:
        raise DataError("--out: name the directory to write the prepared dataset into")
    spec = options.spec()
    spans = {name: span for name, span in spec.segments.items() if span is not None}
    ds = prepare(options.data, market=options.market, benchmark=options.benchmark, concepts=options.concepts,
                 out=options.out, progress=not options.quiet, **spans)
    print(summary_text(ds))
    return 0
