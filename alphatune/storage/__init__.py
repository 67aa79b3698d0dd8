"""Where a run's files live and how they are written and read: the one storage layer.

* ``location``: a file or directory on disk, a shared mount or object storage (``Location``), atomic writes,
  tensors, and the one-line check of a location that cannot be used;
* ``mirror``: a local working copy of a directory in a bucket, which the bucket must confirm before it is used;
* ``writer``: one writer per run (a kernel lock on disk, a lease with conditional writes in a bucket);
* ``objects``: one object written conditionally and aged by the storage's clock (what a lease needs);
* ``lines``: an append-only file of whole lines that survives its own torn tail;
* ``faults``: whose fault an error is, the environment's or the work's;
* ``secrets``: what a run records of a command line or a URL, redacted.
"""

from alphatune.storage import writer
from alphatune.storage.faults import disk_full, environment_fault, error_chain
from alphatune.storage.lines import LineFile
from alphatune.storage.location import (CHECK_SECONDS, Location, StorageError, cache_dir, is_uri, load_tensors,
                                        save_tensors, unwritable)
from alphatune.storage.mirror import DamagedParts, Mirror, joined
from alphatune.storage.secrets import redact
from alphatune.storage.writer import LEASE_FILE, LOCK_FILE, Lease, LocalLock, WriterRefused

__all__ = ["CHECK_SECONDS", "DamagedParts", "LEASE_FILE", "LOCK_FILE", "Lease", "LineFile", "LocalLock", "Location", "Mirror",
           "StorageError", "WriterRefused", "cache_dir", "disk_full", "environment_fault", "error_chain", "is_uri", "joined",
           "load_tensors", "redact", "save_tensors", "unwritable", "writer"]
