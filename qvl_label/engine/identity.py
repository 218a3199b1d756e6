"""Identity of a local model file by its content: GGUF header and metadata plus sampled tensor bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# The GGUF header, its metadata (architecture, tokenizer, quantisation) and the tensor table
# sit at the start of the file; 16 MiB covers them for the Qwen3-VL files (their token list
# is the largest part). 64 blocks of 64 KiB spread over the rest sample the tensor data, so
# two fine-tunes quantised alike, with equal names and sizes, still differ. About 20 MiB
# read per file, whatever its size.
HEAD_BYTES = 16 * 1024 * 1024
SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 64 * 1024

_CACHE: dict[tuple[str, int, int, int], str] = {}


def content_digest(path: Path) -> str:
    """sha256 over the size, the first 16 MiB and 64 evenly spaced 64 KiB blocks of the file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256(str(stat.st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(HEAD_BYTES))
        rest = stat.st_size - HEAD_BYTES
        if rest > 0:
            step = max(SAMPLE_BYTES, rest // SAMPLE_BLOCKS)
            for offset in range(HEAD_BYTES, stat.st_size, step):
                handle.seek(offset, os.SEEK_SET)
                digest.update(handle.read(SAMPLE_BYTES))
    _CACHE[key] = digest.hexdigest()
    return _CACHE[key]
