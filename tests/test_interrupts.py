"""deferred_interrupts: a signal that arrives inside the block is delivered, once, when the block ends."""

from __future__ import annotations

import signal
import threading

import pytest

from recmtl.interrupts import deferred_interrupts


@pytest.fixture
def python_ctrl_c():
    """SIGINT handled by Python's default handler (KeyboardInterrupt) for the test, whatever was set."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_inside_the_block_is_raised_when_it_ends(python_ctrl_c):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            done.append("rest of the block")  # (without the deferral the interrupt lands before this)
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_block_without_a_signal_changes_nothing(python_ctrl_c):
    before = signal.getsignal(signal.SIGTERM)
    with deferred_interrupts():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_previous_handler_gets_each_signal_once_in_order_of_arrival(python_ctrl_c):
    calls = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with deferred_interrupts():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert calls == []
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_first_signal_to_arrive_is_delivered_first(python_ctrl_c):
    calls = []

    def term(signum, frame):
        calls.append(signum)
        raise RuntimeError("stopped")

    before = signal.signal(signal.SIGTERM, term)
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            with deferred_interrupts():
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGINT)
        assert calls == [signal.SIGTERM]  # (its exception ends the delivery; Ctrl-C was the second)
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGTERM, before)


def test_an_ignored_signal_stays_ignored(python_ctrl_c):
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with deferred_interrupts():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_outside_the_main_thread_it_does_nothing():
    errors = []

    def work():
        try:
            with deferred_interrupts():
                pass
        except Exception as exc:  # (signal.signal would raise ValueError here)
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
