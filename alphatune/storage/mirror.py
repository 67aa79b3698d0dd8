"""A local working copy of a directory in object storage, where the bucket is the truth and the copy a cache.

A search whose run lives in a bucket keeps the files its driver writes often (a ledger appended after every epoch,
a SQLite study) in a local folder, ``work``, and puts them into the bucket, ``root``: ``push``. A later process
(resume, export) gets them back with ``pull``. The copy is never trusted on its own word:

* every ``push`` ends by writing ``root/.sync.json``, a marker with a new random ``generation``, after the files;
  the copy keeps the same marker in ``work/.sync.json`` with each file's size and modification time as pushed;
* ``pull`` keeps the local copy only when the bucket's marker is the copy's marker (no one pushed since, the
  bucket was not emptied or replaced) and every local file is exactly as it was pushed (nothing was written
  after the last push, by a driver that died before pushing again). Otherwise the copy is **set aside** (renamed
  ``<work>.set-aside-<UTC time>``, never deleted: its newer records stay there for a person to read) and the
  bucket's files are downloaded. A bucket with no files gives an empty copy;
* ``fresh`` sets aside any copy before a new run starts at a location that holds none, so that nothing from an
  earlier run of the same name (a study, a ledger) decides anything.

Hidden files (``.writer.lease``, ``.sync.json``, temporaries) and the folders named in ``skip`` (what the workers
write straight into the bucket) are neither pushed nor pulled.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from alphatune.storage.location import Location

MARKER = ".sync.json"
Stamps = dict[str, list[int]]


class Mirror:
    """The local copy ``work`` of ``root`` (see the module doc). ``sqlite``: files pushed as a consistent snapshot
    (SQLite's backup API) because another connection may be writing them."""

    def __init__(self, root: Location, work: Path, skip: tuple[str, ...] = (), sqlite: tuple[str, ...] = ()) -> None:
        self.root, self.work, self.skip, self.sqlite = root, Path(work), skip, sqlite

    def _stamps(self) -> Stamps:
        """Every file of the copy (hidden ones and skipped folders left out) → [size, mtime in ns]."""
        out: Stamps = {}
        if not self.work.is_dir():
            return out
        for path in self.work.rglob("*"):
            relative = path.relative_to(self.work)
            if path.is_file() and not self._excluded(str(relative)):
                stat = path.stat()
                out[str(relative)] = [stat.st_size, stat.st_mtime_ns]
        return out

    def _excluded(self, name: str) -> bool:
        parts = name.split("/")
        return any(part.startswith(".") for part in parts) or any(name.startswith(f"{folder}/") for folder in self.skip)

    def _marker(self, location: Location | Path) -> dict | None:
        try:
            data = json.loads(location.read_text() if isinstance(location, Location) else location.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def confirmed(self) -> bool:
        """Whether the bucket confirms the local copy (see the module doc)."""
        local, remote = self._marker(self.work / MARKER), self._marker(self.root / MARKER)
        return (local is not None and remote is not None and local.get("generation") == remote.get("generation")
                and local.get("files") == self._stamps())

    def set_aside(self) -> Path | None:
        """Rename the local copy out of the way (``None`` when there is none, or it is empty); where it went."""
        if not self.work.exists() or not any(self.work.iterdir()):
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        target = self.work.with_name(f"{self.work.name}.set-aside-{stamp}-{uuid.uuid4().hex[:6]}")
        os.replace(self.work, target)
        return target

    def fresh(self) -> str | None:
        """Before a new run: set aside any local copy; a note saying where it went, if there was one."""
        aside = self.set_aside()
        self.work.mkdir(parents=True, exist_ok=True)
        return None if aside is None else (f"an earlier local copy of {self.root} was set aside ({aside}): the bucket "
                                           f"holds no run there")

    def pull(self) -> str | None:
        """Make the local copy the bucket's (see the module doc); a note when a copy was set aside."""
        if self.confirmed():
            return None
        aside = self.set_aside()
        self.work.mkdir(parents=True, exist_ok=True)
        for name in self.root.files():
            if self._excluded(name):
                continue
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((self.root / name).read_bytes())
        remote = self._marker(self.root / MARKER)
        if remote is not None:
            self._write_marker(remote.get("generation"))
        return None if aside is None else (f"the local copy of {self.root} did not match the bucket and was set aside "
                                           f"({aside}); continuing from the bucket's files")

    def push(self) -> None:
        """Put the copy's files that changed since the last push into the bucket (the ``sqlite`` files first, as
        snapshots, then the rest in name order), then the marker."""
        before = self._marker(self.work / MARKER) or {}
        pushed = before.get("files") or {}
        stamps = self._stamps()
        order = sorted(stamps, key=lambda name: (name not in self.sqlite, name))
        for name in order:
            if stamps[name] == pushed.get(name):
                continue
            source = self.work / name
            (self.root / name).write_bytes(_sqlite_snapshot(source) if name in self.sqlite else source.read_bytes())
        generation = uuid.uuid4().hex
        (self.root / MARKER).write_text(json.dumps({"generation": generation}))
        self._write_marker(generation, stamps)

    def _write_marker(self, generation: object, stamps: Stamps | None = None) -> None:
        Location.of(self.work / MARKER).write_text(json.dumps({
            "generation": generation, "files": self._stamps() if stamps is None else stamps}))


def _sqlite_snapshot(path: Path) -> bytes:
    """A consistent copy of a SQLite database that another connection may be writing (SQLite's backup API)."""
    with tempfile.TemporaryDirectory(prefix="alphatune-sqlite-") as scratch:
        copy = Path(scratch) / path.name
        with contextlib.closing(sqlite3.connect(path)) as source, contextlib.closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        return copy.read_bytes()

