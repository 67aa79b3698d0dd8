"""``python -m search <subcommand>``: run, resume, export or evaluate a hyperparameter search.

Bad input ends in one line on stderr and exit status 2; Ctrl-C ends with "interrupted" and status 130, without a
traceback, whatever the command was waiting for.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from search import cli

Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: dict[str, Subcommand] = {
    "run": ("search hyperparameters (Ray Tune + Optuna + ASHA) and export the best config",
            cli.add_run_arguments, cli.run_main),
    "resume": ("continue an interrupted search", cli.add_resume_arguments, cli.resume_main),
    "export": ("rewrite best.yaml and best_qlib.yaml of a run", cli.add_export_arguments, cli.export_main),
    "evaluate": ("retrain best.yaml's config and Qlib's default; score the test segment",
                 cli.add_evaluate_arguments, cli.evaluate_main),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can cause with bad input: reported as one line, no traceback. (Imported here, when one is
    being handled, so that the command line stays light.)"""
    from datasets import DataError
    from search.cluster import ClusterError
    from evaluation.errors import EvaluationError
    from search.options import OptionError
    from search.rundir import RunDirError
    from spaces import SpaceError
    return OptionError, SpaceError, RunDirError, DataError, ClusterError, EvaluationError, FileNotFoundError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m search", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        return SUBCOMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if isinstance(error, user_errors()):
            print(f"error: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}",
                  file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
