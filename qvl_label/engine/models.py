"""Model presets from models.lock: pinned download, size + sha256 verification, and the cache state."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from ..datafiles import TOMLDecodeError, parse_toml
from ..errors import ModelDownloadError, ModelMissingError, ModelVerifyError, UsageError
from ..settings import ModelRef

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PinnedFile:
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    repo: str
    revision: str
    model: PinnedFile
    mmproj: PinnedFile

    def files(self) -> list[tuple[str, PinnedFile]]:
        return [("model", self.model), ("mmproj", self.mmproj)]


@dataclass(frozen=True)
class ModelLock:
    default: str
    presets: dict[str, Preset]

    def get(self, name: str | None) -> Preset:
        name = name or self.default
        if name not in self.presets:
            raise UsageError(f"unknown model preset {name!r}; known presets: {', '.join(self.presets)}")
        return self.presets[name]


def default_lock_path() -> Path:
    """models.lock ships inside the wheel; in a source checkout it sits at the repository root."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "models.lock"
    return packaged if packaged.exists() else package.parent / "models.lock"


def _pinned(preset: str, role: str, entry: Any) -> PinnedFile:
    if not isinstance(entry, dict):
        raise ValueError(f"{preset}.{role} must be a table")
    pinned = PinnedFile(file=str(entry["file"]), size=int(entry["size"]), sha256=str(entry["sha256"]).lower())
    if not _HEX64.match(pinned.sha256):
        raise ValueError(f"{preset}.{role}.sha256 is not 64 hex digits")
    if pinned.size <= 0:
        raise ValueError(f"{preset}.{role}.size must be positive")
    return pinned


