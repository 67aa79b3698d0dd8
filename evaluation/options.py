"""What an evaluation is asked to do: one dataclass; the ``alphatune evaluate`` command line is derived from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from alphatune.arguments import option
from alphatune.datasets.periods import ROLLING_TRAIN, check_rolling
from alphatune.evaluation.errors import EvaluationError
from alphatune.models.options import FitOptions


def epochs_budget(text: str) -> int | str:
    """``--epochs``: a positive number of epochs, or ``own`` (each config's own ``n_epochs``)."""
    if text == "own":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of epochs or 'own'; got {text!r}")
    return value


@dataclass
class EvaluateOptions(FitOptions):
    """An evaluation of a search's best config against Qlib's default (``evaluation.evaluate.evaluate``); the fit
    options, unset, are what the search's trials ran with."""

    SHOWN = {"amp": "best.yaml's training.amp: as the search's trials", "graphs": "best.yaml's training.graphs",
             "tf32": "best.yaml's training.tf32",
             "pretrained": "the search's base from best.yaml, where a config fits it"}

    best: str = option("", "best.yaml written by `alphatune search run` or `alphatune search export`", flag="best",
                       metavar="BEST_YAML")
    data: str | None = option(None, "a prepared dataset directory, or a source (Qlib directory, price table) to "
                                    "prepare with best.yaml's segments", metavar="PATH", show="best.yaml's data")
    concepts: str | None = option(None, "HIST's (symbol, concept) table to prepare the data with", metavar="FILE",
                                  show="best.yaml's data.concepts")
    seeds: int = option(1, "seeds per config (0..K-1), reported as mean ± std")
    epochs: int | str | None = option(None, "epochs each config may train: N, or 'own' for each config's own "
                                            "n_epochs (Qlib's 200 for the default config)", parse=epochs_budget,
                                      metavar="{N,own}", show="the search's budget, best.yaml search.max_epochs")
    threads: int | None = option(None, "torch threads", parse=int, metavar="N",
                                 show="the search trials' own, best.yaml search.threads")
    device: str = option("cpu", "torch device for training")
    out: str | None = option(None, "where evaluation.yaml and the plots go", metavar="DIR", show="beside best.yaml")
    rolling: int | None = option(None, "a rolling test instead, as deployed: both configs retrained every STEP trading "
                                       "days over the test period on the window before it (Qlib's RollingGen), "
                                       "their predictions scored end to end (evaluation_rolling.yaml)", parse=int,
                                 metavar="STEP", show="one model per seed, trained once")
    rolling_train: str = option("expanding", "the rolling windows' train span: from the same start ('expanding', "
                                             "RollingGen's ROLL_EX) or the same length ('sliding', ROLL_SD)",
                                choices=ROLLING_TRAIN)

    def validate(self) -> None:
        """Check what can be checked before anything loads (``EvaluationError`` naming the option)."""
        if self.rolling is not None:
            check_rolling(self.rolling, self.rolling_train)
        if self.rolling is not None and self.data is not None:
            raise EvaluationError("--rolling prepares each window from best.yaml's source; --data cannot replace it")
