"""One rule for every file qvl-label writes: never an input, never through a link, never a stranger's, atomic."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import OutputError, UsageError

try:  # POSIX; where it is missing (Windows) outputs are not locked
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms the tests run on
    fcntl = None  # type: ignore[assignment]

_HEAD_BYTES = 64 << 10
FORCE_HINT = "give a new file name, or add --force to replace it"


def same_path(a: Path | str, b: Path | str) -> bool:
    """Whether two names are one file: the same inode (hard and symbolic links), or, for names that do not
    exist yet, the same absolute path once links in the folders are resolved (SQLite's -wal/-shm appear later)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_input(target: Path | str, inputs: Iterable[Path | str | None], what: str) -> None:
    """A usage error when the output is one of the command's inputs (by name, link or inode)."""
    for item in inputs:
        if item is not None and str(item) not in ("", "-") and same_path(target, item):
            message = f"{what} {target} is the same file as {item}, an input of this command"
            raise UsageError(f"{message}; give another output")


def refuse_link(target: Path | str, what: str) -> None:
    """Writes never follow a symbolic link out to wherever it points."""
    if os.path.islink(target):
        raise UsageError(
            f"{what} {target} is a symbolic link (to {os.readlink(target)}); it was left untouched",
            hint="give the real file name",
        )


def check_output(
    target: Path | str,
    *,
    what: str,
    inputs: Iterable[Path | str | None] = (),
    own: Callable[[bytes], bool],
    force: bool,
    hint: str = FORCE_HINT,
) -> None:
    """Everything checked before an output is replaced; each failure is a one-line usage error (exit 2).

    `own` tells from a file's first bytes whether this tool wrote it; an existing non-empty
    regular file that fails it is replaced only with --force.
    """
    if not str(target).strip():
        raise UsageError(f"{what}: the file name is empty")
    refuse_link(target, what)
    refuse_input(target, inputs, what)
    try:
        info = os.stat(target)
    except OSError:
        return  # missing: created; a name that cannot exist fails when written, as an output error
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{what} {target} is a directory; give a file name")
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return
    try:
        with open(target, "rb") as handle:
            refuse_locked(handle, Path(target))  # a running batch's output: replacing it would lose its records
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {target}: {exc.strerror or exc}") from exc
    if not force and not own(head):
        raise UsageError(f"{what} {target} exists and was not written by qvl-label; it was left untouched", hint)


@contextlib.contextmanager
def replaced_atomically(target: Path | str, what: str) -> Iterator[IO[bytes]]:
    """A binary stream whose bytes become `target` only when the block ends without an error.

    The bytes go to a temporary file next to the target, which is synced and renamed over it,
    so a reader sees the old file or the new one, never a part. A target that is not a
    regular file (/dev/null, a pipe) is written in place: it cannot be renamed over.
    """
    path = Path(target)
    with contextlib.suppress(OSError):
        if path.exists() and not path.is_file():
            with _wrapped(path, what), path.open("wb") as handle:
                yield handle
            return
    with _wrapped(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            with _wrapped(path, what):
                handle.flush()
                os.fsync(handle.fileno())
        with _wrapped(path, what):
            _keep_mode(path, temporary)
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _keep_mode(path: Path, temporary: str) -> None:
    """The new file keeps the old one's permissions; a new one gets the umask's, as open() would give."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(temporary, mode)


@contextlib.contextmanager
def _wrapped(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        named = f"{what} {path}" if what else str(path)
        raise OutputError(f"cannot write {named}: {exc.strerror or exc}") from exc


def refuse_named_file(target: Path | str, names: Iterable[str], what: str) -> None:
    """A usage error when an existing target is one of `names` (the photos a run's records name)."""
    try:
        target_info = os.stat(target)
    except OSError:
        return
    for name in names:
        try:
            info = os.stat(name)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (target_info.st_dev, target_info.st_ino):
            raise UsageError(f"{what} {target} is {name}, a photo this command's records name; give another output")


# -- how the tool recognises its own files, format by format (docs/reference/reliability.md) -----------------


def _first_line(head: bytes) -> bytes:
    return head.removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0].rstrip(b"\r")


def _first_json(head: bytes) -> Any:
    try:
        return orjson.loads(_first_line(head))
    except orjson.JSONDecodeError:
        return None


def own_jsonl(head: bytes) -> bool:
    """Records, gold: JSON lines whose first line is an object with a string `path`."""
    value = _first_json(head)
    return isinstance(value, dict) and isinstance(value.get("path"), str)


def own_audit_log(head: bytes) -> bool:
    value = _first_json(head)
    return isinstance(value, dict) and {"time", "request_id", "endpoint", "status"} <= value.keys()


def own_header(*prefixes: bytes) -> Callable[[bytes], bool]:
    """CSV and TSV files: the header row this tool writes."""
    return lambda head: any(_first_line(head).startswith(prefix) for prefix in prefixes)


def own_text(marker: bytes) -> Callable[[bytes], bool]:
    """HTML reports, learnt templates, feeds in XML: a line only this tool writes, near the top."""
    return lambda head: marker in head[:4096]


_TASKS = re.compile(rb"^\s*\[\s*(\]|\{\s*\"data\")")


def own_tasks_json(head: bytes) -> bool:
    """Label Studio tasks as export writes them: a list of objects that start with "data"."""
    return _TASKS.match(head) is not None


own_config_xml = own_text(b"<View>")


# -- the lock a run holds on the output it appends to -------------------------------------------------------


class OutputLock:
    """An exclusive lock on an output held for a whole run, so two runs never append the same records.

    The lock is the kernel's (flock) on the output itself: it goes when the process ends,
    however it ends. Who holds it (pid, host, since) is written to `<output>.lock` beside it,
    for the message another run shows, and removed when the run ends normally.
    """

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        self._info = Path(f"{path}.lock")
        self._held = False
        if fcntl is None:
            return
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held_by_another_run(
                path, "wait for that run to finish, or give another output (each shard its own file)"
            ) from None
        except OSError:
            return  # a pipe or a device cannot be locked, and needs no lock
        self._held = True
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):  # only informative: a read-only folder still gets the lock
            self._info.write_bytes(orjson.dumps(holder) + b"\n")

    def release(self) -> None:
        """The kernel lock goes with the stream's close; this removes the holder note."""
        if self._held:
            self._held = False
            with contextlib.suppress(OSError):
                self._info.unlink()


def refuse_locked(stream: IO[bytes], path: Path) -> None:
    """A usage error when a batch run holds the lock on this file (OutputLock)."""
    if fcntl is None:
        return
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _held_by_another_run(path, "wait for that run to finish") from None
    except OSError:
        return
    fcntl.flock(stream.fileno(), fcntl.LOCK_UN)


HOLDER_NOTE_WAIT_S = 2.0  # how long a refused run waits for the holder's note (written right after its lock)


def _held_by_another_run(path: Path, hint: str) -> UsageError:
    """The refusal of a file a batch run holds, naming that run from its `<output>.lock` note."""
    who = _holder(Path(f"{path}.lock"))
    return UsageError(f"{path} is being written by another run ({who}); it was left untouched", hint=hint)


def _holder(info: Path, patience_s: float = HOLDER_NOTE_WAIT_S) -> str:
    """Who holds the lock, from its note. The holder writes the note just after taking the lock, so a
    run refused in between waits a moment for it rather than say it does not know."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            holder = orjson.loads(info.read_bytes())
            return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "a process that has not said who it is yet"
            time.sleep(0.02)
