"""Subcommands ``run``, ``resume`` and ``export``: each an ``add_arguments(parser)`` and a ``main(args) -> int``.

Nothing heavy is imported until the arguments have been checked: a bad option is refused in a second, before
torch, Ray or the data load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alphatune.arguments import add_arguments, from_arguments
from alphatune.search.options import ExportOptions, OptionError, SearchOptions
from alphatune.search.rundir import find_run_dirs


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
        find_run_dirs(options.search_dir)
        from alphatune.search import driver
        return _status(driver.resume(options.search_dir, within=options.storage_path))
    options = from_arguments(SearchOptions, args)
    from alphatune.search import preflight
    checked = preflight.check(options)  # bad input is one line here, before torch and Ray load
    from alphatune.search import driver
    return _status(driver.run(options, checked=checked))


def _status(run_dirs: list[Path]) -> int:
    """0 when every run directory's search has ended, 130 when one was interrupted (Ctrl-C) and can be resumed."""
    from alphatune.search import driver
    return 130 if any(driver.unfinished(run_dir) for run_dir in run_dirs) else 0


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory, or a search directory holding several")


def resume_main(args: argparse.Namespace) -> int:
    find_run_dirs(args.run_dir)  # a path without a run is one line before torch and Ray load
    from alphatune.search import driver
    return _status(driver.resume(args.run_dir))


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, ExportOptions)


def export_main(args: argparse.Namespace) -> int:
    options = from_arguments(ExportOptions, args)
    options.validate()
    find_run_dirs(options.run_dir)
    from alphatune.search import driver
    written = driver.export(options.run_dir, qlib_data=options.qlib_data, schedule=options.schedule)
    return 0 if written else 1
