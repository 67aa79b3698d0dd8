"""``alphatune evaluate``: its arguments (derived from ``EvaluateOptions``) and what it runs."""

from __future__ import annotations


from alphatune.evaluation.best import Best
from alphatune.evaluation.options import EvaluateOptions


def evaluate_main(options: EvaluateOptions) -> int:
    Best.read(options.best)  # a missing or bad best.yaml is one line before torch loads
    from alphatune.evaluation.evaluate import evaluate
    fit_options = {"device": options.device, "amp": options.amp, "graphs": options.graphs, "tf32": options.tf32,
                   **({"pretrained": options.pretrained} if options.pretrained else {})}
    evaluate(options.best, data=options.data, seeds=options.seeds, epochs=options.epochs, threads=options.threads,
             out_dir=options.out, concepts=options.concepts, **fit_options)
    return 0
