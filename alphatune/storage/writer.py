"""One writer per run: the process that runs or resumes a search holds its run directory, and a second is refused
in one line that names the holder.

* On a local or shared path, ``LocalLock``: the kernel's lock (``flock``) on ``RUN/.writer.lock``. A holder that
  dies, however it dies, leaves no lock behind (on network storage ``flock`` must reach the server: NFSv4 does).
* In object storage, ``Lease``: an object ``RUN/.writer.lease`` that its holder renews every ``ttl / 4`` seconds
  (``ttl``: ``$ALPHATUNE_LEASE_SECONDS``, else 60) with a conditional write (``storage.objects``): a renewal
  succeeds only while the object is still the one the holder wrote last, so a holder whose lease was taken over
  finds out at its next renewal (``lost``, and the ``on_lost`` callback) and stops. Whether a lease has expired
  is judged by the storage's clock (how long ago the object was last written), never by comparing the clocks of
  two machines.

What a lock or lease says of its holder (pid, host, command line, since when) holds no secret: the command line
is redacted (``storage.secrets``), the lock file is readable by its owner and group only (those who share the run
directory), and it is emptied when the holder lets go.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alphatune.storage.location import Location, StorageError
from alphatune.storage.objects import ConditionalObject
from alphatune.storage.secrets import redact

LOCK_FILE, LEASE_FILE = ".writer.lock", ".writer.lease"
LOCK_MODE = 0o640  # its holder writes it; those who share the run directory (its group) read who holds it


class WriterRefused(StorageError):
    """Another process is the run's writer (or took over this process's lease); the message names it, and so
    does ``holder`` (``describe``'s words)."""

    holder = "another process"


def _holder_info(since: datetime) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": redact(" ".join(sys.argv)),
            "since": since.strftime("%Y-%m-%d %H:%M:%S UTC")}


def describe(info: dict[str, Any] | None) -> str:
    """``pid P on HOST (`COMMAND`, since T)`` of a holder as its lock or lease records it."""
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    return f"pid {info['pid']} on {info.get('host')} (`{redact(str(info.get('command')))}`, since {info.get('since')})"


def _busy(what: str, info: dict[str, Any] | None, extra: str = "") -> WriterRefused:
    refused = WriterRefused(f"{what} is being written by {describe(info)}; wait for it to end or stop it{extra}")
    refused.holder = describe(info)
    return refused


