"""The audit log: one JSON line per request (who, what images, which statuses), never image bytes."""

from __future__ import annotations

import datetime
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..pipeline.batch import RecordWriter
from ..store.safe_files import check_output, own_audit_log


@dataclass(frozen=True)
class Caller:
    """Who sent a request: its id (in the audit log and the response), the client's address, the API key's id."""

    request_id: str
    client: str
    key_id: str | None


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


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

    def answered(
        self, caller: Caller, endpoint: str, status: int, records: list[dict[str, Any]], seconds: float
    ) -> None:
        """A request answered with records: each image's name, digest, status, reuse and compliance flags."""
        images = [
            {
                "name": r.get("path"),
                "sha256": r.get("sha256"),
                "status": r.get("status"),
                "reused": r.get("duplicate_of") is not None,
                "compliance_flags": [
                    {"rule": f.get("rule"), "field": f.get("field"), "text": f.get("text")} for f in _flags(r)
                ],
            }
            for r in records
        ]
        self._entry(caller, endpoint, status, images=images, timings_ms={"total": round(seconds * 1000, 1)})

    def refused(self, caller: Caller, endpoint: str, status: int, error_type: str) -> None:
        """A request answered with an error: who asked, and why it was refused or failed."""
        self._entry(caller, endpoint, status, error=error_type, images=[])

    def _entry(self, caller: Caller, endpoint: str, status: int, **details: Any) -> None:
        self.write(
            {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "request_id": caller.request_id,
                "client": caller.client,
                "api_key_id": caller.key_id,
                "endpoint": endpoint,
                "status": status,
                **details,
            }
        )


def _flags(record: dict[str, Any]) -> list[dict[str, Any]]:
    label = record.get("label") or {}
    compliance = label.get("compliance") if isinstance(label, dict) else None
    return list((compliance or {}).get("flags") or [])
