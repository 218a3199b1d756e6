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

from ..errors import OutputError, PipeClosed, UsageError, stdout_binary
from ..store.outputs import is_record
from .images import file_identity
from .products import NO_READABLE_PHOTO, Product
from .records import OK, display_path, dumps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif", ".mpo"}
)
# Failures that a re-run cannot fix; a resumed run does not try these files again.
PERMANENT_STATUSES = frozenset(
    {"not_an_image", "unsupported_format", "corrupt", "truncated", "too_large", "empty_file"}
)


def is_uri(source: str) -> bool:
    """s3://, gs://, file:// ...: read through Ray's readers (pyarrow filesystems), not the local walk."""
    return "://" in source


def walk_images(root: Path) -> Iterator[str]:
    """Image files under root, depth first, names sorted at every level; symlinked folders are not followed.

    The walk keeps its own stack, so a tree thousands of levels deep is no recursion error.
    A folder that cannot be listed is yielded itself: its record is `unreadable`, with the
    reason, and the run's exit code says not everything was labelled.
    """
    if not root.is_dir():
        yield str(root)
        return
    stack: list[str] = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            yield folder
            continue
        subfolders = []
        for entry in entries:
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_folder = False
            if is_folder:
                subfolders.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                yield entry.path
        stack.extend(reversed(subfolders))


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


def read_path_list(stream: IO[bytes]) -> Iterator[str]:
    """Paths one per line, read as bytes: a name that is not UTF-8 keeps its bytes (as os.fsdecode does)."""
    for line in stream:
        path = os.fsdecode(line.rstrip(b"\n").rstrip(b"\r"))
        if path:
            yield path


@dataclass
class ResumeState:
    # display path -> (size, mtime_ns) of the file its final record describes, None when unknown
    done: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    # product key -> {display path of each photo: (size, mtime_ns) or None}, for product records
    products: dict[str, dict[str, tuple[int, int] | None]] = field(default_factory=dict)
    previous_records: int = 0
    skipped_lines: int = 0  # lines that are not qvl-label records (foreign JSON, torn text)


def scan_existing(output: Path, fingerprint: str, force: bool) -> ResumeState:
    """Collect the paths already finished with this fingerprint, with the file identity each record saw.

    The output has already been checked (store.outputs.inspect_output); lines that are not
    records are counted and skipped, never a crash.
    """
    state = ResumeState()
    if force or not output.is_file():  # nothing to resume from, and devices like /dev/full must not be read
        return state
    try:
        with output.open("rb") as handle:
            for line in handle:  # streamed: the file may hold hundreds of thousands of records
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    state.skipped_lines += bool(line.strip())
                    continue
                if not is_record(record):
                    state.skipped_lines += 1
                    continue
                state.previous_records += 1
                if record.get("run") == fingerprint and (
                    record.get("status") == OK
                    or record.get("status") in PERMANENT_STATUSES
                    or _no_photo_will_ever_load(record)
                ):
                    if isinstance(record.get("product"), str) and isinstance(record.get("images"), list):
                        state.products[record["product"]] = {
                            entry["path"]: _recorded_identity(entry.get("file"))
                            for entry in record["images"]
                            if isinstance(entry, dict) and isinstance(entry.get("path"), str)
                        }
                    else:
                        state.done[record["path"]] = _recorded_identity(record.get("file"))
    except OSError as exc:
        raise OutputError(f"cannot read {output} to resume: {exc.strerror or exc}") from exc
    return state


def _no_photo_will_ever_load(record: dict[str, Any]) -> bool:
    """A product none of whose photos could be read, each for a reason a re-run cannot fix (corrupt, not an
    image...): final, like a single photo's permanent failure. It is labelled again when a photo changes."""
    photos = record.get("images")
    return (
        record.get("status") == NO_READABLE_PHOTO
        and isinstance(photos, list)
        and bool(photos)
        and all(isinstance(p, dict) and p.get("status") in PERMANENT_STATUSES for p in photos)
    )


def _recorded_identity(value: Any) -> tuple[int, int] | None:
    if isinstance(value, dict) and isinstance(value.get("size"), int) and isinstance(value.get("mtime_ns"), int):
        return value["size"], value["mtime_ns"]
    return None


def is_done(resume: ResumeState, path: str) -> bool:
    """Done when a final record exists for the path and the file is still the one it describes.

    A file that changed since (finished copying, replaced by another photo) is work again.
    """
    key = display_path(path)
    if key not in resume.done:
        return False
    recorded = resume.done[key]
    return recorded is None or recorded == file_identity(path)


def is_product_done(resume: ResumeState, product: Product) -> bool:
    """Done when a final record exists for the product key with the same photos, none changed since."""
    recorded = resume.products.get(product.key)
    if recorded is None or set(recorded) != {display_path(p) for p in product.paths}:
        return False
    return all(
        recorded[display_path(p)] is None or recorded[display_path(p)] == file_identity(p) for p in product.paths
    )


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
        except BrokenPipeError:
            raise PipeClosed() from None
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
        return stdout_binary(), False
    if not target.strip():
        raise UsageError("the output name is empty; give a file name such as out.jsonl, or - for stdout")
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
    records: Callable[[Iterable[Any]], Generator[dict[str, Any], None, None]],
    paths: Iterable[Any],
    writer: RecordWriter,
    resume: ResumeState,
    summary: Summary,
    on_record: Callable[[dict[str, Any], Summary], None] = lambda _r, _s: None,
    should_stop: Callable[[], bool] = lambda: False,
    done: Callable[[ResumeState, Any], bool] = is_done,
) -> Summary:
    """Label every path (or product) not already done; each record is written as soon as it exists.

    When should_stop() turns true the run ends after the record in hand; images
    still in flight are dropped and labelled by the next run.
    """

    def todo() -> Iterator[Any]:
        for path in paths:
            if done(resume, path):
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
