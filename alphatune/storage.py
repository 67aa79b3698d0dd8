"""Where a run's files live and how they are written and read: the one storage layer.

For now: whether a local directory can be written, checked without creating anything.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def unwritable(directory: Path) -> str | None:
    """Why this process could not create and write into ``directory`` (a read-only mount, a path through a file,
    no permission), or ``None`` when it could; checked without creating anything: the nearest existing folder on
    the way must be a writable, searchable directory."""
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
