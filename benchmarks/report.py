"""Write one benchmark's table into its own section of docs/benchmarks.md, leaving the other sections alone."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
# ``--smoke``: every script has one; the default test run executes them all (tests/test_benchmarks.py), so a
# script that no longer runs is caught. A smoke run is tiny, runs on the embedded data and records nothing.
SMOKE_HELP = "a tiny run on the embedded data that checks the script still works; records nothing"
# Two weeks of training, two of validation, a month of test: enough days for every model, the IC and a backtest.
SMOKE_SEGMENTS = {"train": ("2018-12-03", "2018-12-14"), "valid": ("2019-01-02", "2019-01-15"),
                  "test": ("2019-03-01", "2019-03-29")}
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun the script to refresh it.\n"


def machine() -> str:
    """One line describing where a benchmark ran."""
    import os
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def write_section(key: str, title: str, body: str, measured: str | None = None, command: str | None = None) -> None:
    """Replace (or append) the section ``key`` of docs/benchmarks.md with ``title`` and ``body``. ``measured``:
    when and where the numbers were measured, if not now on this machine (results rendered from another's);
    ``command``: what wrote them, if not ``python benchmarks/<key>.py``."""
    text = DOC.read_text() if DOC.exists() else HEADER
    measured = measured or f"{utc_now()}; {machine()}"
    command = command or f"python benchmarks/{key}.py"
    section = (f"<!-- {key}:start -->\n## {title}\n\n_{measured}; `{command}`_\n\n"
               f"{body.strip()}\n<!-- {key}:end -->")
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
