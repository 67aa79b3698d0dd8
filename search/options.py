"""What a search is asked to do: one validated dataclass, filled from the command line or from code.

Each field is declared once with its default and help (``search.arguments.option``); the ``run`` subcommand's
arguments are derived from it. Everything is checked in ``validate``, before torch, Ray or the data are loaded:
model names, space files, budgets, resources, names and paths. A bad value raises ``OptionError`` with one line
naming the option (as the command line spells it) and the value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from alphatune.arguments import option, recorded
from alphatune.datasets.options import DataOptions
from alphatune.datasets.periods import FOLD_TRAIN, check_folds
from alphatune.datasets.sources import EMBEDDED, is_prepared, is_qlib_dir
from alphatune.models.options import FitOptions
from alphatune.models.registry import REGISTRY
from alphatune.search.objective import OBJECTIVES
from alphatune.storage import Location, StorageError, is_uri

SAMPLERS = ("tpe", "random", "cmaes", "qmc")
# Set by Ray in the environment of a driver started with `ray job submit`.
RAY_JOB_ENVIRONMENT = "RAY_JOB_CONFIG_JSON_ENV_VAR"
SEGMENTS = ("train", "valid", "test")
# best_qlib.yaml's training schedule: the budget the search trained under, or Qlib's published one.
SCHEDULES = ("search", "qlib")


class OptionError(ValueError):
    """A search option is invalid; the message names the option and the value."""


def model_list(text: str) -> list[str]:
    """``--model`` text: comma-separated names (case-insensitive), or ``all``."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    return list(REGISTRY) if names == ["all"] else names


def space_entries(items: list[str]) -> dict[str, str]:
    """``--space`` entries (``MODEL=FILE`` or a bare ``FILE``) → model → file; a bare file is keyed ``""``
    (the one searched model's, resolved by ``SearchOptions.validate``)."""
    out: dict[str, str] = {}
    for item in items:
        model, sep, path = item.partition("=")
        out[model.strip().lower() if sep else ""] = path if sep else item
    return out


