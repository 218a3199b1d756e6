"""Run-level failures: each exception class carries the exit code the CLI documents."""

from __future__ import annotations


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
