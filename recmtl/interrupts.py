"""Holding Ctrl-C (and a polite SIGTERM) back while a few native-code writes run.

A KeyboardInterrupt raised while an extension is calling back into Python can be swallowed by it: polars
printed "Exception ignored in: 'DataTypeClass'" when Ctrl-C landed inside the building of a metrics
table, the interrupt was lost, and training ended with status 1 instead of 130. Inside
:func:`deferred_interrupts` such a signal is only noted; it is delivered, to the handler that was in place
before, when the block ends, at a point where Python code (and nothing native) is running.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: The signals deferred by default: Ctrl-C, and SIGTERM where a Python handler stops the work politely.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_interrupts(signums: Sequence[signal.Signals] = INTERRUPTS) -> Iterator[None]:
    """Run the block with ``signums`` held back; at its end, hand each one that arrived (once, in order of
    arrival) to the handler that was installed before.

    Only signals that a Python function handles are deferred: an ignored signal stays ignored and one
    with the default action still ends the process at once (nothing could run its clean-up anyway).
    Outside the main thread (where Python handles no signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, Any], Any]] = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
    arrived: list[int] = []

    def note(signum: int, frame: Any) -> None:
        if signum not in arrived:
            arrived.append(signum)

    for signum in previous:
        signal.signal(signum, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in arrived:
            previous[signum](signum, None)
