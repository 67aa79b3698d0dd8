"""What a search checks before it loads anything heavy or creates anything.

``check(options)`` runs, in this order, everything that bad input can fail: the options (space files must
exist), the ``--address`` probe (seconds, not Ray's minute of retries), the storage (writable, without creating a
folder), run directories already holding a search, then the data (opened with numpy and pandas only: a missing
column, a bad date, an empty file, reversed segments, a folder that is not a Qlib directory are one line in
about a second, before torch and Ray load; a space file's YAML and its shape are checked before it), what each model
needs of it (HIST's concepts), the walk-forward folds (``--folds``: cut from the source's calendar, each fold's data
prepared once), and last the spaces' values, checked against each model's declared hyperparameters (which live
beside the networks, so this loads torch).
Only then does the driver import Ray, start it and create the run directories: a refused search leaves nothing
behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphatune import models, spaces
from alphatune.datasets import DataError, DataSpec
from alphatune.search.cluster import check_gpus, check_named_address
from alphatune.search.folds import FoldPlan, open_folds, plan_folds
from alphatune.search.options import OptionError, SearchOptions, without_password
from alphatune.search.rundir import MANIFEST, RunDirError, check_not_held, check_writable
from alphatune.spaces import Space
from alphatune.storage import error_chain


@dataclass
class Checked:
    """A search that passed every check: its models' spaces, its opened dataset, the windows its trials are judged
    on and each fold's dataset (``[dataset]`` for one fold)."""

    spaces: dict[str, Space]
    dataset: Any  # datasets.PreparedDataset
    folds: FoldPlan
    fold_datasets: list[Any]


def check(options: SearchOptions) -> Checked:
    """Check ``options`` and open their data (see the module doc); raises the one-line errors of bad input."""
    options.validate()
    if options.uses_base_file:  # a file given for the GATs/HIST/IGMTF base: it must load as one (this loads torch)
        from alphatune.models.bases import read_base
        try:
            read_base(options.pretrained)
        except (FileNotFoundError, ValueError) as error:
            raise OptionError(f"--pretrained: {error}") from None
    check_named_address(options.address)
    check_gpus(options.gpus_per_trial, options.address)  # before the data: torch says at once whether CUDA is here
    check_writable(options.search_dir, "--storage-path")
    for model in options.models:
        check_not_held(options.run_dir(model))
        if (options.run_dir(model) / MANIFEST).exists():
            raise RunDirError(f"{options.run_dir(model)} already holds a search; resume it (--resume / resume) or "
                              f"pick --name")
    if options.study_storage:
        check_study_storage(options)
    for model, path in options.space_files.items():  # damaged space files: one line before the data and torch
        spaces.check_file(path, model)
    ds = options.spec().open()
    check_dataset(ds, options.models)
    spec = DataSpec.of(ds, options.concepts)
    try:
        plan = plan_folds(spec, ds, options.folds, options.fold_train)
        fold_datasets = open_folds(spec, plan, ds)
    except DataError as error:
        raise OptionError(str(error)) from None
    return Checked(options.load_spaces(), ds, plan, fold_datasets)  # values through the models' rules: torch


def check_dataset(ds: Any, model_names: list[str]) -> None:
    """Refuse (``OptionError``) a searched model whose needs ``ds`` lacks (HIST: its concept table)."""
    for name in model_names:
        try:
            models.get_spec(name).check_dataset(ds)
        except ValueError as error:
            raise OptionError(f"--model {error}") from None


# SQLAlchemy's driver name in a storage URL (``postgresql+psycopg://``) → the package that provides it.
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "postgresql": "psycopg2-binary",
           "pymysql": "pymysql", "mysqldb": "mysqlclient", "mysql": "mysqlclient"}


def check_study_storage(options: SearchOptions) -> None:
    """``--study-storage`` must answer within seconds, take Optuna's tables, and not hold this search's studies
    yet (``OptionError`` naming it otherwise)."""
    import socket
    from urllib.parse import urlsplit
    url = options.study_storage
    parts = urlsplit(url)
    if parts.hostname:
        port = parts.port or {"postgresql": 5432, "mysql": 3306}.get(parts.scheme.split("+")[0])
        if port is not None:
            try:
                with socket.create_connection((parts.hostname, port), timeout=5):
                    pass
            except OSError as error:
                reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error)).lower()
                raise OptionError(f"--study-storage {without_password(url)}: nothing answers at {parts.hostname}:{port} "
                                  f"({reason})") from None
    import optuna
    try:
        storage = optuna.storages.RDBStorage(url)
        existing = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    except Exception as error:  # a driver missing, a refused login, a database that does not exist, ...
        missing = [link for link in error_chain(error) if isinstance(link, ImportError)]
        if missing:
            module = next((link.name for link in reversed(missing) if link.name), None)
            package = DRIVERS.get(parts.scheme.split("+")[-1])
            raise OptionError(f"--study-storage {without_password(url)}: its database driver "
                              f"{module or package or ''} is not installed"
                              + (f"; install it: pip install '{package}'" if package else "")) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OptionError(f"--study-storage {without_password(url)}: {first}") from None
    taken = [f"{options.name}/{model}" for model in options.models if f"{options.name}/{model}" in existing]
    if taken:
        raise OptionError(f"--study-storage {without_password(url)} already holds the study {taken[0]}: resume that "
                          f"search, or pick --name")
