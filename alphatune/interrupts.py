"""Ctrl-C and SIGTERM of the ``alphatune`` command: the one owner of the process's SIGINT and SIGTERM handlers.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT lands. Where that is code whose
exceptions the interpreter prints and drops ("Exception ignored in ...": logging's fork handler while Ray starts
its processes, a ``__del__``, a weakref callback), the Ctrl-C would be lost and the command would run on to its
end. So the command's handler also records the interrupt, and ``check()`` raises it again at the command's
boundaries. Libraries replace the handlers and do not always put them back (``ray.init`` SIGTERM's; Ray Tune
SIGINT's, left in place after a search that ended, so that the confirmation's first Ctrl-C would go to a finished
Tune run): code that calls them runs inside ``kept()``.

Only the command installs the handlers (``install``); a Python program that calls the library keeps its own,
and ``check()`` never raises there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import NoReturn

_pending = False  # an interrupt came (it may have been swallowed where it was raised)


def install() -> None:
    """SIGINT raises ``KeyboardInterrupt`` and is recorded, unless SIGINT is ignored (a process a non-interactive
    shell started in the background); SIGTERM (``kill``, a batch scheduler's stop, ``ray job stop``) does what
    SIGINT does at that moment: while Ray Tune runs, its graceful stop; otherwise the interrupt."""
    global _pending
    _pending = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _terminate)


def _interrupt(signum: int, frame: object) -> NoReturn:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def _terminate(signum: int, frame: object) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored or left to the system: SIGTERM still stops the command cleanly
        _interrupt(signum, frame)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if the command was interrupted (the first raise may have been swallowed); call
    before handing over to long work."""
    if _pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Put the SIGINT and SIGTERM handlers back as they were on leaving (only the main thread may set them), then
    ``check()``: an interrupt swallowed inside (while ``ray.init`` forked Ray's processes) is raised here."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in before.items():
                if handler is not None and signal.getsignal(signum) is not handler:
                    signal.signal(signum, handler)
    check()


def caused(error: BaseException) -> bool:
    """Whether ``error`` reports an interrupt: an extension module whose initialisation a Ctrl-C cut short
    (scipy's, while a search imports it) raises ``ImportError: initialization failed`` from the
    ``KeyboardInterrupt``."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def handled() -> None:
    """Say the interrupt was handled. It otherwise still makes ``python -m alphatune`` end by SIGINT (status -2, not
    130) when it came while a library ran code through ``PyRun_String`` (torch's import does): CPython (3.10,
    3.11) then sets a flag that ``Py_RunMain`` turns into a SIGINT exit. Clear it where it exists."""
    global _pending
    _pending = False
    import ctypes
    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ValueError, AttributeError):  # another Python: its flag lives elsewhere or nowhere
        pass
