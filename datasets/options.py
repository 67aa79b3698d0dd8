"""The data a command works on, as its command line asks for it: declared once, for ``alphatune prepare`` and
``alphatune search run`` alike (``DataOptions``; ``spec()`` makes the ``DataSpec``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from alphatune.arguments import option
from alphatune.datasets.sources import DEFAULT_BENCHMARK, DEFAULT_MARKET, EMBEDDED, EMBEDDED_SEGMENTS
from alphatune.datasets.spec import DataSpec


def date_range(text: str) -> tuple[str, str]:
    """``A:B`` → (A, B); dates are checked later by ``prepare``."""
    start, sep, end = text.partition(":")
    if not sep or not start or not end:
        raise argparse.ArgumentTypeError(f"expected START:END (e.g. 2017-01-01:2018-12-31), got {text!r}")
    return start, end


def _segment(name: str) -> tuple[str, str] | None:
    return option(None, f"{name} dates, inclusive", parse=date_range, metavar="START:END",
                  show=f"the source's; {':'.join(EMBEDDED_SEGMENTS[name])} for the embedded data")


@dataclass
class DataOptions:
    """A data spec as options: the source (``--data``, also spelled ``--source``), market, benchmark, segments and
    concepts; ``None`` segments are the source's defaults."""

    GROUP = "data"

    data: str | None = option(None, "a Qlib data directory, a CSV/Parquet price table, or 'embedded' (search: "
                                    "also a prepared dataset directory)", aliases=("--source",), metavar="PATH",
                              show="the embedded CSI300 2017-2019 data")
    market: str = option(DEFAULT_MARKET, "the universe: a Qlib instruments name, a membership table (symbol, start, "
                                         "end), or 'all'")
    benchmark: str = option(DEFAULT_BENCHMARK, "the backtest's benchmark index symbol, read when the source has it")
    train: tuple[str, str] | None = _segment("train")
    valid: tuple[str, str] | None = _segment("valid")
    test: tuple[str, str] | None = _segment("test")
    concepts: str | None = option(None, "HIST's (symbol, concept) table, CSV or Parquet", metavar="FILE",
                                  show="the embedded data's own; none for other sources")

    @property
    def segments(self) -> dict[str, tuple[str, str] | None]:
        """The date ranges asked for (``None``: the source's default)."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def spec(self) -> DataSpec:
        """The ``DataSpec`` these options ask for."""
        return DataSpec(source=self.data or EMBEDDED, market=self.market, benchmark=self.benchmark,
                        train=self.train, valid=self.valid, test=self.test, concepts=self.concepts)
