"""Server-side paths (--allow-dir): the file a name stands for, and reading it within the request's limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..pipeline.images import ImageLoadError, read_file
from .errors import Forbidden, PayloadTooLarge


@dataclass(frozen=True)
class Upload:
    """One image of a request: its bytes, or why it could not be read (a server-side path)."""

    name: str
    data: bytes = b""
    error: ImageLoadError | None = None


class AllowedFolder:
    """The folder --allow-dir names (None: the server reads no server-side paths)."""

    def __init__(self, folder: Path | None, max_images: int, max_read_bytes: int) -> None:
        self.folder = folder.resolve() if folder is not None else None
        self.max_images = max_images
        self.max_read_bytes = max_read_bytes

    def resolve(self, relative: str) -> Path | ImageLoadError:
        """The file a name under --allow-dir stands for; Forbidden when it leaves the folder, an
        ImageLoadError (a record, not a refusal) when it cannot be resolved, as a symbolic link loop."""
        if self.folder is None:
            raise Forbidden("this server reads no server-side paths (start it with --allow-dir DIR)")
        parts = PurePosixPath(relative).parts
        if not relative or relative.startswith(("/", "\\")) or ".." in parts or "\\" in relative or "\x00" in relative:
            raise Forbidden(f"path {relative!r} must be relative to the allowed folder, without '..'")
        try:
            resolved = (self.folder / relative).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python 3.11, 3.12)
            return ImageLoadError("unreadable", f"cannot resolve the path: {exc}")
        if not resolved.is_relative_to(self.folder):
            raise Forbidden(f"path {relative!r} leaves the allowed folder (a symbolic link?)")
        return resolved

    def read(self, relative: str) -> Upload:
        """A file under --allow-dir, named relative to it; anything that leaves the folder is refused."""
        target = self.resolve(relative)
        if isinstance(target, ImageLoadError):
            return Upload(relative, error=target)
        try:
            return Upload(relative, read_file(target))
        except ImageLoadError as exc:
            return Upload(relative, error=exc)

    def check(self, relatives: list[str], uploads: int) -> None:
        """Refuse a request whose names, counted with its `uploads`, or whose files' summed sizes are over
        a limit (PayloadTooLarge), or that names a path outside the folder (Forbidden): before a byte is read."""
        if uploads + len(relatives) > self.max_images:
            raise PayloadTooLarge(f"{uploads + len(relatives)} images in one request; the limit is {self.max_images}")
        targets = [self.resolve(r) for r in relatives]  # every refusal (403) before any reading
        total = sum(_size(t) for t in targets if isinstance(t, Path))
        if total > self.max_read_bytes:
            raise PayloadTooLarge(
                f"the files named come to {total} bytes; one request may have {self.max_read_bytes} read"
            )


def _size(path: Path) -> int:
    """A file's size for the per-request budget; what cannot be seen costs nothing (it becomes a record)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
