"""The audit log: one JSON line per request (who, what images, which statuses), never image bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..pipeline.batch import RecordWriter
from ..store.safe_files import check_output, own_audit_log


class AuditLog:
    """Appends each entry with a single write, as batch output does, so a kill tears at most one line."""

    def __init__(self, path: Path, inputs: Iterable[Path | str | None] = ()) -> None:
        """Refused (usage error) when the file is a link, one of the server's inputs, or an existing
        file that is not an audit log this tool wrote: appending must not change anyone else's file."""
        hint = "give a new file, or an audit log an earlier `qvl-label serve` wrote"
        check_output(path, what="the audit log", inputs=inputs, own=own_audit_log, force=False, hint=hint)
        try:
            self._stream = open(path, "ab")  # noqa: SIM115 - held open for the server's lifetime
        except OSError as exc:
            raise OutputError(f"cannot open the audit log {path}: {exc.strerror or exc}") from exc
        self._writer = RecordWriter(self._stream, str(path), sync_every=16)
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._writer.write(entry)

    def close(self) -> None:
        with self._lock:
            self._writer.sync()
            self._stream.close()
