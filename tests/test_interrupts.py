"""Ctrl-C and SIGTERM during an in-process run reach the host's own handlers (a test runner stops)."""

from __future__ import annotations

import os
import signal
from types import FrameType

from qvl_label.cli.label import _graceful_interrupt


def test_a_signal_taken_by_an_in_process_run_reaches_the_hosts_handler_when_the_run_ends() -> None:
    seen: list[int] = []

    def host_handler(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    before = {number: signal.signal(number, host_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _graceful_interrupt(quiet=True) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(timeout=30), "the run's handler never saw SIGTERM"
            assert seen == []  # during the run, the run handles it: finish the record in hand, then stop
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is host_handler
        assert signal.getsignal(signal.SIGTERM) is host_handler
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_the_console_scripts_own_handler_is_not_called_twice() -> None:
    from qvl_label import entry

    before = signal.getsignal(signal.SIGTERM)
    entry.install_termination_handlers()
    try:
        with _graceful_interrupt(quiet=True) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(timeout=30)
        # no KeyboardInterrupt from entry's handler: the run's summary and exit code say it
    finally:
        signal.signal(signal.SIGTERM, before)
