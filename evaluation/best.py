"""``best.yaml``, the contract between a search (which writes it) and an evaluation (which reads it): one type.

A ``Best`` is a search's winner: the model and its full hyperparameters, the data spec it was searched on, the
kept epoch's validation numbers, which trial it was and where its checkpoint is, how its trials trained
(``training``: the speed options as they really ran), the search's budget (``search``), for GATs, HIST and IGMTF
the base it started from, and whether the search had ended when it was written (``provisional``, with how many
trials were unfinished: a resumed search writes it again); with a confirmation, the configurations trained again on
new seeds and the winner against Qlib's default (``confirmation``), and the search's odds of overfitting
(``overfitting``). ``Best.read`` checks a file with YAML only (nothing
heavy, nothing executed) and names the file and the field at fault; files of earlier versions are upgraded on
reading (``format`` 1: ``data.path``, ``validation.score``, no ``search.threads``). Readers keep what they do not
know out of their way: unknown keys are ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alphatune import models
from alphatune.datasets import DataError, DataSpec
from alphatune.evaluation.errors import EvaluationError
from alphatune.storage import Location, StorageError

FORMAT = 2  # best.yaml's format written now; files without one are format 1


@dataclass(frozen=True)
class KeptEpoch:
    """The winner's validation numbers at the epoch it kept (by the search's objective, ``metric``). With
    walk-forward folds, ``valid_ic``/``valid_loss`` are the means over its folds, ``best_epoch`` its last fold's,
    ``epochs`` all it trained, and ``folds`` says which fold is which: each fold's ``train`` and ``valid`` spans, its
    kept epoch's ``valid_ic`` and ``valid_loss``, ``best_epoch`` and ``epochs``; ``fold_train`` how the train windows
    moved (``rolling``/``expanding``)."""

    metric: str
    valid_ic: float | None = None
    valid_loss: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    folds: list[dict[str, Any]] | None = None
    fold_train: str | None = None


@dataclass(frozen=True)
class Training:
    """How the search's trials trained: the device, and the speed options as they really ran (``amp`` true only
    where mixed precision ran, ``precision`` its dtype, ``amp_refused`` why not when it was asked for)."""

    device: str = "cpu"
    amp: bool = False
    graphs: bool | None = None
    tf32: bool | None = None
    precision: str | None = None
    amp_refused: str | None = None


@dataclass(frozen=True)
class SearchBudget:
    """What the search was: where it ran, over which space, with what budget, and how its trials ended."""

    run_dir: str | None = None
    space_file: str | None = None
    samples: int | None = None
    max_epochs: int | None = None
    objective: str | None = None
    sampler: str | None = None
    threads: int = 1
    trials: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfirmedRun:
    """One seed of a confirmed configuration: its value of the objective at its kept epoch (``None``: it failed,
    ``error`` says why), its epochs, and where its model is (``checkpoint``)."""

    seed: int
    value: float | None
    best_epoch: int | None = None
    epochs: int | None = None
    seconds: float | None = None
    checkpoint: str | None = None
    error: str | None = None
    folds: list[float | None] | None = None  # walk-forward folds: each fold's kept value (``value`` is their mean)


@dataclass(frozen=True)
class ConfirmedConfig:
    """A configuration the confirmation trained again: which search trial tried it (``trial``; ``default`` when
    the search never did), whether it is Qlib's published config, its single-seed ``search_value``, the full
    hyperparameters without the seed, what GATs/HIST/IGMTF started from, and every seed's run."""

    trial: str
    default: bool
    search_value: float | None
    hyperparameters: dict[str, Any]
    runs: list[ConfirmedRun]
    pretrained: str | None = None
    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class Confirmation:
    """The search's top ``top`` configurations and Qlib's default trained again on the same new ``seeds``:
    ``winner`` (the best mean) and ``search_winner`` (the best single-seed trial) name configs by ``trial``;
    ``against_default`` is the paired comparison of the winner with the default (``evaluation.overfitting.Paired``:
    seeds, mean_difference, standard_error, ahead, beyond_noise, verdict); ``complete``: every run has ended."""

    metric: str
    seeds: list[int]
    top: int
    configs: list[ConfirmedConfig]
    winner: str | None
    search_winner: str | None
    complete: bool
    against_default: dict[str, Any] | None = None

    def config(self, trial: str) -> ConfirmedConfig | None:
        return next((config for config in self.configs if config.trial == trial), None)


