"""The console script: signals handled before the heavy imports, so an early Ctrl-C or SIGTERM is never a traceback."""

from __future__ import annotations

import itertools
import os
import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    """Nothing is open or started yet: one line, exit 130, at once (no unwinding through half-done imports)."""
    os.write(2, b"interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def started_as_cli() -> bool:
    """Whether this process is the command line (the console script or `python -m qvl_label`), not a program
    that imports qvl_label: only the command line's signal handling is ours to change."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script in ("qvl-label", "qvl-label.exe", "qvl-label-script.py"):
        return True
    command = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b in ("qvl_label", "qvl_label.__main__") for a, b in itertools.pairwise(command))


def guard_start() -> None:
    """The first thing the package does (qvl_label/__init__.py): on the command line, a Ctrl-C before run()
    takes over (loading llama.cpp, importing the CLI) is the one line `interrupted` and exit 130."""
    if started_as_cli() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


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

        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here, Ctrl-C unwinds (clean-up runs)

        try:
            app()
        finally:
            # The work is done (its exit code decided): a late Ctrl-C must not turn the exit
            # into a kill while Python shuts down.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
