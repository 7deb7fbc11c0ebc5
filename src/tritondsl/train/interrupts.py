"""Ctrl-C during training: every SIGINT stops the run, and never halfway through a write.

Python turns SIGINT into KeyboardInterrupt wherever the main thread happens to be. When that
is inside a finalizer, a weakref callback or a library's ``except BaseException``, the
exception is lost and training goes on (1 try in 24 early in a run, before this module).
While ``catching()`` is active the signal is also remembered, so the next ``check()`` raises
it again; inside ``deferred()`` (a checkpoint being written) it is only remembered, and
raised as soon as the write is complete.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class _State:
    """What the SIGINT handler shares with the training loop."""

    def __init__(self) -> None:
        self.pending = False
        self.depth = 0  # nested catching() blocks
        self.deferring = 0  # nested deferred() blocks


_STATE = _State()


def _handle(signum: int, frame: FrameType | None) -> None:
    _STATE.pending = True
    if not _STATE.deferring:
        raise KeyboardInterrupt


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """Remember every SIGINT while the block runs; an error after one becomes the interrupt."""
    # signal.signal works only in the main thread; elsewhere the default handling stays.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _STATE.depth == 0:
        _STATE.pending = False
    previous = signal.signal(signal.SIGINT, _handle) if _STATE.depth == 0 else None
    _STATE.depth += 1
    try:
        yield
        check()
    except KeyboardInterrupt:
        raise
    except Exception as error:
        # A failure that follows a Ctrl-C (a DataLoader worker killed by the same signal,
        # say) is the interrupt's doing: report the interrupt, not the failure.
        if _STATE.pending:
            raise KeyboardInterrupt from error
        raise
    finally:
        _STATE.depth -= 1
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT came (and was swallowed) since ``catching()`` began."""
    if _STATE.pending and not _STATE.deferring:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a SIGINT back until the block ends, so what it writes is written whole."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
    check()
