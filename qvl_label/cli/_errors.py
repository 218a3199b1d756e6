"""The one table of run-level failures: exit codes, and how an exception becomes a one-line message."""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import PipeClosed, QvlError

# Exit codes, documented in the README ("Exit codes"). QvlError subclasses carry their own
# (2 usage, 3 model not available, 4 llama.cpp load, 5 output, 70 internal).
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


def run_action(debug: bool, action: Callable[[], T]) -> T:
    """The one place run-level errors become a message and an exit code."""
    try:
        return action()
    except PipeClosed as exc:
        _silence_stdout()  # else Python reports the broken pipe again when it flushes at exit
        raise typer.Exit(exc.exit_code) from None
    except QvlError as exc:
        if debug:
            traceback.print_exc()
        # escaped: paths and messages may hold [brackets] that rich would read as markup
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        if exc.hint:
            err.print(f"[dim]hint: {escape(exc.hint)}[/dim]")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        else:
            err.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}")
            err.print("[dim]hint: run again with --debug for the traceback[/dim]")
        raise typer.Exit(EXIT_INTERNAL) from None


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