def load_lock(path: Path | None = None) -> ModelLock:
    path = path or default_lock_path()
    try:
        data = parse_toml(path.read_text(encoding="utf-8"))
        presets: dict[str, Preset] = {}
        for name, raw in data["presets"].items():
            revision = str(raw["revision"]).lower()
            if not _HEX40.match(revision):
                raise ValueError(f"{name}.revision must be a 40-hex commit, not a branch or tag")
            presets[name] = Preset(
                name=name,
                description=str(raw.get("description", "")),
                repo=str(raw["repo"]),
                revision=revision,
                model=_pinned(name, "model", raw["model"]),
                mmproj=_pinned(name, "mmproj", raw["mmproj"]),
            )
        default = str(data["default"])
        if default not in presets:
            raise ValueError(f"default preset {default!r} is not defined")
    except (OSError, KeyError, ValueError, TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return ModelLock(default=default, presets=presets)


def sha256_of(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


class VerificationLedger:
    """Remembers files already hashed (by path, size and mtime) so a 6 GB file is hashed once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries = self._read(path)

    @staticmethod
    def _stamp(path: Path) -> dict[str, Any]:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def is_verified(self, path: Path, pinned: PinnedFile) -> bool:
        entry = self._entries.get(str(path.resolve()))
        if not entry or entry.get("sha256") != pinned.sha256:
            return False
        try:
            return entry.get("stamp") == self._stamp(path.resolve())
        except OSError:
            return False

    def record(self, path: Path, pinned: PinnedFile) -> None:
        """Add one entry. Several processes verify at once (the README's shards): under a lock, the
        ledger is read again, the entry added, and the whole written to a temporary file of this
        process's own and renamed over the ledger, so no process loses another's entries."""
        resolved = path.resolve()
        entry = {"sha256": pinned.sha256, "stamp": self._stamp(resolved)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.path}.lock"):
            self._entries = {**self._read(self.path), str(resolved): entry}
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    handle.write(json.dumps(self._entries, indent=1))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, Any]]:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}


@dataclass(frozen=True)
class FileState:
    role: str
    pinned: PinnedFile
    path: Path | None
    verified: bool


class ModelStore:
    """Finds, downloads and verifies preset files in the Hugging Face cache."""

    def __init__(
        self,
        lock: ModelLock,
        state_dir: Path,
        hf_cache_dir: Path | None = None,
        offline: bool = False,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.lock = lock
        self.hf_cache_dir = hf_cache_dir
        self.offline = offline
        self.ledger = VerificationLedger(state_dir / "verified.json")
        self._log = log

    def _cached(self, preset: Preset, pinned: PinnedFile) -> Path | None:
        found = try_to_load_from_cache(preset.repo, pinned.file, cache_dir=self.hf_cache_dir, revision=preset.revision)
        return Path(found) if isinstance(found, str) else None

    def state(self, preset: Preset) -> list[FileState]:
        states = []
        for role, pinned in preset.files():
            path = self._cached(preset, pinned)
            verified = path is not None and self.ledger.is_verified(path, pinned)
            states.append(FileState(role, pinned, path, verified))
        return states

    def verify(self, path: Path, pinned: PinnedFile) -> None:
        """Size first (cheap), then sha256; a bad file is removed so it is never used."""
        if self.ledger.is_verified(path, pinned):
            return
        size = path.stat().st_size
        problem = None
        if size != pinned.size:
            problem = f"size {size} bytes, expected {pinned.size}"
        else:
            self._log(f"verifying sha256 of {pinned.file} ({size / 1e9:.1f} GB)")
            digest = sha256_of(path)
            if digest != pinned.sha256:
                problem = f"sha256 {digest[:12]}…, expected {pinned.sha256[:12]}…"
        if problem:
            _remove_cached(path)
            raise ModelVerifyError(
                f"{pinned.file} does not match models.lock ({problem}); the file was removed",
                hint="run `qvl-label models pull` again; if it repeats, the mirror or the lock is wrong",
            )
        self.ledger.record(path, pinned)

    def pull(self, preset: Preset) -> dict[str, Path]:
        """Download (resuming partial files) at the pinned revision, then verify."""
        paths: dict[str, Path] = {}
        for role, pinned in preset.files():
            cached = self._cached(preset, pinned)
            if cached is None:
                if self.offline:
                    raise self._missing(preset, pinned)
                self._log(
                    f"downloading {preset.repo}/{pinned.file} @ {preset.revision[:12]} ({pinned.size / 1e9:.2f} GB)"
                )
                _check_reachable(preset)
                try:
                    with _quiet_hub_retries():
                        found = hf_hub_download(
                            repo_id=preset.repo,
                            filename=pinned.file,
                            revision=preset.revision,
                            cache_dir=self.hf_cache_dir,
                        )
                except Exception as exc:  # the hub client raises many unrelated types
                    raise ModelDownloadError(
                        f"cannot download {pinned.file} from {preset.repo}: {_one_line(exc)}",
                        hint=f"check the network, then run `qvl-label models pull {preset.name}` (it resumes)",
                    ) from exc
                cached = Path(str(found))
            self.verify(cached, pinned)
            paths[role] = cached
        return paths

    def resolve(self, preset: Preset, allow_download: bool) -> dict[str, Path]:
        """Paths of a verified preset; downloads it first when allowed and missing."""
        states = self.state(preset)
        if all(s.path is not None for s in states):
            return self.pull(preset)  # verifies, cheaply when already recorded
        missing = next(s for s in states if s.path is None)
        if not allow_download or self.offline:
            raise self._missing(preset, missing.pinned)
        self._log(
            f"model preset {preset.name} is not downloaded yet; fetching it now (one time): {describe_files(preset)}"
        )
        return self.pull(preset)

    def _missing(self, preset: Preset, pinned: PinnedFile) -> ModelMissingError:
        why = " and downloads are off (--offline or HF_HUB_OFFLINE=1)" if self.offline else ""
        return ModelMissingError(
            f"model preset {preset.name} is not downloaded ({pinned.file} missing){why}; "
            f"it is {describe_files(preset)}",
            hint=f"download it with `qvl-label models pull {preset.name}` where there is a network; {OFFLINE_WAY}",
        )

    @staticmethod
    def model_ref(preset: Preset) -> ModelRef:
        return ModelRef(
            preset=preset.name,
            repo=preset.repo,
            revision=preset.revision,
            model_file=preset.model.file,
            mmproj_file=preset.mmproj.file,
        )


OFFLINE_WAY = (
    "offline, copy both files from a machine that has them and pass --model MODEL.gguf --mmproj MMPROJ.gguf "
    "(`qvl-label doctor` checks this install without any model)"
)


def describe_files(preset: Preset) -> str:
    """Both files of a preset and their total size, as the messages about a missing model name them."""
    files = [pinned for _role, pinned in preset.files()]
    named = " + ".join(f"{pinned.file} ({pinned.size / 1e9:.2f} GB)" for pinned in files)
    return f"{named} = {sum(pinned.size for pinned in files) / 1e9:.2f} GB"


def _remove_cached(path: Path) -> None:
    """Remove a cache entry: the blob behind a snapshot symlink, then the link itself."""
    try:
        target = path.resolve()
        if target != path and target.exists():
            target.unlink()
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _check_reachable(preset: Preset) -> None:
    """Fail in one line, at once, when the hub's host name does not resolve (no network).

    Without this the hub client retries for about 24 s and logs each retry.
    """
    host = urlparse(hf_constants.ENDPOINT).hostname or "huggingface.co"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise ModelDownloadError(
            f"cannot reach {host} to download {preset.name} ({describe_files(preset)}): {exc.strerror or exc}",
            hint=f"connect to the network, then run `qvl-label models pull {preset.name}` (it resumes); {OFFLINE_WAY}",
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def _quiet_hub_retries() -> Iterator[None]:
    """The hub client logs every retry as a warning; the one-line error at the end says enough."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
