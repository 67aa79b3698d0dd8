"""``python -m search <subcommand>``: run | resume | export (and whatever the table below lists).

To add a subcommand, add one line to ``SUBCOMMANDS``: name → (help, add_arguments(parser), main(args) -> exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from datasets import DataError
from search import cli, evaluate
from search.options import OptionError
from search.rundir import RunDirError
from spaces import SpaceError

Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: dict[str, Subcommand] = {
    "run": ("search hyperparameters (Ray Tune + Optuna + ASHA) and export the best config",
            cli.add_run_arguments, cli.run_main),
    "resume": ("continue an interrupted search", cli.add_resume_arguments, cli.resume_main),
    "export": ("rewrite best.yaml and best_qlib.yaml of a run", cli.add_export_arguments, cli.export_main),
    "evaluate": ("retrain best.yaml's config and Qlib's default; score the test segment", evaluate.add_arguments,
                 evaluate.run),
}

# Errors a user can cause with bad input: reported as one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (OptionError, SpaceError, RunDirError, DataError, FileNotFoundError)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m search", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][2](args)
    except USER_ERRORS as exc:
        return cli.fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
