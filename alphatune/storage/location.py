"""A file or directory on local disk, a shared mount or object storage, written and read one way.

A ``Location`` is a file or a directory given as a local path or a URI: ``s3://bucket/prefix`` (AWS S3, or any
S3-compatible server through the standard AWS environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), ``gs://bucket/prefix``, and whatever else ``pyarrow.fs``
resolves (the layer Ray itself uses). A local path is read and written with the operating system's own calls; a
URI through ``pyarrow.fs``. Either way:

* ``write_bytes`` is atomic: a reader, or a process restarted after a kill, sees the old file or the new one,
  never half of one (a temporary file renamed over the target; on object storage a single put);
* ``check`` says in one line, within seconds, why a location cannot be used (unknown scheme, an endpoint that does
  not answer, a bucket that does not exist, no permission) instead of the SDK's minutes of retries;
A location is never a local folder named after a URI: ``s3://x`` is S3 or an error.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHECK_SECONDS = 15.0  # how long checking a location may take before it is one line saying it did not answer
PROBE_SECONDS = 5.0   # a TCP connection to an object store's endpoint


class StorageError(ValueError):
    """A location cannot be used; the message names it and says why."""


def cache_dir() -> Path:
    """Where this machine keeps what can be made again: prepared datasets, local copies of runs in object storage
    (``$ALPHATUNE_CACHE``, else ``~/.cache/alphatune``)."""
    return Path(os.environ.get("ALPHATUNE_CACHE") or Path.home() / ".cache" / "alphatune")


def is_uri(text: str | os.PathLike) -> bool:
    """Whether ``text`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(text)


@dataclass(frozen=True)
class Location:
    """A file or directory: ``uri`` as given (made absolute for a local path), the ``pyarrow.fs`` filesystem and
    the path within it for a URI (``fs`` is ``None`` for a local path)."""

    uri: str
    path: str = field(compare=False)
    fs: Any = field(default=None, compare=False)  # equal and hashed by its URI

    @classmethod
    def of(cls, text: str | os.PathLike | "Location") -> "Location":
        """The location ``text`` names (``StorageError`` for a URI no filesystem takes)."""
        if isinstance(text, Location):
            return text
        text = str(text)
        if not is_uri(text):
            path = str(Path(text).expanduser().resolve())
            return cls(path, path)
        scheme = urlsplit(text).scheme.lower()
        if scheme == "file":
            path = str(Path(urlsplit(text).path).resolve())
            return cls(path, path)
        import pyarrow.fs as pafs
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except ValueError as error:  # pyarrow.ArrowInvalid: a scheme no filesystem takes, a malformed URI
            raise StorageError(f"{text}: not a storage location this machine can use ({_first_line(error)}); "
                               f"give a local path or an s3://, gs:// (or other pyarrow) URI") from None
        except OSError as error:  # the scheme is known, its server could not be asked (network, credentials)
            raise StorageError(f"{text}: its storage could not be reached ({_first_line(error)}); "
                               f"{_access_hint(scheme)}") from None
        return cls(text.rstrip("/"), path.rstrip("/"), fs)

    # ------------------------------------------------------------------ naming

    @property
    def is_local(self) -> bool:
        return self.fs is None

    @property
    def local(self) -> Path:
        """The local path (only for a local location)."""
        if self.fs is not None:
            raise StorageError(f"{self.uri} is not a local path")
        return Path(self.path)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return Location(self.uri.rsplit("/", 1)[0], self.path.rsplit("/", 1)[0], self.fs)

    def __truediv__(self, name: str) -> "Location":
        name = str(name).strip("/")
        return Location(f"{self.uri}/{name}", f"{self.path}/{name}", self.fs)

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        return str(self.local)

    # ------------------------------------------------------------------ reading

    def _info(self) -> Any:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        if self.fs is None:
            return Path(self.path).exists()
        import pyarrow.fs as pafs
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        if self.fs is None:
            return Path(self.path).is_file()
        import pyarrow.fs as pafs
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        if self.fs is None:
            return Path(self.path).is_dir()
        import pyarrow.fs as pafs
        return self._info().type == pafs.FileType.Directory

    def children(self) -> list["Location"]:
        """The entries directly inside this directory, by name (none when it does not exist)."""
        if self.fs is None:
            path = Path(self.path)
            return [Location(str(child), str(child)) for child in sorted(path.iterdir())] if path.is_dir() else []
        import pyarrow.fs as pafs
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return [self / info.base_name for info in sorted(infos, key=lambda info: info.base_name)]

    def files(self) -> list[str]:
        """Every file below this directory, as paths relative to it (none when it does not exist)."""
        if self.fs is None:
            root = Path(self.path)
            return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) \
                if root.is_dir() else []
        import pyarrow.fs as pafs
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return sorted(info.path[len(self.path) + 1:] for info in infos if info.type == pafs.FileType.File)

    def read_bytes(self) -> bytes:
        """The file's content; ``FileNotFoundError`` naming it when there is none."""
        if self.fs is None:
            return Path(self.path).read_bytes()
        if not self.is_file():
            raise FileNotFoundError(f"{self.uri} does not exist")
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    # ------------------------------------------------------------------ writing

    def makedirs(self) -> None:
        if self.fs is None:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(self.path, recursive=True)

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` atomically (see the module doc), creating the folders on the way."""
        if self.fs is None:
            path = Path(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                temporary.write_bytes(data)
                os.replace(temporary, path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            return
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def delete(self) -> None:
        """Remove this file (nothing when there is none)."""
        if self.fs is None:
            Path(self.path).unlink(missing_ok=True)
        elif self.is_file():
            self.fs.delete_file(self.path)

    # ------------------------------------------------------------------ checking

    def unwritable(self) -> str | None:
        """Why this process could not create and write into this directory, or ``None`` when it could (see
        ``check``); a local one is checked without creating anything."""
        if self.fs is None:
            return unwritable(Path(self.path))
        try:
            _run_within(self._check_remote, CHECK_SECONDS)
        except StorageError as error:
            return str(error)
        return None

    def check(self, option: str) -> None:
        """``StorageError`` naming ``option`` and this location when it cannot be written: within seconds, before any
        work (an endpoint that does not answer, a missing bucket, no credentials or permission, a read-only
        mount, a path through a file)."""
        reason = self.unwritable()
        if reason is not None:
            raise StorageError(f"{option} {self.uri}: cannot write there ({reason})")

    def _check_remote(self) -> None:
        import pyarrow.fs as pafs
        endpoint = _endpoint(self)
        if endpoint is not None:
            host, port = endpoint
            try:
                with socket.create_connection((host, port), timeout=PROBE_SECONDS):
                    pass
            except OSError as error:
                reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error)).lower()
                raise StorageError(f"the endpoint {host}:{port} does not answer ({reason})") from None
        bucket = self.path.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as error:
            raise StorageError(_first_line(error)) from None
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"the bucket {bucket} does not exist")
        probe = self / f".write-check-{socket.gethostname()}-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.delete()
        except OSError as error:
            raise StorageError(f"writing a test object failed: {_first_line(error)}") from None


def load_tensors(where: str | os.PathLike | Location, device: Any = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` of the file at a path or URI (no arbitrary code runs), tensors mapped
    to ``device``; ``FileNotFoundError`` naming it when there is none."""
    import torch
    location = Location.of(where)
    if location.is_local:
        if not Path(location.path).is_file():
            raise FileNotFoundError(f"{location.uri} does not exist")
        return torch.load(location.path, map_location=device, weights_only=True)
    return torch.load(io.BytesIO(location.read_bytes()), map_location=device, weights_only=True)


