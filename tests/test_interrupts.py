"""The command's Ctrl-C: recorded, so that an interrupt swallowed where it was raised still stops the command at its
next boundary; handlers a library replaces are put back. Real signals, sent to this process."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from alphatune import interrupts


@pytest.fixture
def handlers():
    """This process's SIGINT and SIGTERM handlers, put back afterwards (pytest's own Ctrl-C needs them)."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
    interrupts._pending = False


def swallowed(signum: int) -> None:
    """Send ``signum`` to this process where its ``KeyboardInterrupt`` is dropped, as the interpreter drops one
    raised in logging's fork handler or a ``__del__`` ("Exception ignored in ...")."""
    try:
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs between bytecodes of the main thread
            pass
    except KeyboardInterrupt:
        pass


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_boundary(handlers) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.install()
    interrupts.check()  # nothing came: nothing raised
    with pytest.raises(KeyboardInterrupt):
        with interrupts.kept():
            swallowed(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()
    interrupts.handled()
    interrupts.check()


def test_sigterm_is_a_ctrl_c_even_where_sigint_is_ignored(handlers) -> None:
    """A search a non-interactive shell started in the background ignores SIGINT: it stays ignored, and SIGTERM
    still stops the command (recorded as an interrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.install()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    swallowed(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_handlers_a_library_replaces_are_put_back_and_its_graceful_stop_is_not_an_interrupt(handlers) -> None:
    """As Ray Tune does: its SIGINT handler sets an event (a graceful stop) and stays after its run."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.install()
    ours = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stop = threading.Event()
    with interrupts.kept():
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    assert stop.is_set()
    assert {signum: signal.getsignal(signum) for signum in ours} == ours
    interrupts.check()  # the library took that Ctrl-C and stopped gracefully: the command goes on to say so
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
