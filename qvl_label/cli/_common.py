"""What several commands resolve the same way: the state folder, the model store, the label cache."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..engine.models import ModelStore, load_lock
from ..errors import OutputError, PipeClosed
from ..pipeline.batch import open_output
from ..store.cache import LabelCache
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
    """JSON lines to a file (replaced) or to stdout ('-'), e.g. gold made by `gold from-feed` or `import-review`."""
    stream, owned = open_output(target, append=False)
    try:
        for entry in entries:
            stream.write(orjson.dumps(entry) + b"\n")
    except BrokenPipeError:
        raise PipeClosed() from None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if owned:
            stream.close()
