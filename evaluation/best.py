"""best.yaml as evaluation reads it: read and checked with YAML only (nothing heavy), so a bad file is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alphatune import models
from alphatune.datasets import DataError, DataSpec
from alphatune.evaluation.errors import EvaluationError


def read_best(path: Path) -> dict[str, Any]:
    """``best.yaml`` as a dict, checked for the fields evaluation needs (errors name the file and field)."""
    try:
        best = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise EvaluationError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or 'unreadable'}") from None
    if not isinstance(best, dict):
        raise EvaluationError(f"{path}: expected a mapping with model, hyperparameters and data")
    if best.get("model") not in models.REGISTRY:
        raise EvaluationError(f"{path}: model: {best.get('model')!r} is not one of {', '.join(models.REGISTRY)}")
    if not isinstance(best.get("hyperparameters"), dict):
        raise EvaluationError(f"{path}: hyperparameters: expected a mapping, got {best.get('hyperparameters')!r}")
    try:
        DataSpec.from_dict(best.get("data") or {}, f"{path}: data")
    except DataError as error:
        raise EvaluationError(str(error)) from None
    return best
