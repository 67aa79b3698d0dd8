"""Subcommands ``run``, ``resume`` and ``export``: each an ``add_arguments(parser)`` and a ``main(args) -> int``.

Nothing heavy is imported until the arguments have been checked: a bad option is refused in a second, before
torch, Ray or the data load.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.arguments import add_arguments, from_arguments
from search.options import SCHEDULES, OptionError, SearchOptions


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, SearchOptions)
    parser.add_argument("--resume", action="store_true",
                        help="continue the search --storage-path/--name instead of starting one (default: off)")


def run_main(args: argparse.Namespace) -> int:
    if args.resume:
        if not getattr(args, "name", ""):
            raise OptionError("--resume needs --name (the search to continue, under --storage-path)")
        options = SearchOptions(storage_path=args.storage_path, name=args.name)
        options.validate()
        from search import driver
        return _status(driver.resume(options.search_dir, within=options.storage_path))
    options = from_arguments(SearchOptions, args)
    options.validate()
    from search import driver
    return _status(driver.run(options))


def _status(run_dirs: list[Path]) -> int:
    """0 when every run directory's search has ended, 130 when one was interrupted (Ctrl-C) and can be resumed."""
    from search import driver
    return 130 if any(driver.unfinished(run_dir) for run_dir in run_dirs) else 0


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory, or a search directory holding several")


def resume_main(args: argparse.Namespace) -> int:
    from search import driver
    return _status(driver.resume(args.run_dir))


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory, or a search directory holding several")
    parser.add_argument("--qlib-data", metavar="DIR", default=None,
                        help="the Qlib data directory best_qlib.yaml's provider_uri names (default: the searched "
                             "source when it is a Qlib directory; otherwise a placeholder the file explains)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="search",
                        help="best_qlib.yaml's n_epochs/early_stop: 'search' the budget the search trained under, "
                             "'qlib' Qlib's published schedule (default: search)")


def export_main(args: argparse.Namespace) -> int:
    from search import driver
    written = driver.export(args.run_dir, qlib_data=args.qlib_data, schedule=args.schedule)
    return 0 if written else 1


def epochs_budget(text: str) -> int | str:
    """``--epochs``: a positive number of epochs, or ``own`` (each config's own ``n_epochs``)."""
    if text == "own":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of epochs or 'own'; got {text!r}")
    return value


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's arguments."""
    parser.add_argument("best", type=Path, help="best.yaml written by `python -m search run`/`export`")
    parser.add_argument("--data", help="prepared dataset directory, or a source (Qlib dir / price table) to "
                        "prepare with best.yaml's segments (default: best.yaml's data)")
    parser.add_argument("--concepts", help="HIST's (symbol, concept) table to prepare the data with (default: "
                        "best.yaml's data.concepts)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per config (0..K-1), mean ± std (default: 1)")
    parser.add_argument("--epochs", type=epochs_budget, default=None, metavar="{N,own}",
                        help="epochs each config may train: N, or 'own' for each config's own n_epochs (Qlib's "
                             "200 for the default config) (default: the search's budget, best.yaml "
                             "search.max_epochs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the search's trials' own, best.yaml search.threads)")
    parser.add_argument("--device", default="cpu", help="torch device for training (default: cpu)")
    parser.add_argument("--pretrained", help="GATs/HIST/IGMTF base for both configs: an LSTM/GRU state_dict path, "
                        "'pretrain' or 'none' (default: the search's base from best.yaml, where a config fits it)")
    parser.add_argument("--out", type=Path, help="where evaluation.yaml and the plots go (default: beside best.yaml)")


def evaluate_main(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` subcommand."""
    from evaluation.evaluate import evaluate
    options: dict[str, Any] = {"device": args.device}
    if args.pretrained:
        options["pretrained"] = args.pretrained
    evaluate(args.best, data=args.data, seeds=args.seeds, epochs=args.epochs, threads=args.threads, out_dir=args.out,
             concepts=args.concepts, **options)
    return 0
