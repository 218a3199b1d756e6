"""What several commands resolve the same way: the state folder, the model store, the label cache."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..engine.models import ModelStore, load_lock
from ..errors import OutputError, PipeClosed, UsageError, stdout_binary
from ..store.cache import MAX_NEAR_DUP_DISTANCE, LabelCache
from ..store.outputs import record_paths
from ..store.safe_files import check_output, refuse_named_file, replaced_atomically
from ._errors import err


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def state_dir() -> Path:
    """Where qvl-label keeps its own state (verification ledger); QVL_LABEL_HOME overrides."""
    if os.environ.get("QVL_LABEL_HOME"):
        return Path(os.environ["QVL_LABEL_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qvl-label"


def model_store(offline: bool) -> ModelStore:
    hf_cache = os.environ.get("QVL_LABEL_HF_CACHE")
    return ModelStore(
        load_lock(),
        state_dir(),
        hf_cache_dir=Path(hf_cache) if hf_cache else None,
        offline=offline or _env_flag("HF_HUB_OFFLINE"),
        log=lambda msg: err.print(f"[dim]{msg}[/dim]"),
    )


@dataclass(frozen=True)
class PresetOnNode:
    """Resolves a preset where it is called: a Ray actor's node, in that node's own cache (pulled once per node)."""

    preset: str | None
    offline: bool

    def __call__(self) -> tuple[Path, Path]:
        store = model_store(self.offline)
        paths = store.resolve(store.lock.get(self.preset), allow_download=True)
        return paths["model"], paths["mmproj"]


def default_cache_path() -> Path:
    return state_dir() / "cache.sqlite"


def sqlite_files(database: Path | None) -> list[Path]:
    """The cache database and the companions SQLite truncates and deletes as it likes: never an output."""
    if database is None:
        return []
    return [database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm", "-journal"))]


def near_dup_setting(near_dup: bool, distance: int) -> int | None:
    """--near-dup and --near-dup-distance as the Labeler takes them (None: off); a UsageError out of range."""
    if not 0 <= distance <= MAX_NEAR_DUP_DISTANCE:
        raise UsageError(
            f"--near-dup-distance must be between 0 and {MAX_NEAR_DUP_DISTANCE} bits: beyond that, photos "
            "of different products start to pass (scripts/measure_near_dup.py)"
        )
    return distance if near_dup else None


def open_cache(path: Path | None, disabled: bool) -> LabelCache:
    if disabled:
        return LabelCache(None)
    target = path or default_cache_path()
    try:
        return LabelCache(target)
    except (OSError, sqlite3.Error) as exc:
        raise OutputError(
            f"cannot open the label cache {target}: {exc}",
            hint=f"`qvl-label cache clear --cache {target}` starts it afresh; or use --cache PATH or --no-cache",
        ) from exc


def write_jsonl(target: str, entries: list[dict[str, Any]]) -> None:
    """JSON lines to a file (replaced atomically; checked by the caller) or to stdout ('-'),
    e.g. gold made by `gold from-feed` or `import-review`."""
    try:
        with contextlib.nullcontext(stdout_binary()) if target == "-" else replaced_atomically(target, "") as stream:
            for entry in entries:
                stream.write(orjson.dumps(entry) + b"\n")
    except BrokenPipeError:
        raise PipeClosed() from None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc


def check_output_file(
    target: Path | str,
    *,
    what: str,
    inputs: Iterable[Path | str | None],
    own: Callable[[bytes], bool],
    force: bool,
    records: list[Path] | None = None,
) -> None:
    """The writers' one rule (store.safe_files): not an input, not a link, not a stranger's file without
    --force; with --force, still never a photo the input records name."""
    check_output(target, what=what, inputs=inputs, own=own, force=force)
    if force and records:
        refuse_named_file(target, record_paths(records), what)