@dataclass(frozen=True)
class Overfitting:
    """The search's odds of overfitting (``evaluation.overfitting``): PBO by CSCV over the trials' daily validation IC
    (``None`` with ``pbo_note`` saying why), the bar the best of N trials reaches by chance (``bar``: trials, mean,
    std, expected_max_z, bar, search_best, clears), and the files beside best.yaml that show them."""

    pbo: float | None
    pbo_note: str | None = None
    blocks: int | None = None
    splits: int | None = None
    trials: int | None = None
    days: int | None = None
    logits: dict[str, float] | None = None   # min, quartiles, max of the splits' logits
    bar: dict[str, Any] | None = None
    daily_valid_ic: str | None = None
    plot: str | None = None


@dataclass(frozen=True)
class Best:
    """A search's winner, as best.yaml holds it (see the module doc)."""

    model: str
    hyperparameters: dict[str, Any]
    data: dict[str, Any]
    validation: KeptEpoch | None = None
    trial_id: str | None = None
    optuna_trial: int | None = None
    checkpoint: str | None = None
    pretrained: str | None = None            # GATs/HIST/IGMTF: the base file it started from, or "none (...)"
    bases: dict[str, Any] | None = None      # GATs/HIST/IGMTF: the search's bases (kind → Base.to_dict())
    search: SearchBudget = field(default_factory=SearchBudget)
    training: Training = field(default_factory=Training)
    provisional: bool = False                # written while trials were still unfinished
    unfinished: int = 0
    confirmation: Confirmation | None = None
    overfitting: Overfitting | None = None
    format: int = FORMAT

    @property
    def data_spec(self) -> DataSpec:
        return DataSpec.from_dict(self.data)

    @property
    def validation_folds(self) -> int:
        """How many walk-forward folds the search judged its trials on (0: one train and one valid window)."""
        return len(self.validation.folds or []) if self.validation is not None else 0

    def to_dict(self) -> dict[str, Any]:
        """best.yaml's content, keys in a reader's order; fields a model does not have are left out."""
        out = asdict(self)
        if self.validation is not None:
            metric = self.validation.metric
            out["validation"] = {"metric": metric, metric: getattr(self.validation, metric),
                                 **{key: value for key, value in out["validation"].items()
                                    if key != "metric" and (value is not None or key not in ("folds", "fold_train"))}}
        for key in ("pretrained", "bases", "confirmation", "overfitting"):
            if out[key] is None:
                del out[key]
        out["training"] = {key: value for key, value in out["training"].items()
                           if value is not None or key in ("graphs", "tf32")}
        if not self.provisional:
            del out["provisional"], out["unfinished"]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "best.yaml") -> "Best":
        """A ``Best`` from best.yaml's content (any format); ``EvaluationError`` naming ``where`` and the field."""
        if not isinstance(data, dict):
            raise EvaluationError(f"{where}: expected a mapping with model, hyperparameters and data")
        # A search writes validation, then search and training, and format last: a file with the first and without
        # the last lost its end (a hand-made file, or one of format 1, has no format and no training either).
        if "format" not in data and "validation" in data and ("search" not in data or "training" in data):
            missing = [key for key in ("search", "training", "format") if key not in data]
            raise EvaluationError(f"{where}: the file is cut short (it ends before {', '.join(missing)}); write it "
                                  f"again with `alphatune search export RUN_DIR`")
        if data.get("model") not in models.REGISTRY:
            raise EvaluationError(f"{where}: model: {data.get('model')!r} is not one of {', '.join(models.REGISTRY)}")
        if not isinstance(data.get("hyperparameters"), dict):
            raise EvaluationError(f"{where}: hyperparameters: expected a mapping, got {data.get('hyperparameters')!r}")
        try:
            spec = DataSpec.from_dict(data.get("data") or {}, f"{where}: data")  # format 1's data.path included
        except DataError as error:
            raise EvaluationError(str(error)) from None
        validation = data.get("validation")
        kept = None
        if isinstance(validation, dict) and validation.get("metric"):
            kept = KeptEpoch(**_known(KeptEpoch, validation, f"{where}: validation"))  # format 1's score dropped
        search = _known(SearchBudget, data.get("search") or {}, f"{where}: search")
        training = _known(Training, data.get("training") or {}, f"{where}: training")
        confirmation = _confirmation(data.get("confirmation"), f"{where}: confirmation")
        overfitting = (Overfitting(**_known(Overfitting, data["overfitting"], f"{where}: overfitting"))
                       if data.get("overfitting") is not None else None)
        return cls(model=data["model"], hyperparameters=dict(data["hyperparameters"]), data=spec.to_dict(),
                   validation=kept, trial_id=_text(data.get("trial_id")), optuna_trial=data.get("optuna_trial"),
                   checkpoint=_text(data.get("checkpoint")), pretrained=data.get("pretrained"),
                   bases=data.get("bases"), search=SearchBudget(**search), training=Training(**training),
                   provisional=bool(data.get("provisional", False)), unfinished=int(data.get("unfinished") or 0),
                   confirmation=confirmation, overfitting=overfitting, format=FORMAT)

    def check_hyperparameters(self, where: str = "best.yaml") -> None:
        """Every hyperparameter through the model's own rule (``models.Hyperparameters``; this loads torch):
        ``EvaluationError`` naming the file and the value at fault."""
        try:
            models.get_spec(self.model).hyperparameters(self.hyperparameters)
        except (ValueError, TypeError) as error:
            raise EvaluationError(f"{where}: hyperparameters: {error}") from None

    @classmethod
    def read(cls, path: str | Path | Location) -> "Best":
        """best.yaml at ``path``, a local path or a URI (errors name the file, its line for bad YAML, and the
        field)."""
        try:
            data = yaml.safe_load(Location.of(path).read_text())
        except FileNotFoundError:
            raise EvaluationError(f"{path}: cannot read it (No such file or directory)") from None
        except (OSError, StorageError) as exc:
            raise EvaluationError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise EvaluationError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or 'unreadable'}") from None
        return cls.from_dict(data, str(path))


