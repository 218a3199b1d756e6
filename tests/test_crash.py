"""A real `batch` killed with SIGKILL, then cut short by a full disk, then re-run: one record per image, none lost."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from qvl_label import tinymodel

from .conftest import PRODUCTS

COUNT = 16
# Generous: a busy CI machine may be 20x slower than a quiet one; each wait ends at its event.
EVENT_LIMIT_S = 900


def _batch(
    folder: Path, out: Path, model: tinymodel.GeneratedModel, file_size_limit: int | None = None
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "qvl_label", "batch", str(folder), "-o", str(out), "--lang", "en",
        "--model", str(model.model), "--mmproj", str(model.mmproj), "--image-max-tokens", "64", "--max-tokens", "12000",
        "--parallel", "2", "--no-cache",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def limit_file_size() -> None:
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write, not a kill, past the limit
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, preexec_fn=limit_file_size
    )


def _lines(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


@pytest.mark.slow
def test_sigkill_then_resume_loses_and_duplicates_nothing(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted(PRODUCTS.iterdir())
    for i in range(COUNT):  # distinct bytes: identical files would be answered without the model
        source = sources[i % len(sources)]
        (folder / f"p{i:02d}{source.suffix}").write_bytes(source.read_bytes() + bytes([i]))
    out = tmp_path / "out.jsonl"

    for kill_after in (2, 5):  # kill once two records exist, then again a few records later
        proc = _batch(folder, out, tiny_model)
        deadline = time.monotonic() + EVENT_LIMIT_S  # ends at the event: kill_after records written
        while _lines(out) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline, f"no {kill_after} records in {EVENT_LIMIT_S} s"
            time.sleep(0.02)
        assert proc.poll() is None, "the run must still be going when it is killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert kill_after <= _lines(out) < COUNT
    # The worst case as well: the disk fills in the middle of a record. A file-size limit a few
    # hundred bytes past the end makes the real program's next write() a short one. (Records of
    # other photos first make the output larger than the run's temporary label cache, which the
    # same limit applies to.)
    first = orjson.loads(out.read_bytes().splitlines()[0])
    with out.open("ab") as handle:
        for i in range(400):
            handle.write(orjson.dumps({**first, "path": f"elsewhere/{i}.jpg"}) + b"\n")
    size = out.stat().st_size
    limited = _batch(folder, out, tiny_model, file_size_limit=size + 300)
    _, stderr = limited.communicate(timeout=EVENT_LIMIT_S)
    assert limited.returncode == 5 and b"cannot write" in stderr, stderr  # the output error, no traceback
    assert out.stat().st_size == size + 300 and not out.read_bytes().endswith(b"\n")  # a real torn line

    final = _batch(folder, out, tiny_model)
    _, stderr = final.communicate(timeout=EVENT_LIMIT_S)
    assert b"repaired a torn last line" in stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]  # every line parses
    ok = [r["path"] for r in records if r["status"] == "ok" and not r["path"].startswith("elsewhere/")]
    assert sorted(ok) == sorted(str(p) for p in folder.iterdir())
    assert len(ok) == len(set(ok)) == COUNT
    assert final.returncode in (0, 1)
