"""One object in object storage, written only if it is still what the writer last saw, aged by the storage's clock.

What a lease needs (``storage.writer.Lease``) and a plain put cannot give:

* **conditional writes**: ``create`` writes only where no object is, ``replace`` only while the object is still
  the version the caller read or wrote (its ETag): two writers cannot both believe they wrote last;
* **the storage's clock**: ``read`` says how long ago the object was last written and what time it is, both as
  the storage tells them (the object's last-modified time, the response's date), so machines whose clocks
  disagree (by minutes, say) still agree on whether a lease has expired.

``ConditionalObject.at(location)`` picks the way: on S3 (and S3-compatible servers: MinIO, moto, ...) boto3 with
``If-None-Match``/``If-Match``, after checking once that the server honours them (a server that ignores the
headers would make every conditional write succeed); elsewhere (GCS through pyarrow, a server without
conditional writes) ``VerifiedObject``: write, then read back and check that what is there is what was written,
with the storage's clock read from a probe object's modification time. The second narrows the window in which
two writers can both succeed but does not close it; ``exact`` says which one is in use.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from alphatune.storage.location import Location

_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


@dataclass(frozen=True)
class Snapshot:
    """What a read saw: the object's bytes and version tag (``None``: no object), its age in seconds by the
    storage's clock (``None``: no object), and the storage's time of the read."""

    body: bytes | None
    tag: str | None
    age: float | None
    now: datetime


class ConditionalObject:
    """The object at a location, read and written conditionally (see the module doc)."""

    exact = True

    @staticmethod
    def at(location: Location) -> "ConditionalObject":
        if type(location.fs).__name__ == "S3FileSystem":
            s3 = S3Object(location)
            if s3.honours_conditions():
                return s3
        return VerifiedObject(location)

    def read(self) -> Snapshot:
        raise NotImplementedError

    def create(self, body: bytes) -> str | None:
        """Write ``body`` where no object is; its tag, or ``None`` when an object is there already."""
        raise NotImplementedError

    def replace(self, body: bytes, tag: str) -> str | None:
        """Write ``body`` over the object while its tag is ``tag``; the new tag, or ``None`` when it is not."""
        raise NotImplementedError

    def delete(self, tag: str) -> None:
        """Remove the object while its tag is ``tag`` (nothing otherwise)."""
        raise NotImplementedError


class S3Object(ConditionalObject):
    """An S3 object through boto3 (the standard AWS environment: ``AWS_ENDPOINT_URL``, credentials, region)."""

    def __init__(self, location: Location) -> None:
        import boto3
        from botocore.config import Config
        self.location = location
        self.bucket, _, self.key = location.path.partition("/")
        self.client = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=15,
                                                       retries={"max_attempts": 3, "mode": "standard"}))

    def honours_conditions(self) -> bool:
        """Whether the server refuses a second ``If-None-Match: *`` write of one object (checked on a probe)."""
        probe = f"{self.key}.probe-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
            try:
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
                return False
            except Exception as error:  # botocore's ClientError
                return _conflict(error)
        except Exception:
            return False
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=probe)
            except Exception:
                pass

    def read(self) -> Snapshot:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:
            if _code(error) in ("NoSuchKey", "404"):
                return Snapshot(None, None, None, _date(getattr(error, "response", {})))
            raise _os_error(error, self.location) from None
        now = _date(response)
        age = max(0.0, (now - response["LastModified"]).total_seconds())
        return Snapshot(response["Body"].read(), response["ETag"], age, now)

    def _put(self, body: bytes, **condition: str) -> str | None:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except Exception as error:
            if _conflict(error):
                return None
            raise _os_error(error, self.location) from None

    def create(self, body: bytes) -> str | None:
        return self._put(body, IfNoneMatch="*")

    def replace(self, body: bytes, tag: str) -> str | None:
        return self._put(body, IfMatch=tag)

    def delete(self, tag: str) -> None:
        if self.read().tag == tag:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


class VerifiedObject(ConditionalObject):
    """Any other store (``pyarrow.fs``): a write is checked by reading it back; the clock is a probe's mtime."""

    exact = False

    def __init__(self, location: Location) -> None:
        self.location = location

    def _now(self) -> datetime:
        probe = self.location.parent / f"{self.location.name}.clock-{socket.gethostname()}-{os.getpid()}"
        probe.write_bytes(b"")
        try:
            return _aware(probe.fs.get_file_info(probe.path).mtime)
        finally:
            probe.delete()

    def read(self) -> Snapshot:
        now = self._now()
        try:
            body = self.location.read_bytes()
        except FileNotFoundError:
            return Snapshot(None, None, None, now)
        modified = _aware(self.location.fs.get_file_info(self.location.path).mtime)
        return Snapshot(body, _digest(body), max(0.0, (now - modified).total_seconds()), now)

    def _write_and_check(self, body: bytes) -> str | None:
        self.location.write_bytes(body)
        time.sleep(0.2)  # two writers at once: the last write wins, the other sees it when it reads back
        return _digest(body) if self.read().tag == _digest(body) else None

    def create(self, body: bytes) -> str | None:
        return None if self.location.exists() else self._write_and_check(body)

    def replace(self, body: bytes, tag: str) -> str | None:
        return self._write_and_check(body) if self.read().tag == tag else None

    def delete(self, tag: str) -> None:
        if self.read().tag == tag:
            self.location.delete()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(timezone.utc)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _date(response: Any) -> datetime:
    """The storage's time of a response (its ``Date`` header); this machine's clock when it has none."""
    header = (response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    return email.utils.parsedate_to_datetime(header) if header else datetime.now(timezone.utc)


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or (response.get("ResponseMetadata") or {})
               .get("HTTPStatusCode") or "")


def _conflict(error: Exception) -> bool:
    return _code(error) in _CONFLICT


def _os_error(error: Exception, location: Location) -> OSError:
    """boto3's error as the ``OSError`` the rest of the storage layer raises (pyarrow's are ``OSError`` too)."""
    return OSError(f"{location}: {type(error).__name__}: {str(error).strip().splitlines()[0][:300]}")
