"""alphatune: prepare Alpha360 data, search hyperparameters, evaluate the winner, list the models.

    alphatune prepare ...                 build Alpha360 arrays and save them        (alphatune.datasets.cli)
    alphatune search run|resume|export    search hyperparameters, go on, re-export   (alphatune.search.cli)
    alphatune evaluate BEST_YAML          searched vs Qlib's default on the test segment (alphatune.evaluation.cli)
    alphatune models list                 the eight models and Qlib's defaults       (alphatune.models.cli)

Bad input ends in one line on stderr (``error: ...``, with any secret it would quote redacted) and exit status 2; Ctrl-C ends with "interrupted" and status
130, without a traceback, whatever the command was waiting for. SIGTERM (``kill``, a batch scheduler's stop) is
Ctrl-C too: a search stops its trials, saves, says how to resume and leaves no Ray process
behind. Nothing heavy (torch, Ray, pandas) is imported before the arguments are checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from alphatune import __version__, interrupts
from alphatune.arguments import add_arguments, from_arguments
from alphatune.datasets import cli as datasets_cli
from alphatune.evaluation import cli as evaluation_cli
from alphatune.evaluation.options import EvaluateOptions
from alphatune.models import cli as models_cli
from alphatune.search import cli as search_cli
from alphatune.search.options import ExportOptions, ResumeOptions, SearchOptions

Command = tuple[str, type, Callable[[Any], int]]  # help, the options dataclass, main(options) -> exit status

COMMANDS: dict[str, Command | dict[str, Command]] = {
    "prepare": ("prepare Alpha360 arrays from a source (Qlib directory, price table, embedded data) and save them",
                datasets_cli.PrepareOptions, datasets_cli.prepare_main),
    "search": {
        "run": ("search hyperparameters (Ray Tune + Optuna + ASHA) and export the best config",
                SearchOptions, search_cli.run_main),
        "resume": ("continue an interrupted search", ResumeOptions, search_cli.resume_main),
        "export": ("rewrite best.yaml and best_qlib.yaml of a run", ExportOptions, search_cli.export_main),
    },
    "evaluate": ("retrain best.yaml's config and Qlib's default; score both on the test segment",
                 EvaluateOptions, evaluation_cli.evaluate_main),
    "models": {
        "list": ("every model with its hyperparameters (Qlib's Alpha360 defaults)", models_cli.ListOptions,
                 models_cli.list_main),
    },
}
GROUP_HELP = {"search": "search hyperparameters: run, resume, export", "models": "the model registry: list"}


def _add_command(commands: Any, name: str, command: Command) -> None:
    """One subcommand: its arguments derived from its options dataclass, its main called with the options."""
    help_text, options_class, main_function = command
    sub = commands.add_parser(name, help=help_text, description=help_text)
    add_arguments(sub, options_class)
    sub.set_defaults(main=lambda args: main_function(from_arguments(options_class, args)))


class OneLineParser(argparse.ArgumentParser):
    """argparse with bad arguments as one line (``error: alphatune search run: argument --metric: invalid choice:
    ...``, exit 2), not the usage block before it; ``--help`` shows the usage. argparse quotes what it did not
    take (``unrecognized arguments: --study-storage postgresql://u:PASSWORD@...``): any secret in it is
    redacted."""

    def error(self, message: str) -> NoReturn:
        from alphatune.storage.secrets import redact
        self.exit(2, f"error: {self.prog}: {redact(message)} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = OneLineParser(prog="alphatune", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"alphatune {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, entry in COMMANDS.items():
        if isinstance(entry, dict):
            group = commands.add_parser(name, help=GROUP_HELP[name], description=GROUP_HELP[name])
            subcommands = group.add_subparsers(dest="subcommand", required=True, metavar="{" + ",".join(entry) + "}")
            for subname, command in entry.items():
                _add_command(subcommands, subname, command)
        else:
            _add_command(commands, name, entry)
    return top


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors bad input causes: reported as one line, no traceback. (Imported when one is being handled, so that
    the command line stays light.)"""
    from alphatune.datasets.errors import DataError
    from alphatune.evaluation.errors import EvaluationError
    from alphatune.search.cluster import ClusterError
    from alphatune.search.ledger import LedgerError
    from alphatune.search.options import OptionError
    from alphatune.search.rundir import RunDirError
    from alphatune.spaces import SpaceError
    from alphatune.storage import StorageError
    return (OptionError, SpaceError, RunDirError, LedgerError, DataError, ClusterError, EvaluationError,
            StorageError, FileNotFoundError)


def _interrupted() -> int:
    interrupts.handled()
    from alphatune.search.rundir import lost_writer
    taken = lost_writer()  # a lease taken over interrupts its holder: say why, not "interrupted"
    print(f"error: {taken}; this process stopped writing it" if taken else "interrupted", file=sys.stderr)
    return 2 if taken else 130


def main(argv: list[str] | None = None) -> int:
    interrupts.install()
    try:
        args = parser().parse_args(argv)
        return args.main(args)
    except BrokenPipeError:  # the reader went away (`alphatune models list | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as error:
        if interrupts.caused(error):
            return _interrupted()
        if isinstance(error, user_errors()):
            from alphatune.storage import redact
            text = redact(str(error).strip())
            print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
