"""The one exception evaluation raises for bad input."""

from __future__ import annotations


class EvaluationError(ValueError):
    """An evaluation cannot run as asked: a bad best.yaml, base file or setting; the message names it."""
