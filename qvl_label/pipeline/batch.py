"""Batch runs: stable folder walk, JSONL output that resumes after a crash, and the run summary."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import OutputError, UsageError
from .records import OK, display_path, dumps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif", ".mpo"}
)
# Failures that a re-run cannot fix; a resumed run does not try these files again.
PERMANENT_STATUSES = frozenset(
    {"not_an_image", "unsupported_format", "corrupt", "truncated", "too_large", "empty_file"}
)


def walk_images(root: Path) -> Iterator[str]:
    """Image files under root, depth first, names sorted at every level; symlinked folders are not followed."""
    if root.is_file():
        yield str(root)
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(dirpath, name)


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): the second of four disjoint shards (1-based)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"--shard takes I/N, e.g. 1/4, not {text!r}") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: I must be between 1 and N")
    return index, count


def in_shard(path: str, root: str | None, index: int, count: int) -> bool:
    """Deterministic split on the path relative to the walked folder, so every machine agrees."""
    relative = os.path.relpath(path, root) if root else path
    digest = hashlib.blake2b(relative.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count == index - 1


def read_path_list(stream: IO[str]) -> Iterator[str]:
    for line in stream:
        path = line.rstrip("\n").rstrip("\r")
        if path:
            yield path


@dataclass
class ResumeState:
    done: set[str] = field(default_factory=set)
    repaired_bytes: int = 0
    previous_records: int = 0


def scan_existing(output: Path, fingerprint: str, force: bool) -> ResumeState:
    """Repair a torn last line and collect the paths already finished with this fingerprint."""
    state = ResumeState()
    if not output.is_file():  # nothing to resume from, and devices like /dev/full must not be read
        return state
    try:
        state.repaired_bytes = _repair_torn_tail(output)
        if force:
            return state
        with output.open("rb") as handle:
            for line in handle:  # streamed: the file may hold hundreds of thousands of records
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                state.previous_records += 1
                if record.get("run") == fingerprint and (
                    record.get("status") == OK or record.get("status") in PERMANENT_STATUSES
                ):
                    state.done.add(record["path"])
    except OSError as exc:
        raise OutputError(f"cannot read {output} to resume: {exc.strerror or exc}") from exc
    return state


def _repair_torn_tail(output: Path) -> int:
    """Cut a last line that a kill left without its newline; returns the bytes removed."""
    with output.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        position = size
        while position > 0:
            step = min(1 << 16, position)
            position -= step
            handle.seek(position)
            block = handle.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = position + newline + 1
                break
        else:
            end = 0
        if end < size:
            handle.truncate(end)
        return size - end


class RecordWriter:
    """Appends one JSON line per record with a single write, so a kill leaves at most one torn line."""

    def __init__(self, stream: IO[bytes], name: str, sync_every: int = 64) -> None:
        self._stream = stream
        self._name = name
        self._sync_every = sync_every
        self._since_sync = 0

    def write(self, record: dict[str, Any]) -> None:
        line = dumps(record) + b"\n"
        try:
            written = self._stream.write(line)
            if written is not None and written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
            self._stream.flush()
            self._since_sync += 1
            if self._since_sync >= self._sync_every:
                self.sync()
        except OSError as exc:
            raise OutputError(f"cannot write to {self._name}: {exc.strerror or exc}") from exc

    def sync(self) -> None:
        self._since_sync = 0
        with contextlib.suppress(OSError, ValueError):  # pipes and terminals cannot be synced
            os.fsync(self._stream.fileno())


@dataclass
class Summary:
    counts: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    reused: int = 0
    started: float = field(default_factory=time.perf_counter)
    interrupted: bool = False

    @property
    def processed(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.processed - self.counts.get(OK, 0)

    def add(self, record: dict[str, Any]) -> None:
        self.counts[record["status"]] += 1
        if record.get("duplicate_of"):
            self.reused += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def open_output(target: str, append: bool) -> tuple[IO[bytes], bool]:
    """Binary stream for target ('-' is stdout); the flag says whether we must close it."""
    if target == "-":
        import sys

        return sys.stdout.buffer, False
    path = Path(target)
    if path.is_dir():
        raise UsageError(f"output {target} is a directory; give a file name such as out.jsonl")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: each record is one write() system call, so nothing waits in a
        # buffer to be lost by a kill, or to fail again at close after a full disk.
        return path.open("ab" if append else "wb", buffering=0), True
    except OSError as exc:
        raise OutputError(f"cannot open {target} for writing: {exc.strerror or exc}") from exc


def run_batch(
    records: Callable[[Iterable[str]], Generator[dict[str, Any], None, None]],
    paths: Iterable[str],
    writer: RecordWriter,
    resume: ResumeState,
    summary: Summary,
    on_record: Callable[[dict[str, Any], Summary], None] = lambda _r, _s: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Summary:
    """Label every path not already done; each record is written as soon as it exists.

    When should_stop() turns true the run ends after the record in hand; images
    still in flight are dropped and labelled by the next run.
    """

    def todo() -> Iterator[str]:
        for path in paths:
            if display_path(path) in resume.done:
                summary.skipped += 1
                continue
            yield path

    stream = records(todo())
    try:
        for record in stream:
            writer.write(record)
            summary.add(record)
            on_record(record, summary)
            if should_stop():
                summary.interrupted = True
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        stream.close()  # releases the engine's sequences and the loader threads now, not at garbage collection
        writer.sync()
    return summary