def epoch_budget(best: Best, epochs: int | str | None, where: str = "best.yaml") -> tuple[int | None, str]:
    """``(cap on n_epochs or None, what the run says about it)`` for ``--epochs`` (``None``: the search's budget)."""
    if epochs == "own":
        return None, "each config's own n_epochs (--epochs own)"
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise EvaluationError(f"--epochs must be a positive number or 'own'; got {epochs!r}")
        return epochs, f"at most {epochs} epochs (--epochs {epochs})"
    budget = best.search.max_epochs
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
        return budget, (f"at most {budget} epochs, the search's budget (best.yaml search.max_epochs; --epochs N or "
                        f"--epochs own to change it)")
    raise EvaluationError(f"{where} records no search budget (search.max_epochs: {budget!r}): a damaged file, or one "
                          f"no search wrote; give --epochs N, or --epochs own for each config's own n_epochs")


def _confirmation(data: Any, where: str) -> Confirmation | None:
    """best.yaml's ``confirmation`` (``None`` when absent); ``EvaluationError`` naming the field at fault."""
    if data is None:
        return None
    fields = _known(Confirmation, data, where)
    configs = []
    for i, config in enumerate(fields.get("configs") or []):
        entry = _known(ConfirmedConfig, config, f"{where}.configs[{i}]")
        try:
            entry["runs"] = [ConfirmedRun(**_known(ConfirmedRun, run, f"{where}.configs[{i}].runs[{j}]"))
                             for j, run in enumerate(entry.get("runs") or [])]
            configs.append(ConfirmedConfig(**entry))
        except TypeError as error:
            raise EvaluationError(f"{where}.configs[{i}]: {error}") from None
    try:
        return Confirmation(**{**fields, "configs": configs})
    except TypeError as error:
        raise EvaluationError(f"{where}: {error}") from None


def _known(cls: type, values: Any, where: str) -> dict[str, Any]:
    """The entries of ``values`` that ``cls`` declares (what a reader does not know is left out)."""
    if not isinstance(values, dict):
        raise EvaluationError(f"{where}: expected a mapping, got {values!r}")
    names = set(cls.__dataclass_fields__)
    return {key: value for key, value in values.items() if key in names}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)

