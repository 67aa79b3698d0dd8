"""``alphatune evaluate``: its arguments (derived from ``EvaluateOptions``) and what it runs."""

from __future__ import annotations


from alphatune.evaluation.best import Best, epoch_budget
from alphatune.evaluation.options import EvaluateOptions


def evaluate_main(options: EvaluateOptions) -> int:
    options.validate()
    epoch_budget(Best.read(options.best), options.epochs, options.best)  # a missing, bad or cut best.yaml: one line before torch
    fit_options = {"device": options.device, "amp": options.amp, "graphs": options.graphs, "tf32": options.tf32,
                   **({"pretrained": options.pretrained} if options.pretrained else {})}
    common = dict(seeds=options.seeds, epochs=options.epochs, threads=options.threads, out_dir=options.out,
                  concepts=options.concepts, **fit_options)
    if options.rolling is not None:
        from alphatune.evaluation.rolling import evaluate_rolling
        evaluate_rolling(options.best, options.rolling, options.rolling_train, **common)
        return 0
    from alphatune.evaluation.evaluate import evaluate
    evaluate(options.best, data=options.data, **common)
    return 0
