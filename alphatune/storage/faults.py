"""Whose fault an error is: the environment's (storage, the cluster) or the work's own.

A search must never charge the environment's faults to a trial: a full disk, a revoked permission, an expired
credential or a lost node says nothing about the configuration being trained. ``environment_fault(error)`` says
whether an exception (or one it was raised from) is such a fault, in one line, and ``disk_full`` whether it is
the full-disk kind (which has its own advice: free space).

The environment's:

* ``OSError`` from storage: ``ENOSPC``/``EDQUOT`` (full), ``EACCES``/``EPERM``/``EROFS`` (no permission, a
  mount gone read-only), ``ESTALE`` (a stale NFS handle), ``EIO``, a connection refused, reset or timed out, and
  the object stores' errors as ``pyarrow`` raises them (``AWS Error ACCESS_DENIED``, expired tokens, an endpoint
  that does not answer), which are ``OSError`` too; SQLite's "database or disk is full";
* ``StorageError`` (a location that cannot be used);
* Ray's own failures (``ray.exceptions.RayError``: a lost object, a dead worker or node, the OOM killer).

Everything else (a ``ValueError`` from a bad value, a model's ``RuntimeError``, NaN) is the work's own.
"""

from __future__ import annotations

import errno
from typing import Any

from alphatune.storage.location import StorageError

_FULL = ("No space left on device", "database or disk is full", "Disk quota exceeded")
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ESTALE, errno.EIO,
                       errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                       errno.ENOTCONN}
_STORE_WORDS = ("AWS Error", "GCS Error", "google::cloud", "Access Denied", "AccessDenied", "ExpiredToken",
                "InvalidAccessKeyId", "SignatureDoesNotMatch", "curlCode", "Could not resolve host",
                "Connection refused", "timed out")


def error_chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and every exception it was raised from or during, outermost first (each once, whatever cycles
    the chain holds)."""
    seen: list[BaseException] = []
    while error is not None and all(error is not other for other in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it was raised from) says a disk is full: ``ENOSPC``/``EDQUOT``, SQLite's "database
    or disk is full" (under Optuna's and SQLAlchemy's wrappers), or those words in a message."""
    return any((isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT))
               or any(words in str(link) for words in _FULL) for link in error_chain(error))


def environment_fault(error: BaseException | None) -> str | None:
    """One line saying what failed in the environment when ``error`` is its fault (see the module doc), else
    ``None``."""
    for link in error_chain(error):
        if disk_full(link) or isinstance(link, StorageError) or _ray_failure(link) or (
                isinstance(link, OSError) and (link.errno in _ENVIRONMENT_ERRNOS
                                               or (link.errno is None and any(w in str(link) for w in _STORE_WORDS)))):
            return _first_line(link)
    return None


def _ray_failure(error: BaseException) -> bool:
    try:
        from ray.exceptions import RayError, RayTaskError
    except ImportError:
        return False
    # A RayTaskError carries the task's own exception: judge that one (it is further down the chain).
    return isinstance(error, RayError) and not isinstance(error, RayTaskError)


def _first_line(error: Any) -> str:
    text = str(error).strip()
    line = text.splitlines()[0][:300] if text else type(error).__name__
    return line if line.startswith(type(error).__name__) or isinstance(error, (OSError, StorageError)) \
        else f"{type(error).__name__}: {line}"
