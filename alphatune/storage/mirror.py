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

**Each byte once.** A push puts only what changed, and never a growing file whole again and again:

* a file named in ``appended`` (the ledger, which only ever grows) goes into the bucket as parts: each push puts
  the bytes appended since the last one as a new object ``<name>.parts/<offset>`` (its first byte's offset in the
  file, twelve digits, so that names sort in file order); ``pull`` (and ``joined``) put the parts back together,
  each starting where the one before ended (a gap or an overlap is a damaged bucket, one line). A whole
  ``<name>`` object (a run pushed by an earlier version) comes first;
* a file named in ``sqlite`` (the study, which the ledger can rebuild: ``search.resume``) is put as a snapshot when
  a push is ``complete`` (at every stop and the search's end), and otherwise only once it has grown to twice the
  size last put: the bytes it costs over a search stay within twice its final size, whatever the number of pushes.
  A copy whose study was not put since is not confirmed by the bucket (its file differs from what was pushed), so
  a driver killed meanwhile is resumed from the bucket's study, which resume brings up to the ledger;
* any other file changed since the last push is put whole (a trial's TensorBoard files: its own, small).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from alphatune.storage.location import Location, StorageError

MARKER = ".sync.json"
PARTS = ".parts"  # ``<name>.parts/<offset>``: the parts of an appended file in the bucket
Stamps = dict[str, list[int]]


class DamagedParts(StorageError):
    """The parts of an appended file in the bucket do not join into one file (one missing, or two overlapping)."""


def joined(root: Location, name: str, listing: list[str] | None = None) -> bytes | None:
    """The appended file ``name`` as the bucket ``root`` holds it: its whole object, if any (an earlier version's
    push), then its parts in order; ``None`` when the bucket holds neither. ``listing``: ``root.files()``, when the
    caller has it. ``DamagedParts`` (naming the part) when one does not start where the file so far ends."""
    listing = root.files() if listing is None else listing
    prefix = f"{name}{PARTS}/"
    parts = sorted((int(entry[len(prefix):]), entry) for entry in listing
                   if entry.startswith(prefix) and entry[len(prefix):].isdigit())
    if name not in listing and not parts:
        return None
    data = bytearray((root / name).read_bytes() if name in listing else b"")
    for offset, entry in parts:
        if offset != len(data):
            raise DamagedParts(f"{root / entry}: starts at byte {offset}, but the parts before it end at byte "
                               f"{len(data)}: the bucket's copy of {name} is damaged")
        data += (root / entry).read_bytes()
    return bytes(data)


class Mirror:
    """The local copy ``work`` of ``root`` (see the module doc). ``sqlite``: files pushed as a consistent snapshot
    (SQLite's backup API) because another connection may be writing them; ``appended``: files that only grow,
    pushed as parts."""

    def __init__(self, root: Location, work: Path, skip: tuple[str, ...] = (), sqlite: tuple[str, ...] = (),
                 appended: tuple[str, ...] = ()) -> None:
        self.root, self.work, self.skip, self.sqlite, self.appended = root, Path(work), skip, sqlite, appended

    bytes_put = 0  # bytes every mirror of this process has put into buckets (what the scale benchmark counts)

    def _stamps(self, folders: Iterable[str] | None = None) -> Stamps:
        """Every file of the copy (hidden ones and skipped folders left out) → [size, mtime in ns]; with
        ``folders``, only the files directly in the copy and those below the folders named (relative to it)."""
        out: Stamps = {}
        if not self.work.is_dir():
            return out
        if folders is None:
            paths = self.work.rglob("*")
        else:
            paths = itertools.chain(self.work.iterdir(), *((self.work / folder).rglob("*") for folder in folders
                                                           if (self.work / folder).is_dir()))
        for path in paths:
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
        listing = self.root.files()
        parts = tuple(f"{name}{PARTS}/" for name in self.appended)
        for name in listing:
            if self._excluded(name) or name in self.appended or name.startswith(parts):
                continue
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((self.root / name).read_bytes())
        for name in self.appended:
            data = joined(self.root, name, listing)
            if data is not None:
                (self.work / name).parent.mkdir(parents=True, exist_ok=True)
                (self.work / name).write_bytes(data)
        remote = self._marker(self.root / MARKER)
        if remote is not None:
            self._write_marker(remote.get("generation"))
        return None if aside is None else (f"the local copy of {self.root} did not match the bucket and was set aside "
                                           f"({aside}); continuing from the bucket's files")

    def push(self, complete: bool = True, touched: Iterable[str] | None = None) -> None:
        """Put what changed in the copy since the last push into the bucket (see the module doc: the ``sqlite``
        files first, as snapshots, unless the push is not ``complete`` and they have not doubled; the ``appended``
        files' new bytes as parts; the rest whole, in name order), then the marker. ``touched``: the folders
        written into since the last push, when the caller knows them (a push that is not ``complete`` then looks
        at the copy's own files and those folders only, not at every folder of a search of many trials)."""
        before = self._marker(self.work / MARKER) or {}
        pushed = before.get("files") or {}
        stamps = self._stamps() if complete or touched is None else {**pushed, **self._stamps(touched)}
        sent: Stamps = {}
        order = sorted(stamps, key=lambda name: (name not in self.sqlite, name))
        for name in order:
            sent[name] = stamps[name]
            if stamps[name] == pushed.get(name):
                continue
            source = self.work / name
            if name in self.sqlite:
                if not complete and name in pushed and stamps[name][0] < 2 * pushed[name][0]:
                    sent[name] = pushed[name]  # not yet: the ledger holds everything it holds
                    continue
                data = _sqlite_snapshot(source)
            elif name in self.appended:
                self._put_appended(name, pushed.get(name), stamps[name][0])
                continue
            else:
                data = source.read_bytes()
            (self.root / name).write_bytes(data)
            Mirror.bytes_put += len(data)
        generation = uuid.uuid4().hex
        (self.root / MARKER).write_text(json.dumps({"generation": generation}))
        self._write_marker(generation, sent)

    def _put_appended(self, name: str, pushed: list[int] | None, size: int) -> None:
        """Put the bytes of the appended file ``name`` after the ``pushed`` size as a part (the file's first
        ``size`` bytes in all); a file shorter than what was pushed (rewritten) replaces every part."""
        start = pushed[0] if pushed else 0
        if start > size:
            listing = self.root.files()
            for entry in listing:
                if entry.startswith(f"{name}{PARTS}/") or entry == name:
                    (self.root / entry).delete()
            start = 0
        with (self.work / name).open("rb") as file:
            file.seek(start)
            data = file.read(size - start)
        if data:
            (self.root / f"{name}{PARTS}/{start:012d}").write_bytes(data)
            Mirror.bytes_put += len(data)

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

