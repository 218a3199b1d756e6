"""The audit log: one JSON line per request (who, what images, which statuses), never image bytes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..pipeline.batch import RecordWriter


class AuditLog:
    """Appends each entry with a single write, as batch output does, so a kill tears at most one line."""

    def __init__(self, path: Path) -> None:
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
