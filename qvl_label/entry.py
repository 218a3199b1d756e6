"""The console script: signals handled before the heavy imports, so an early Ctrl-C or SIGTERM is never a traceback."""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_termination_handlers() -> None:
    """SIGTERM and SIGHUP stop the program as Ctrl-C does, so clean-up (temporary caches) runs.

    A signal the program was started with ignored (nohup) stays ignored.
    """
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _interrupt)


def run() -> None:
    try:
        install_termination_handlers()
        from .cli import app  # typer, rich, numpy, Pillow: a quarter of a second to import

        try:
            app()
        finally:
            # The work is done (its exit code decided): a late Ctrl-C must not turn the exit
            # into a kill while Python shuts down.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