@dataclass
class SearchOptions(DataOptions, FitOptions):
    """A search: which models, over which spaces, on which data, with what budget, where the results go.

    The data (``DataOptions``: ``data``, a prepared dataset directory or a source to prepare, ``None`` for the
    embedded data; the segments, ``None`` for the source's defaults; ``spec()`` is all of it as a ``DataSpec``) and
    how trials run (``FitOptions``: amp, graphs, TF32, where GATs, HIST and IGMTF start) are declared where they
    belong. ``space_files`` maps a model to its space file (default: the shipped one). ``max_epochs`` caps every
    trial (the space's ``n_epochs`` still applies when smaller); ASHA stops trials at rungs
    ``grace_epochs · reduction_factor^k``. ``metric`` is the objective (``search.objective``).
    ``storage_path/name/<model>`` is each model's run directory.
    """

    models: list[str] = option(["lstm"], "model(s) to search, comma-separated, or 'all' (each in its own study)",
                               flag="--model", parse=model_list, metavar="MODEL[,MODEL...]", show=",".join)
    space_files: dict[str, str] = option({}, "a space YAML file, MODEL=FILE per model (repeatable)", flag="--space",
                                         action="append", metavar="[MODEL=]FILE", collect=space_entries,
                                         show="spaces/<model>.yaml")
    samples: int = option(8, "trials per model")
    max_epochs: int = option(6, "epochs a trial may train at most (per fold)")
    grace_epochs: int = option(1, "epochs before ASHA may stop a trial (with --folds above 1: one fold)")
    folds: int = option(1, "walk-forward folds: the valid segment cut into K consecutive folds, each trained on the "
                           "train window moved forward to end just before it (an embargo of the label's horizon "
                           "between); a trial reports after each fold, its value is the mean over its folds so "
                           "far, and ASHA prunes on folds (1: one train and one valid window)", metavar="K")
    fold_train: str = option("rolling", "each fold's train window: the train segment's length ('rolling') or from "
                                        "its start ('expanding')", choices=FOLD_TRAIN)
    reduction_factor: float = option(2.0, "ASHA keeps 1/R of the trials at each rung")
    confirm: int = option(2, "after the search, train its top K configurations and Qlib's default again on "
                             "--confirm-seeds new seeds each; the winner is the best mean (0: no confirmation)",
                          metavar="K")
    confirm_seeds: int = option(3, "new seeds per confirmed configuration", metavar="S")
    metric: str = option("valid_ic", "the objective: the validation metric that picks each trial's kept epoch, "
                                     "what ASHA and Optuna judge, and the winner", choices=tuple(OBJECTIVES))
    sampler: str = option("tpe", "Optuna's sampler; tpe's proposal costs more the more trials have ended (25 ms "
                                 "at 100, 36 ms at 2,000 on a 2-core machine; a 10,000-trial search of 0.1 s trials "
                                 "ran 1.8x slower at its end, docs/benchmarks.md): for thousands of short trials, "
                                 "random or qmc stay flat", choices=SAMPLERS)
    seed: int | None = option(0, "the search's seed: Optuna's sampler's, and each trial's training seed is drawn "
                                 "from it and the trial's number", parse=int)
    cpus_per_trial: float = option(1.0, "CPUs per trial (also its torch threads)")
    gpus_per_trial: float = option(0.0, "GPUs per trial (fractions share one GPU, e.g. 0.25)")
    max_concurrent: int | None = option(None, "trials running at once", parse=int, metavar="N",
                                        show="as many as the cluster's CPUs/GPUs fit; with --address, as many as "
                                             "fit now, following the cluster as nodes join or leave, plus a "
                                             "quarter more queued for Ray's autoscaler")
    max_failures: int = option(2, "retries of a trial whose worker died (from its last epoch); -1: unlimited")
    reuse_actors: bool = option(True, "start a fresh worker process for every trial", flag="--no-reuse-actors",
                                action="store_false", show="workers are reused")
    storage_path: str = option("runs", "where run directories go: a local path, or s3://BUCKET/PREFIX, gs://... (on "
                                       "a multi-node cluster: storage every node reaches)", metavar="PATH|URI")
    name: str = option("", "the search's name: its directory under --storage-path", show="search-<UTC time>")
    address: str | None = option(None, "a Ray cluster to join (host:port, ray://host:port or auto)",
                                 show="$RAY_ADDRESS, else a new private Ray on 127.0.0.1")
    dashboard: bool = option(False, "start Ray's dashboard (on 127.0.0.1) for a private Ray", action="store_true")
    progress_seconds: float = option(10.0, "seconds between progress lines")
    study_storage: str | None = option(None, "an Optuna storage URL for the studies (postgresql+psycopg://..., "
                                             "mysql+pymysql://...): one study per model, <name>/<model>, shared "
                                             "with other searches and optuna-dashboard; its password is not recorded "
                                             "(resume reads PGPASSWORD or ~/.pgpass)", metavar="URL",
                                       show="optuna.db in each run directory")
    resume: bool = option(False, "continue the search --storage-path/--name instead of starting one",
                          action="store_true", record=False)

    def __post_init__(self) -> None:
        if not self.name and not self.resume:
            self.name = "search-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")

    def validate(self) -> None:
        """Check every option; raises ``OptionError`` naming the option. Loads nothing heavy (no torch, no Ray)."""
        if not self.models:
            raise OptionError("--model: name at least one model")
        for name in self.models:
            if name not in REGISTRY:
                raise OptionError(f"--model: unknown model {name!r}; known: {', '.join(REGISTRY)}, or all")
        if len(set(self.models)) != len(self.models):
            raise OptionError(f"--model: a model is named twice in {','.join(self.models)}")
        if "" in self.space_files:
            if len(self.models) != 1:
                raise OptionError(f"--space {self.space_files['']}: with several models, write MODEL=FILE")
            self.space_files = {**{k: v for k, v in self.space_files.items() if k}, self.models[0]: self.space_files[""]}
        stray = set(self.space_files) - set(self.models)
        if stray:
            raise OptionError(f"--space: given for {sorted(stray)}, which are not searched ({','.join(self.models)})")
        for model, path in self.space_files.items():
            if not Path(path).expanduser().is_file():
                raise OptionError(f"--space {model}={path}: no such file")
        _positive_int("--samples", self.samples)
        _positive_int("--max-epochs", self.max_epochs)
        check_folds(self.folds, self.fold_train)
        if self.folds > 1 and self.data not in (None, EMBEDDED) and is_prepared(self.data):
            raise OptionError(f"--folds {self.folds}: {self.data} is already prepared with fixed segments; each fold "
                              f"prepares its own train window from the source (a Qlib directory, a price table or "
                              f"the embedded data): give that as --data")
        _positive_int("--grace-epochs", self.grace_epochs)
        if self.grace_epochs > self.max_epochs:
            raise OptionError(f"--grace-epochs {self.grace_epochs} exceeds --max-epochs {self.max_epochs}")
        if not (_number(self.reduction_factor) and self.reduction_factor > 1):
            raise OptionError(f"--reduction-factor must be a number > 1; got {self.reduction_factor!r}")
        if not (_number(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise OptionError(f"--cpus-per-trial must be > 0; got {self.cpus_per_trial!r}")
        if not (_number(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise OptionError(f"--gpus-per-trial must be ≥ 0 (fractions share a GPU); got {self.gpus_per_trial!r}")
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise OptionError(f"--gpus-per-trial above 1 must be a whole number; got {self.gpus_per_trial!r}")
        if self.max_concurrent is not None:
            _positive_int("--max-concurrent", self.max_concurrent)
        if not (_number(self.progress_seconds) and self.progress_seconds >= 0):
            raise OptionError(f"--progress-seconds must be ≥ 0; got {self.progress_seconds!r}")
        if is_uri(self.storage_path):
            self.search_dir  # a URI no filesystem takes is refused here (never a local folder named after it)
        elif RAY_JOB_ENVIRONMENT in os.environ and not Path(self.storage_path).expanduser().is_absolute():
            raise OptionError(f"--storage-path {self.storage_path} is relative, but this search runs as a Ray job, "
                              f"whose working directory is Ray's temporary copy of the project: results would "
                              f"vanish with the cluster; give an absolute path (on several nodes: one they share)")
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise OptionError(f"--max-failures must be ≥ 0 (or -1 for unlimited); got {self.max_failures!r}")
        for flag, value, least in (("--confirm", self.confirm, 0), ("--confirm-seeds", self.confirm_seeds, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise OptionError(f"{flag} must be a whole number ≥ {least}; got {value!r}")
        if self.sampler not in SAMPLERS:
            raise OptionError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.metric not in OBJECTIVES:
            raise OptionError(f"--metric must be one of {', '.join(OBJECTIVES)}; got {self.metric!r}")
        check_name(self.name)
        if self.data not in (None, EMBEDDED) and not Path(self.data).expanduser().exists():
            raise OptionError(f"--data: {self.data} does not exist")
        if self.concepts is not None and not Path(self.concepts).expanduser().is_file():
            raise OptionError(f"--concepts: {self.concepts} is not a file")
        needs_concepts = [name for name in self.models if REGISTRY[name].uses_concepts]
        if needs_concepts and self.concepts is None and self.data not in (None, EMBEDDED) and not is_prepared(self.data):
            raise OptionError(f"--model {needs_concepts[0]} needs a stock→concept table and {self.data} has none: "
                              f"pass --concepts FILE (CSV or Parquet with symbol and concept columns)")
        for segment, dates in self.segments.items():
            if dates is not None and (len(dates) != 2 or not all(isinstance(x, str) and x for x in dates)):
                raise OptionError(f"--{segment}: expected START:END dates; got {dates!r}")
        if self.pretrained is not None and not (isinstance(self.pretrained, str) and self.pretrained):
            raise OptionError(f"--pretrained must be pretrain, none or a file; got {self.pretrained!r}")
        if self.study_storage is not None and "://" not in str(self.study_storage):
            raise OptionError(f"--study-storage {self.study_storage}: expected an Optuna storage URL "
                              f"(postgresql+psycopg://user@host/db, mysql+pymysql://..., sqlite:///path)")
        if self.uses_base_file and not Path(self.pretrained).expanduser().is_file():
            raise OptionError(f"--pretrained: {Path(self.pretrained).expanduser()} does not exist")

    @property
    def search_dir(self) -> Location:
        """``storage_path/name`` (a local path or a URI): one run directory per model inside it."""
        try:
            return Location.of(self.storage_path) / self.name
        except StorageError as error:
            raise OptionError(f"--storage-path {error}") from None

    def run_dir(self, model: str) -> Location:
        return self.search_dir / model

    def to_dict(self) -> dict[str, Any]:
        """What a run's manifest records (``--resume`` is not part of a search)."""
        out = recorded(self)
        if self.study_storage:
            out["study_storage"] = without_password(self.study_storage)
        for segment in SEGMENTS:
            out[segment] = list(out[segment]) if out[segment] is not None else None
        return out

    def load_spaces(self) -> dict[str, Any]:
        """Each searched model's space (``spaces.Space``), loaded and validated (``SpaceError`` naming the file
        and line); call after ``validate``."""
        from alphatune import spaces
        return {name: spaces.load(self.space_files.get(name, name), model=name) for name in self.models}

    @classmethod
    def from_dict(cls, data: dict[str, Any], model: str | None = None) -> "SearchOptions":
        """Options back from a manifest (``to_dict``) of ``model``'s run. A manifest of an earlier version is
        converted: its ``segments`` mapping, and its ``metric: score``, the trainer's own early-stopping score,
        by which its trials kept their epochs: −valid loss, except for HIST and IGMTF, whose score was the IC."""
        data = dict(data)
        for segment, dates in (data.pop("segments", None) or {}).items():
            data.setdefault(segment, dates)
        if data.get("metric") == "score":
            own = REGISTRY[model].defaults.get("metric") if model in REGISTRY else "loss"
            data["metric"] = "valid_ic" if own == "ic" else "valid_loss"
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OptionError(f"unknown search options {unknown} in the run's manifest")
        for segment in SEGMENTS:
            if data.get(segment) is not None:
                data[segment] = tuple(data[segment])
        return cls(**data)


def without_password(url: str) -> str:
    """A storage URL as a run records it: without its password (libpq takes it from ``PGPASSWORD`` or
    ``~/.pgpass``, MySQL clients from their option files), so a shared run directory holds no secret."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{parts.username or ''}@{parts.hostname or ''}{port}", parts.path, parts.query,
                       parts.fragment))


def space_origin(source: str) -> str:
    """Where a searched space came from, as a run records it (``space_file``): a shipped space by name, a file
    inside a Ray job's working directory (Ray's temporary copy, gone after the job) by its path there, any other
    file by its path. The space itself, as searched, is always in the run's manifest."""
    from alphatune import __version__, spaces
    path = Path(source)
    if path.parent == spaces.SPACES_DIR:
        return f"{path.name}, shipped with alphatune {__version__}"
    if RAY_JOB_ENVIRONMENT in os.environ and path.is_relative_to(Path.cwd()):
        return f"{path.relative_to(Path.cwd())} in the Ray job's working directory (a copy gone after the job)"
    return source


NAME_MAX = 200  # bytes: a directory name every file system takes, with room for the temporary files beside it


def check_name(name: Any) -> None:
    """A search name is one plain directory name: no separator, not ``.``/``..``, no control character, not blank,
    at most ``NAME_MAX`` bytes."""
    if (not isinstance(name, str) or not name.strip() or name != name.strip() or "/" in name or "\\" in name
            or name in (".", "..") or any(ord(char) < 32 or ord(char) == 127 for char in name)):
        raise OptionError(f"--name must be a plain directory name (no '/', no control characters, not blank); "
                          f"got {name!r}")
    if len(name.encode("utf-8")) > NAME_MAX:
        raise OptionError(f"--name is {len(name.encode('utf-8'))} bytes long; a directory name may have at most "
                          f"{NAME_MAX}: {name[:40]}...")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{option} must be a positive integer; got {value!r}")


@dataclass
class ResumeOptions:
    """``alphatune search resume``: continue every unfinished run under a path."""

    run_dir: str = option("", "a run directory, or a search directory holding several", flag="run_dir",
                          metavar="RUN_DIR")


@dataclass
class ExportOptions:
    """``alphatune search export``: rewrite a run's best.yaml and best_qlib.yaml (``search.export``)."""

    run_dir: str = option("", "a run directory, or a search directory holding several", flag="run_dir",
                          metavar="RUN_DIR")
    qlib_data: str | None = option(None, "the Qlib data directory best_qlib.yaml's provider_uri names", metavar="DIR",
                                   show="the searched source when it is a Qlib directory; otherwise a placeholder "
                                        "the file explains")
    schedule: str = option("search", "best_qlib.yaml's n_epochs/early_stop: 'search' the budget the search trained "
                                     "under, 'qlib' Qlib's published schedule", choices=SCHEDULES)
    out: str | None = option(None, "where best.yaml and best_qlib.yaml go (a read-only run's exports, say): a local "
                                   "path or s3://..., gs://...", metavar="DIR|URI",
                             show="the run directory; with several models, DIR/<model>")

    def validate(self) -> None:
        """Check the options before any run is read (``OptionError`` naming the option)."""
        if self.schedule not in SCHEDULES:
            raise OptionError(f"--schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.qlib_data is not None and not is_qlib_dir(self.qlib_data):
            raise OptionError(f"--qlib-data {self.qlib_data}: not a Qlib data directory (no calendars/day.txt)")

