"""The parent of `gateway serve` hears a stop signal in its keeper thread, whichever thread the
kernel gave it to (gateway/processes.py `StopSignals`): real signals to this process, no mocks.

The main thread here stands for the parent's, busy in uvicorn's supervisor: it blocks the
signal, so the kernel hands it to another thread, and it waits in a join, so the Python-level
handler (which only the main thread runs) does not run meanwhile.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.processes import StopSignals

HEARD_WITHIN = 5.0


@pytest.fixture
def stop_signals() -> Iterator[StopSignals]:
    """SIGTERM with a Python-level handler (as uvicorn's supervisor has one) that only notes
    it, and the StopSignals of this process; both undone afterwards."""
    noted: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))
    signals = StopSignals()
    try:
        yield signals
    finally:
        # The main thread runs the noting handler once it next takes the GIL (each sleep's
        # end): before the handler is undone, or CPython reports a signal it could not handle.
        deadline = time.monotonic() + HEARD_WITHIN
        while signals.heard() and not noted and time.monotonic() < deadline:
            time.sleep(0.01)
        signals.close()
        signal.signal(signal.SIGTERM, previous)


def _heard_in_another_thread(signals: StopSignals, signum: int) -> bool:
    """Whether a thread polling `signals.heard()` sees `signum`, sent to this process while the
    main thread blocks it and waits for that thread."""
    heard: list[bool] = []

    def keeper() -> None:
        deadline = time.monotonic() + HEARD_WITHIN
        while not signals.heard() and time.monotonic() < deadline:
            time.sleep(0.01)
        heard.append(signals.heard())

    thread = threading.Thread(target=keeper)
    thread.start()  # before the mask: the thread does not inherit it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        os.kill(os.getpid(), signum)
        thread.join(HEARD_WITHIN * 2)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    return heard == [True]


def test_a_sigterm_given_to_another_thread_is_heard_while_the_main_thread_waits(
    stop_signals: StopSignals,
) -> None:
    assert not stop_signals.heard()
    assert _heard_in_another_thread(stop_signals, signal.SIGTERM)
    assert stop_signals.heard()  # and stays heard


def test_a_signal_that_is_not_a_stop_is_not_heard_as_one(stop_signals: StopSignals) -> None:
    # uvicorn's supervisor has Python handlers for SIGHUP, SIGTTIN, ...: their numbers come
    # through the same pipe.
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert not stop_signals.heard()
    finally:
        signal.signal(signal.SIGUSR1, previous)
