"""Output files qvl-label writes: never one of its inputs, and only appended to when they hold its own records."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..errors import UsageError
from .safe_files import refuse_input, same_path

# orjson writes a record's keys in the order they were built, and `path` comes first:
# a torn line of ours starts with these bytes.
RECORD_START = b'{"path":'
_HEAD_BYTES = 1 << 20


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two names are one file (hard links and symbolic links included), or will be once created."""
    return same_path(a, b)


def refuse_same_file(output: Path | str, inputs: list[Path], what: str) -> None:
    """A usage error when the output would overwrite or append to one of the inputs."""
    refuse_input(output, inputs, what)


def is_record(value: Any) -> bool:
    """A qvl-label record: an object whose `path` is a string and which has a `status`."""
    return isinstance(value, dict) and isinstance(value.get("path"), str) and "status" in value


@dataclass(frozen=True)
class OutputTail:
    """What must happen to an existing output before records are appended."""

    cut_bytes: int = 0  # an unparseable partial last line of ours, to remove
    add_newline: bool = False  # a complete last record whose newline is missing


def inspect_output(path: Path) -> OutputTail:
    """Check that an existing output holds qvl-label records before anything is appended.

    Empty files, missing files and anything that is not a regular file (a pipe, /dev/full)
    are fine. A regular file must start with a record and its last complete line must be a
    record; otherwise it is not ours and a usage error leaves it untouched. Only a partial
    last line that starts like one of our records and does not parse, after at least one
    complete record line, may be cut: a file of one unfinished line proves nothing about
    who wrote it. A valid last record that lacks its newline is kept and gets one.
    """
    try:
        info = path.stat()
    except OSError:  # missing, or a path that cannot exist: opening it says why (exit 5)
        return OutputTail()
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return OutputTail()
    try:
        with path.open("rb") as handle:
            head = handle.read(min(info.st_size, _HEAD_BYTES))
            last_newline = _last_newline_before(handle, info.st_size)
            tail = last_complete = b""
            if last_newline >= 0:
                handle.seek(last_newline + 1)
                tail = handle.read()
                line_start = _last_newline_before(handle, last_newline) + 1
                handle.seek(line_start)
                last_complete = handle.read(last_newline - line_start)
    except OSError as exc:
        raise UsageError(f"cannot read the output {path}: {exc.strerror or exc}") from exc
    foreign = UsageError(
        f"{path} exists and does not hold qvl-label records; it was left untouched",
        hint="give a new output file, or one that an earlier run of qvl-label batch wrote",
    )
    first_line = head.split(b"\n", 1)[0]
    if last_newline < 0:  # one line, no newline at all: whole and ours, or not ours to cut
        if _parses_as_record(first_line):
            return OutputTail(add_newline=True)
        raise foreign
    if not _parses_as_record(first_line):
        raise foreign
    if not _parses_as_record(last_complete):
        raise foreign
    if not tail:
        return OutputTail()
    if _parses_as_record(tail):
        return OutputTail(add_newline=True)
    if tail.startswith(RECORD_START):
        return OutputTail(cut_bytes=len(tail))
    raise foreign


def repair_tail(path: Path, tail: OutputTail) -> None:
    """Apply what inspect_output found: cut our torn last line, or end a whole last record."""
    if not tail.cut_bytes and not tail.add_newline:
        return
    try:
        with path.open("r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if tail.cut_bytes:
                handle.truncate(size - tail.cut_bytes)
            else:
                handle.write(b"\n")
    except OSError as exc:
        raise UsageError(f"cannot repair the end of {path}: {exc.strerror or exc}") from exc


def record_paths(files: list[Path]) -> Iterator[str]:
    """Every photo path the records in these files name (a product record's photos included)."""
    for file in files:
        try:
            with file.open("rb") as handle:
                for line in handle:
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if not is_record(record):
                        continue
                    yield record["path"]
                    for photo in record.get("images") or []:
                        if isinstance(photo, dict) and isinstance(photo.get("path"), str):
                            yield photo["path"]
        except OSError:
            continue  # the command itself says why it cannot read the file


def _parses_as_record(line: bytes) -> bool:
    try:
        return is_record(orjson.loads(line))
    except orjson.JSONDecodeError:
        return False


def _last_newline_before(handle: BinaryIO, end: int) -> int:
    """Offset of the last newline before `end`, or -1; read backwards in blocks."""
    position = end
    while position > 0:
        step = min(1 << 16, position)
        position -= step
        handle.seek(position)
        newline = handle.read(step).rfind(b"\n")
        if newline >= 0:
            return position + newline
    return -1
