"""The windows a search judges its trials on: one train and valid window, or K walk-forward folds.

``FoldPlan`` is what a run records (``search.yaml``'s ``folds``, best.yaml's ``validation.folds``): how the train
windows move (``rolling`` or ``expanding``) and each fold's train and valid spans, cut once by
``datasets.periods.walk_forward`` from the source's trading calendar. ``open_folds`` opens each fold's data: the
same source prepared on the fold's own windows (Qlib's processors fitted on its own train window), cached like
any prepared dataset; one fold is the search's data itself. The driver puts each fold's arrays into Ray's object
store once per search, every trial reads them zero-copy (``search.trial.train_folds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphatune.datasets import DataSpec
from alphatune.datasets.periods import Window, walk_forward

FOLD_DIR = "fold{}"  # a fold's files inside a trial's or a confirmation run's directory (folds above 1 only)


@dataclass(frozen=True)
class FoldPlan:
    """How a search cuts its validation period: ``train`` (``rolling``/``expanding``) and the windows, in time
    order (one: the search's own train and valid segments)."""

    train: str
    windows: tuple[Window, ...]

    @property
    def count(self) -> int:
        return len(self.windows)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "train": self.train, "windows": [window.to_dict() for window in self.windows]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FoldPlan":
        """A recorded plan (``to_dict``)."""
        return cls(str(data.get("train", "rolling")), tuple(Window.from_dict(window) for window in data["windows"]))

    def describe(self) -> str:
        """One line per fold (nothing for one fold)."""
        if self.count == 1:
            return ""
        return "\n".join(f"  fold {number}: train {window.train[0]}..{window.train[1]}, valid {window.valid[0]}.."
                         f"{window.valid[1]}" for number, window in enumerate(self.windows, 1))


def plan_folds(spec: DataSpec, ds: Any, count: int, train: str) -> FoldPlan:
    """The plan of a search of ``count`` folds over the opened dataset ``ds`` of ``spec`` (``DataError`` when the
    source cannot give them: a prepared directory, too few days, a train window before the data)."""
    segments = {name: tuple(span) for name, span in ds.segments.items()}
    if count == 1:
        return FoldPlan(train, (Window(train=segments["train"], valid=segments["valid"]),))
    return FoldPlan(train, tuple(walk_forward(spec.calendar(), segments["train"], segments["valid"], count, train)))


def open_folds(spec: DataSpec, plan: FoldPlan | None, ds: Any) -> list[Any]:
    """Each fold's dataset (train and valid only), prepared once and cached; ``[ds]`` for one fold (``None``: a run
    of an earlier version, one fold)."""
    if plan is None or plan.count == 1:
        return [ds]
    return [spec.window(window).open() for window in plan.windows]


def fold_dir(directory: Any, fold: int, count: int) -> Any:
    """Where fold ``fold`` of ``count`` keeps its files inside a run's ``directory`` (the directory itself for one
    fold, as before folds existed)."""
    return directory if count == 1 else directory / FOLD_DIR.format(fold)