class LocalLock:
    """``flock`` on ``directory/.writer.lock``, or another file ``name`` there (see the module doc).

    The file is its owner's to write and its group's to read (``LOCK_MODE``): those who share a run directory see
    who holds it. Another user of the group takes the lock through a read-only handle (``flock`` needs no more) and
    cannot record itself in the file, whose holder then reads "another process"; a user who cannot open the file at
    all is refused in one line that says whose it is."""

    def __init__(self, directory: str | os.PathLike, name: str = LOCK_FILE) -> None:
        self.path = Path(directory) / name
        self._handle: Any = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _open(self, what: str, flags: int) -> Any:
        """A handle on the lock file opened with ``flags`` (read-only when this user may not write it);
        ``StorageError`` in one line when this user may not open it at all."""
        try:
            return os.fdopen(os.open(self.path, flags, LOCK_MODE), "r+" if flags & os.O_RDWR else "r",
                             encoding="utf-8")
        except PermissionError:
            if not self.path.exists():
                raise StorageError(f"{what}: this user cannot create its lock file {self.path} (permission "
                                   f"denied)") from None
        try:
            return os.fdopen(os.open(self.path, os.O_RDONLY), "r", encoding="utf-8")
        except PermissionError:
            owner = _owner(self.path)
            raise StorageError(f"{what}: this user cannot open its lock file {self.path} (it belongs to {owner}): "
                               f"run as {owner}, or let {owner} make it readable by the group "
                               f"(chmod g+r {self.path})") from None

    def check(self, what: str) -> None:
        """``WriterRefused`` naming the holder when another process holds the lock; creates nothing."""
        if self._handle is not None or not self.path.is_file():
            return
        with self._open(what, os.O_RDONLY) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(what, self._read()) from None

    def acquire(self, what: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._open(what, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise _busy(what, self._read()) from None
        self._handle = handle
        if handle.writable():
            with contextlib.suppress(PermissionError):  # only its owner may change its mode
                os.fchmod(handle.fileno(), LOCK_MODE)  # a lock file an earlier version left readable by all
            self._record(json.dumps(_holder_info(datetime.now(timezone.utc))))

    def _record(self, text: str) -> None:
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(text)
        self._handle.flush()

    def release(self) -> None:
        """Let go; the file is emptied first, so it names no one after its holder ended."""
        if self._handle is None:
            return
        if self._handle.writable():
            with contextlib.suppress(OSError):
                self._record("")
        self._handle.close()
        self._handle = None


def _owner(path: Path) -> str:
    """``user NAME (uid N)`` who owns ``path``."""
    uid = path.stat().st_uid
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class Lease:
    """A writer's lease on object storage (see the module doc). ``lost`` is ``None`` while this process holds it,
    else why it does not any more."""

    def __init__(self, location: Location, ttl: float | None = None,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.location = location
        self.ttl = ttl if ttl is not None else float(os.environ.get("ALPHATUNE_LEASE_SECONDS") or 60.0)
        self.on_lost = on_lost
        self.token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.lost: str | None = None
        self._object: ConditionalObject | None = None
        self._tag: str | None = None
        self._info: dict[str, Any] = {}
        self._renewals = 0
        self._stop = threading.Event()
        self._renewing = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def object(self) -> ConditionalObject:
        if self._object is None:
            self._object = ConditionalObject.at(self.location)
        return self._object

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, **self._info, "renewals": self._renewals}).encode()

    def holder(self) -> dict[str, Any] | None:
        """The live holder as the lease records it (``None``: no lease, or one that has expired), with ``age``
        (seconds since its last renewal, by the storage's clock)."""
        seen = self.object.read()
        if seen.body is None or seen.age is None or seen.age >= self.ttl:
            return None
        try:
            info = json.loads(seen.body)
        except ValueError:
            info = {}
        return {**info, "age": seen.age} if isinstance(info, dict) else {"age": seen.age}

    def check(self, what: str) -> None:
        """``WriterRefused`` naming the holder while another live holder has the lease; writes nothing."""
        held = self.holder()
        if held is not None and held.get("token") != self.token:
            raise self._refusal(what, held)

    def _refusal(self, what: str, held: dict[str, Any] | None) -> WriterRefused:
        return _busy(what, held, f" (a holder that died lets go within {self.ttl:g} s)")

    def acquire(self, what: str) -> None:
        """Take the lease for writing ``what``: create it, or take over one that has expired; ``WriterRefused``
        naming the holder while another one holds it."""
        seen = self.object.read()
        self._info = _holder_info(seen.now)
        if seen.body is None:
            self._tag = self.object.create(self._body())
        elif seen.age is not None and seen.age >= self.ttl:
            self._tag = self.object.replace(self._body(), seen.tag or "")
        else:
            raise self._refusal(what, _json(seen.body))
        if self._tag is None:  # another writer got there between the read and the write
            raise self._refusal(what, _json(self.object.read().body))
        self._thread = threading.Thread(target=self._renew, name="alphatune-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.renew():
                    return
            except Exception:  # the store does not answer for now: the next renewal tries again
                continue

    def renew(self) -> bool:
        """Renew the lease now, conditionally: ``False`` (and ``lost`` set, ``on_lost`` called once) when someone
        wrote it since this process last did, so that it is theirs now. Storage errors propagate."""
        with self._renewing:
            if self.lost is not None:
                return False
            self._renewals += 1
            tag = self.object.replace(self._body(), self._tag or "")
            if tag is not None:
                self._tag = tag
                return True
            try:
                taker = describe(_json(self.object.read().body))
            except Exception:
                taker = "another process"
            self.lost = (f"{self.location.parent} was taken over by {taker} (this process's lease was not renewed "
                         f"within {self.ttl:g} s)")
        if self.on_lost is not None:
            self.on_lost(self.lost)
        return False

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.lost is None and self._tag is not None:
            try:
                self.object.delete(self._tag)
            except Exception:  # an unreachable store: the lease expires on its own
                pass


def _json(body: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(body or b"")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


Writer = LocalLock | Lease
_held: dict[str, tuple[Location, Writer]] = {}  # run root's URI → the root and what this process holds on it


def writer_of(root: Location, on_lost: Callable[[str], None] | None = None) -> Writer:
    """The lock (local path) or lease (object storage) that guards the run directory ``root``."""
    return LocalLock(root.local) if root.is_local else Lease(root / LEASE_FILE, on_lost=on_lost)


def hold(root: Location, on_lost: Callable[[str], None] | None = None) -> None:
    """Make this process ``root``'s one writer, for as long as it lives or until ``let_go`` (a no-op when it holds
    it already); ``WriterRefused`` naming the holder otherwise. ``on_lost``: called (on another thread) if a lease
    is taken over."""
    if root.uri in _held:
        return
    writer = writer_of(root, on_lost)
    writer.acquire(str(root))
    _held[root.uri] = (root, writer)


def check_free(root: Location) -> None:
    """``WriterRefused`` naming the holder when another process holds ``root``; creates nothing."""
    if root.uri not in _held:
        writer_of(root).check(str(root))


def holder(root: Location) -> str | None:
    """``describe``'s words for the process other than this one that holds ``root`` now; ``None`` when none does
    (or this user cannot tell: a lock file it may not read)."""
    try:
        check_free(root)
    except WriterRefused as refused:
        return refused.holder
    except StorageError:
        return None
    return None


def holds(root: Location) -> bool:
    return root.uri in _held


def held() -> list[Location]:
    """The run roots this process holds."""
    return [root for root, _ in _held.values()]


def lost(root: Location) -> str | None:
    """Why this process no longer holds ``root``'s lease (``None``: it holds it, or holds no lease)."""
    writer = _held.get(root.uri, (None, None))[1]
    return writer.lost if isinstance(writer, Lease) else None


def confirm(root: Location) -> str | None:
    """Before writing into ``root``: renew its lease now (a conditional write), so that a holder that lost it
    finds out before it writes, not up to ``ttl / 4`` later; why it is lost, or ``None``. A lock needs no renewal."""
    writer = _held.get(root.uri, (None, None))[1]
    if isinstance(writer, Lease):
        writer.renew()
        return writer.lost
    return None


def let_go(root: Location) -> None:
    """Give up this process's lock or lease on ``root`` (a no-op when it holds none)."""
    _, writer = _held.pop(root.uri, (None, None))
    if writer is not None:
        writer.release()
