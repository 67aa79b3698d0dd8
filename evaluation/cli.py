"""``alphatune evaluate``: its arguments (derived from ``EvaluateOptions``) and what it runs."""

from __future__ import annotations

import argparse

from alphatune.arguments import add_arguments, from_arguments
from alphatune.evaluation.options import EvaluateOptions


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, EvaluateOptions)


def evaluate_main(args: argparse.Namespace) -> int:
    from alphatune.evaluation.evaluate import evaluate
    options = from_arguments(EvaluateOptions, args)
    fit_options = {"device": options.device, "amp": options.amp, "graphs": options.graphs, "tf32": options.tf32,
                   **({"pretrained": options.pretrained} if options.pretrained else {})}
    evaluate(options.best, data=options.data, seeds=options.seeds, epochs=options.epochs, threads=options.threads,
             out_dir=options.out, concepts=options.concepts, **fit_options)
    return 0
