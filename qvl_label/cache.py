"""The persistent label cache: finished labels keyed by image sha256 + run fingerprint, with perceptual hashes."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .images import colour_difference

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


class LabelCache:
    """SQLite in WAL mode: safe across crashes and shared by processes on one machine."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._phashes: dict[str, tuple[np.ndarray, list[str]]] = {}

    def close(self) -> None:
        self._db.close()

    def get(self, sha256: str, fingerprint: str) -> CachedLabel | None:
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
        with self._db:
            self._db.execute(
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
        if phash is not None and fingerprint in self._phashes:
            hashes, shas = self._phashes[fingerprint]
            self._phashes[fingerprint] = (np.append(hashes, np.uint64(phash)), [*shas, sha256])

    def _index(self, fingerprint: str) -> tuple[np.ndarray, list[str]]:
        if fingerprint not in self._phashes:
            rows = self._db.execute(
                "SELECT phash, sha256 FROM labels WHERE fingerprint = ? AND phash IS NOT NULL", (fingerprint,)
            ).fetchall()
            hashes = np.array([r[0] & ((1 << 64) - 1) for r in rows], dtype=np.uint64)
            self._phashes[fingerprint] = (hashes, [r[1] for r in rows])
        return self._phashes[fingerprint]

    def nearest(self, phash: int, layout: bytes, fingerprint: str, max_distance: int) -> CachedLabel | None:
        """The closest cached photo within max_distance bits and of the same colours.

        A vectorised popcount over every stored hash finds the candidates; only those
        are read back to compare colour layouts.
        """
        hashes, shas = self._index(fingerprint)
        if hashes.size == 0:
            return None
        distances = np.bitwise_count(hashes ^ np.uint64(phash))
        for index in np.argsort(distances, kind="stable"):
            distance = int(distances[index])
            if distance > max_distance:
                return None
            row = self._db.execute(
                "SELECT path, record, colour_layout FROM labels WHERE sha256 = ? AND fingerprint = ?",
                (shas[index], fingerprint),
            ).fetchone()
            if row and row[2] is not None and colour_difference(row[2], layout) <= MAX_COLOUR_DIFFERENCE:
                return CachedLabel(path=row[0], record=orjson.loads(row[1]), distance=distance)
        return None

    def stats(self) -> CacheStats:
        entries, fingerprints = self._db.execute("SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM labels").fetchone()
        size = 0
        if self.path is not None:
            size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return CacheStats(str(self.path or ":memory:"), entries, fingerprints, size)

    def clear(self) -> int:
        with self._db:
            removed = self._db.execute("DELETE FROM labels").rowcount
        self._db.execute("VACUUM")
        self._phashes.clear()
        return int(removed)
