"""Stop signals of one worker process: SIGTERM and SIGINT (Ctrl-C) are one request to stop.

The first one asks for a stop: a worker in a trial finishes the current batch, checkpoints,
hands the trial back (to be resumed by any worker) and exits 0; a worker holding no trial
(loading the study or the data) leaves at once, with nothing to save. A second one aborts at
once (:class:`hpo.errors.Aborted`, a ``KeyboardInterrupt``): the trial is handed back from
its last saved checkpoint and the worker exits 128 + the signal's number (130 for Ctrl-C).

The sources: preemption, a notebook's time limit, ``docker stop``, the pool's parent
(SIGTERM), a terminal's Ctrl-C or a notebook's interrupt button (SIGINT).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType, TracebackType

from hpo.errors import Aborted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LeaveNow(BaseException):
    """Raised by the first stop signal while the worker holds no trial (see
    :meth:`StopRequest.holding_nothing`). A BaseException, so that no ``except Exception``
    on the way (a data loader's, a warm-up's) swallows it."""


class StopRequest:
    """True once a stop signal came (``signal`` names it): finish the batch, checkpoint, hand
    the trial back, exit 0. Each handled signal after the first raises Aborted."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self.received = 0
        self.at_once = False  # set while the worker holds no trial (see holding_nothing)
        self.deferring = False  # set while a trial is being handed back (see uninterrupted)
        self.deferred: Aborted | None = None
        # Processes forked from this one (a DataLoader's workers) inherit the handler; a
        # terminal's Ctrl-C reaches them too, and only this process decides anything.
        self._owner = os.getpid()

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner:
            return
        name = signal.Signals(signum).name
        self.received += 1
        if self.received > 1:
            aborted = Aborted(name, signum)
            if self.deferring and self.received == 2:
                self.deferred = aborted
                _notice(f"{name} received: aborting once the trial is handed back; a third aborts now")
                return
            raise aborted
        self.signal = name
        if self.at_once:
            raise LeaveNow
        again = "Ctrl-C" if signum == signal.SIGINT else name
        _notice(f"{name} received: stopping after the current batch (a trial in progress is "
                f"checkpointed and handed back); a second {again} aborts at once")

    def holding_nothing(self) -> _HoldingNothing:
        """While inside: the first stop signal raises LeaveNow (catch it outside the ``with``)."""
        return _HoldingNothing(self)


class _HoldingNothing:
    """A class, not a generator: no window between leaving the block and the mode's end in
    which LeaveNow could escape the caller's ``except``."""

    def __init__(self, stop: StopRequest):
        self.stop = stop

    def __enter__(self) -> None:
        self.stop.at_once = True  # before anything that takes time: a signal raises from here on

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop.at_once = False


def _notice(message: str) -> None:
    """One line on stderr, written with os.write: a signal handler may interrupt a print to
    the same stream, and Python's buffered streams refuse a reentrant write."""
    with suppress(OSError):  # no stderr (a daemon): the stop is reported at exit anyway
        os.write(2, f"{message}\n".encode())


_installed: StopRequest | None = None  # the one in force in this process, if any


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Around the few writes that hand a trial back (fail it, enqueue its retry): a second
    stop signal waits until they are done, then aborts; a third aborts at once. Cut short in
    between, the trial would be failed with no retry enqueued."""
    stop = _installed
    if stop is None or stop.deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    stop.deferring = True
    try:
        yield
    finally:
        stop.deferring = False
    if stop.deferred is not None:
        aborted, stop.deferred = stop.deferred, None
        raise aborted


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM with one :class:`StopRequest` while inside; restores the
    previous handlers after. Outside the main thread (signals reach only the main thread)
    nothing is installed and the request never fires."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    global _installed
    outer, _installed = _installed, stop
    previous = {signum: signal.signal(signum, stop.handle) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _installed = outer