def save_tensors(value: Any, where: str | os.PathLike | Location) -> None:
    """``torch.save(value)`` to a path or URI, atomically."""
    import torch
    buffer = io.BytesIO()
    torch.save(value, buffer)
    Location.of(where).write_bytes(buffer.getvalue())


def _endpoint(location: Location) -> tuple[str, int] | None:
    """``(host, port)`` an S3 location talks to (``AWS_ENDPOINT_URL[_S3]``, else AWS's own), or ``None``."""
    if type(location.fs).__name__ != "S3FileSystem":
        return None
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return "s3.amazonaws.com", 443
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)


def _run_within(function: Any, seconds: float) -> Any:
    """``function()``, or ``StorageError`` when it has not returned within ``seconds`` (the SDK keeps retrying a
    dead endpoint for minutes; the thread is left to finish on its own)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(function).result(timeout=seconds)
    except FutureTimeout:
        raise StorageError(f"no answer within {seconds:g} s") from None
    finally:
        pool.shutdown(wait=False)


def unwritable(directory: Path) -> str | None:
    """Why this process could not create and write into the local ``directory`` (a read-only mount, a path through a
    file, no permission), or ``None`` when it could; checked without creating anything: the nearest existing folder
    on the way must be a writable, searchable directory."""
    existing = Path(directory)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{os.strerror(errno.ENOTDIR)}: {existing}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{os.strerror(errno.EROFS if _read_only(existing) else errno.EACCES)}: {existing}"
    return None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _access_hint(scheme: str) -> str:
    """What to check when a bucket's server cannot be asked."""
    if scheme in ("s3", "s3a"):
        missing = [name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(name)]
        return ("check the network, AWS_ENDPOINT_URL for a server of your own, AWS_DEFAULT_REGION and the credentials"
                + (f" ({' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set and there is no "
                   f"~/.aws/credentials)"
                   if missing and not (Path.home() / ".aws" / "credentials").is_file() else ""))
    if scheme == "gs":
        return "check the network and GOOGLE_APPLICATION_CREDENTIALS"
    return "check the network and the credentials for it"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
