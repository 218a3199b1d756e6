"""Run-level failures: each exception class carries the exit code the CLI documents."""

from __future__ import annotations

import sys
from typing import IO


class QvlError(Exception):
    """A failure that stops the whole run. The message is one line for the user."""

    exit_code = 2
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UsageError(QvlError):
    """Bad arguments: missing path, directory given to describe, unknown option value."""

    exit_code = 2


class ModelMissingError(QvlError):
    """Model files are not in the cache and may not be downloaded (offline)."""

    exit_code = 3


class ModelDownloadError(QvlError):
    """The download failed (network, hub error)."""

    exit_code = 3


class ModelVerifyError(QvlError):
    """A downloaded or cached file does not match models.lock (size or sha256)."""

    exit_code = 3


class EngineLoadError(QvlError):
    """llama.cpp could not load the model or projector, or ignored a setting."""

    exit_code = 4


class InternalError(QvlError):
    """A broken promise inside qvl-label itself (e.g. an input path left without a record); a bug to report."""

    exit_code = 70


class OutputError(QvlError):
    """The output cannot be written (unwritable path, disk full)."""

    exit_code = 5


class PipeClosed(QvlError):
    """The reader of our standard output went away (`| head`): stop quietly, as Unix tools do."""

    exit_code = 141  # 128 + SIGPIPE, what a shell reports for a tool that SIGPIPE stopped

    def __init__(self) -> None:
        super().__init__("the reader of standard output stopped reading")


def stdout_binary() -> IO[bytes]:
    """Standard output for records; an error (exit 5) when it was closed (`>&-`)."""
    if sys.stdout is None:
        raise OutputError("standard output is closed; nothing can be written there")
    return sys.stdout.buffer


def write_stdout(data: bytes) -> None:
    """One write to standard output: a closed pipe stops quietly, a full disk is exit 5."""
    try:
        stream = stdout_binary()
        stream.write(data)
        stream.flush()
    except BrokenPipeError:
        raise PipeClosed() from None
    except OSError as exc:
        raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from exc


class ClusterError(QvlError):
    """The Ray cluster could not be reached, or failed the run as a whole."""

    exit_code = 6
