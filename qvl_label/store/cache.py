"""The persistent label cache: finished labels keyed by image sha256 + run fingerprint, with perceptual hashes."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
from numpy.typing import NDArray

from ..errors import OutputError
from ..pipeline.images import colour_difference

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    path TEXT NOT NULL,
    phash INTEGER,
    colour_layout BLOB,
    record BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (sha256, fingerprint)
);
CREATE INDEX IF NOT EXISTS labels_by_fingerprint ON labels (fingerprint);
"""

# Hamming distance between 64-bit perceptual hashes at or under which two photos
# count as the same product shot: re-encoding and resizing give 0-2, a 3% crop
# about 6, different products 12 and more (measured on the fixture photos).
DEFAULT_NEAR_DUP_DISTANCE = 8
# Within 16 bits the only pairs of different photos that also share their colours were
# byte-identical copies of one photo; from 24 bits on, different products pass
# (scripts/measure_near_dup.py on 49 real catalogue photos).
MAX_NEAR_DUP_DISTANCE = 16
# pHash is computed on grey levels; colour variants of one product differ here.
MAX_COLOUR_DIFFERENCE = 12.0


@dataclass(frozen=True)
class CachedLabel:
    path: str
    record: dict[str, Any]
    distance: int  # 0 for identical bytes


@dataclass(frozen=True)
class CacheStats:
    path: str
    entries: int
    fingerprints: int
    size_bytes: int


def _signed(phash: int) -> int:
    """SQLite integers are signed 64-bit."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


class CacheError(OutputError):
    """The label cache cannot be read or written (damaged, a full disk, not a database)."""


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Every cache operation: a SQLite failure is one message with the way out, never a traceback."""

    @functools.wraps(method)
    def wrapper(self: LabelCache, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            where = self.path or "the run's temporary cache"
            raise CacheError(
                f"the label cache {where} cannot be used: {exc}",
                hint=f"`qvl-label cache clear --cache {where}` starts it afresh; or give --cache PATH or --no-cache",
            ) from exc

    return wrapper


SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite_file(path: Path) -> bool:
    """Whether the file is (or was meant to be) an SQLite database: empty, or starting with its header."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError:
        return False
    return head in (b"", SQLITE_MAGIC)


def remove_database(path: Path) -> None:
    """Delete a cache database and its WAL files, whatever state they are in (callers check it is a database)."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


class LabelCache:
    """SQLite in WAL mode: safe across crashes and shared by processes on one machine."""

    def __init__(self, path: Path | None) -> None:
        """path None: a private temporary database, deleted on close (on disk, so memory stays flat)."""
        self.path = path
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="qvl-label-cache-")
            db_path = Path(self._temporary.name) / "cache.sqlite"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db_path = path
        self._db = sqlite3.connect(str(db_path), timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # fingerprint -> (phashes, rowids): 16 bytes per cached photo, searched with numpy
        self._phashes: dict[str, tuple[NDArray[Any], NDArray[Any]]] = {}
        # Records are written by the Labeler's shaping thread and read by the thread that feeds
        # the engine; one connection, so every use takes this lock.
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._temporary is not None:
                self._temporary.cleanup()
                self._temporary = None

    @_guarded
    def get(self, sha256: str, fingerprint: str) -> CachedLabel | None:
        with self._lock:
            row = self._db.execute(
                "SELECT path, record FROM labels WHERE sha256 = ? AND fingerprint = ?", (sha256, fingerprint)
            ).fetchone()
            return CachedLabel(path=row[0], record=orjson.loads(row[1]), distance=0) if row else None

    def put(
        self,
        sha256: str,
        fingerprint: str,
        path: str,
        record: dict[str, Any],
        phash: int | None = None,
        layout: bytes | None = None,
    ) -> None:
        with self._lock:
            try:
                cursor = self._insert(sha256, fingerprint, path, record, phash, layout)
            except sqlite3.Error as exc:  # a full disk, a read-only or damaged database
                where = self.path or "the run's temporary cache"
                raise CacheError(
                    f"cannot write to the label cache {where}: {exc}",
                    hint="free disk space, or give --cache PATH on another disk, or --no-cache",
                ) from exc
            if phash is not None and cursor.rowcount == 1 and fingerprint in self._phashes:
                hashes, rowids = self._phashes[fingerprint]
                self._phashes[fingerprint] = (
                    np.append(hashes, np.uint64(phash)),
                    np.append(rowids, np.int64(cursor.lastrowid or 0)),
                )

    def _insert(
        self,
        sha256: str,
        fingerprint: str,
        path: str,
        record: dict[str, Any],
        phash: int | None,
        layout: bytes | None,
    ) -> sqlite3.Cursor:
        with self._db:
            return self._db.execute(
                "INSERT OR IGNORE INTO labels (sha256, fingerprint, path, phash, colour_layout, record, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    fingerprint,
                    path,
                    None if phash is None else _signed(phash),
                    layout,
                    orjson.dumps(record),
                    time.time(),
                ),
            )

    def _index(self, fingerprint: str) -> tuple[NDArray[Any], NDArray[Any]]:
        if fingerprint not in self._phashes:
            rows = self._db.execute(
                "SELECT phash, rowid FROM labels WHERE fingerprint = ? AND phash IS NOT NULL", (fingerprint,)
            ).fetchall()
            hashes = np.array([r[0] & ((1 << 64) - 1) for r in rows], dtype=np.uint64)
            self._phashes[fingerprint] = (hashes, np.array([r[1] for r in rows], dtype=np.int64))
        return self._phashes[fingerprint]

    @_guarded
    def nearest(self, phash: int, layout: bytes, fingerprint: str, max_distance: int) -> CachedLabel | None:
        """The closest cached photo within max_distance bits and of the same colours.

        A vectorised popcount over every stored hash finds the candidates; only those
        are read back to compare colour layouts.
        """
        with self._lock:
            hashes, rowids = self._index(fingerprint)
            if hashes.size == 0:
                return None
            distances = np.bitwise_count(hashes ^ np.uint64(phash))
            for index in np.argsort(distances, kind="stable"):
                distance = int(distances[index])
                if distance > max_distance:
                    return None
                row = self._db.execute(
                    "SELECT path, record, colour_layout FROM labels WHERE rowid = ?", (int(rowids[index]),)
                ).fetchone()
                if row and row[2] is not None and colour_difference(row[2], layout) <= MAX_COLOUR_DIFFERENCE:
                    return CachedLabel(path=row[0], record=orjson.loads(row[1]), distance=distance)
            return None

    @_guarded
    def stats(self) -> CacheStats:
        with self._lock:
            entries, fingerprints = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM labels"
            ).fetchone()
            size = 0
            if self.path is not None:
                size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
            return CacheStats(str(self.path or "(temporary)"), entries, fingerprints, size)

    @_guarded
    def clear(self) -> int:
        with self._lock:
            with self._db:
                removed = self._db.execute("DELETE FROM labels").rowcount
            self._db.execute("VACUUM")
            self._phashes.clear()
            return int(removed)
