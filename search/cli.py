"""Subcommands ``run``, ``resume`` and ``export``: each an ``add_arguments(parser)`` and a ``main(args) -> int``."""

from __future__ import annotations

import argparse
import sys

import models
from search.options import QUICK_SEGMENTS, SAMPLERS, OptionError, SearchOptions


def _span(text: str) -> tuple[str, str]:
    start, sep, end = text.partition(":")
    if not sep or not start or not end:
        raise argparse.ArgumentTypeError(f"expected START:END (e.g. 2017-01-01:2017-12-31); got {text!r}")
    return start, end


def _models(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    return list(models.REGISTRY) if names == ["all"] else names


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SearchOptions(name="unused")
    parser.add_argument("--model", type=_models, default=defaults.models,
                        help="model(s) to search, comma-separated, or 'all' (each in its own study); default lstm")
    parser.add_argument("--space", action="append", default=[], metavar="[MODEL=]FILE",
                        help="a space YAML file (per model: lstm=FILE; repeatable); default spaces/<model>.yaml")
    parser.add_argument("--data", default=None,
                        help="a prepared dataset directory, or a source to prepare (Qlib data directory, CSV/Parquet "
                             "price table); default: the embedded CSI300 2017-2019 data")
    for segment in ("train", "valid", "test"):
        parser.add_argument(f"--{segment}", type=_span, default=None, metavar="START:END",
                            help=f"{segment} dates (default: the source's; a bare run on the embedded data uses "
                                 f"{':'.join(QUICK_SEGMENTS[segment])})")
    parser.add_argument("--market", default=defaults.market)
    parser.add_argument("--benchmark", default=defaults.benchmark)
    parser.add_argument("--concepts", default=None, metavar="FILE",
                        help="HIST's (symbol, concept) table, CSV or Parquet, for a source without one (the embedded "
                             "data has its own)")
    parser.add_argument("--samples", type=int, default=defaults.samples, help="trials per model")
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs, help="epochs a trial may train at most")
    parser.add_argument("--grace-epochs", type=int, default=defaults.grace_epochs,
                        help="epochs before ASHA may stop a trial")
    parser.add_argument("--reduction-factor", type=float, default=defaults.reduction_factor,
                        help="ASHA keeps 1/R of the trials at each rung")
    parser.add_argument("--cpus-per-trial", type=float, default=defaults.cpus_per_trial)
    parser.add_argument("--gpus-per-trial", type=float, default=defaults.gpus_per_trial,
                        help="GPUs per trial (fractions share one GPU, e.g. 0.25)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="trials running at once (default: as many as the cluster's CPUs/GPUs fit when the "
                             "search starts; name it for a cluster that will grow)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="sampler seed")
    parser.add_argument("--metric", choices=("valid_ic", "score"), default=defaults.metric,
                        help="what ASHA and Optuna maximise: the validation IC, or the trainer's early-stopping "
                             "score (-valid loss, or IC for HIST/IGMTF)")
    parser.add_argument("--storage-path", default=defaults.storage_path,
                        help="where run directories go (on a multi-node cluster: storage every node shares)")
    parser.add_argument("--name", default="", help="search name (default search-<UTC time>); with --resume, the one "
                                                   "to continue")
    parser.add_argument("--max-failures", type=int, default=defaults.max_failures,
                        help="retries of a trial whose worker died (from its checkpoint)")
    parser.add_argument("--no-reuse-actors", dest="reuse_actors", action="store_false",
                        help="start a fresh worker process for every trial")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a new local one on 127.0.0.1)")
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (on 127.0.0.1)")
    parser.add_argument("--progress-seconds", type=float, default=defaults.progress_seconds)
    parser.add_argument("--pretrained", default=None, metavar="{pretrain,none,PATH}",
                        help="where GATs/HIST/IGMTF trials start: 'pretrain' (default) trains the LSTM/GRU base once "
                             "per search (registry defaults, at most --max-epochs epochs), 'none' random weights, "
                             "or a base file (our checkpoint or Qlib's .pkl); trials whose size differs from the "
                             "base's start from random weights. Ignored by the other models")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search --storage-path/--name instead of starting one")


def options_from_args(args: argparse.Namespace) -> SearchOptions:
    """``SearchOptions`` from parsed ``run`` arguments (not validated yet)."""
    space_files: dict[str, str] = {}
    for item in args.space:
        model, sep, path = item.partition("=")
        if not sep:
            if len(args.model) != 1:
                raise OptionError(f"--space {item}: with several models, write MODEL=FILE")
            model, path = args.model[0], item
        space_files[model.strip().lower()] = path
    return SearchOptions(
        models=args.model, space_files=space_files, data=args.data,
        segments={"train": args.train, "valid": args.valid, "test": args.test}, market=args.market,
        benchmark=args.benchmark, concepts=args.concepts, samples=args.samples, max_epochs=args.max_epochs, grace_epochs=args.grace_epochs,
        reduction_factor=args.reduction_factor, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent, sampler=args.sampler,
        seed=args.seed, metric=args.metric, storage_path=args.storage_path, name=args.name,
        max_failures=args.max_failures, reuse_actors=args.reuse_actors, address=args.address,
        dashboard=args.dashboard, progress_seconds=args.progress_seconds, pretrained=args.pretrained)


def run_main(args: argparse.Namespace) -> int:
    from search import driver
    if args.resume:
        if not args.name:
            raise OptionError("--resume needs --name (the search to continue, under --storage-path)")
        options = SearchOptions(storage_path=args.storage_path, name=args.name)
        driver.resume(options.search_dir)
        return 0
    driver.run(options_from_args(args))
    return 0


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory, or a search directory holding several")


def resume_main(args: argparse.Namespace) -> int:
    from search import driver
    driver.resume(args.run_dir)
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory, or a search directory holding several")


def export_main(args: argparse.Namespace) -> int:
    from search import driver
    written = driver.export(args.run_dir)
    return 0 if written else 1


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
