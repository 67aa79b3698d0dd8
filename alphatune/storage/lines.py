"""An append-only file of lines (a run's ledger): each record one whole line, and a torn tail never eats the next.

A process killed while appending can leave the file's last line cut short, without its newline. Readers skip
such a fragment; but a writer that appended straight after it would glue its first record onto the fragment and
that record would be lost with it. ``LineFile`` therefore ends a file that does not end in a newline before its
first append: the fragment stays a line of its own, skipped by readers, and nothing after it is lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO


class LineFile:
    """Appends whole lines to the local file ``path`` (created on the first append), each flushed at once."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_file": None}

    def append(self, line: str) -> None:
        """Write ``line`` (without its newline) as one line and flush it."""
        if "\n" in line:
            raise ValueError("a record of a line file must be one line")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            if torn(self.path):
                self._file.write("\n")
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def torn(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` is non-empty and does not end in a newline (its last line was cut short)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            if file.tell() == 0:
                return False
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except FileNotFoundError:
        return False
