"""More of the docs' example sessions (the label cache, a missing model, doctor, learn), run through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from doc_engines import CatalogueEngine, engine_in_place
from doc_examples import FIXTURES, RED_TEE, checked, model_args, shown

# Relative state and Hugging Face cache folders: the paths the CLI prints are the same on every machine.
FRESH_INSTALL = {"QVL_LABEL_HOME": "state", "QVL_LABEL_HF_CACHE": "hf-cache"}


@contextmanager
def in_scratch_folder() -> Iterator[Path]:
    """A temporary folder, made the current one for the CLI's relative paths, with stand-in model files."""
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for name in ("model.gguf", "mmproj.gguf"):
            (base / name).write_bytes(b"GGUF stand-in: the scripted engine never reads it")
        os.chdir(base)
        try:
            yield base
        finally:
            os.chdir(cwd)


def block(lines: list[str]) -> str:
    return "```text\n" + "\n".join(line.rstrip() for line in lines) + "\n```"


def cache_session() -> str:
    """A batch run, the same photos into another output (every label from the cache), `cache stats`, `cache clear`.

    The engine is the catalogue engine (each photo its own answer); the cache, the fingerprint and the reuse
    are the real code's.
    """
    with in_scratch_folder() as base:
        shutil.copytree(FIXTURES / "products", base / "products")
        env = {"QVL_LABEL_HOME": "state"}
        lines = ["$ export QVL_LABEL_HOME=state"]
        for out in ("out.jsonl", "again.jsonl"):
            args = ["batch", "products", "-o", out, "--lang", "en", "--model", str(base / "model.gguf"),
                    "--mmproj", str(base / "mmproj.gguf")]  # fmt: skip
            with engine_in_place(CatalogueEngine):
                result = checked(args, env=env)
            lines += [f"$ qvl-label {model_args(args)}", *result.stderr.rstrip().splitlines()]
        jq = "{path, duplicate_of}"
        lines.append(f"$ jq -c '{jq}' again.jsonl | head -2")
        for line in Path("again.jsonl").read_text().splitlines()[:2]:
            record = json.loads(line)
            picked = {"path": record["path"], "duplicate_of": record["duplicate_of"]}
            lines.append(json.dumps(picked, ensure_ascii=False, separators=(",", ":")))
        for args in (["cache", "stats"], ["cache", "clear"]):
            result = checked(args, env=env)
            lines += [f"$ qvl-label {shown(args)}", *result.stdout.rstrip().splitlines()]
            lines += result.stderr.rstrip().splitlines()
    return block(lines)


def offline_error() -> str:
    """`describe` with no model in a fresh state folder: downloads off, then downloads on without a network."""
    import socket

    lines: list[str] = []
    with in_scratch_folder() as base:
        shutil.copy(RED_TEE, base / "photo.jpg")
        args = ["describe", "photo.jpg"]
        lines.append(f"$ export {shown(f'{name}={value}' for name, value in FRESH_INSTALL.items())}")
        result = checked(args, expected_exit=3, env=FRESH_INSTALL | {"HF_HUB_OFFLINE": "1"})
        lines += [f"$ HF_HUB_OFFLINE=1 qvl-label {shown(args)}", *result.stderr.rstrip().splitlines()]
        lines.append(f"$ echo $?\n{result.exit_code}")

        def no_network(*_args: object, **_kwargs: object) -> object:  # what a machine without DNS answers
            raise OSError(-3, "Temporary failure in name resolution")

        resolve, socket.getaddrinfo = socket.getaddrinfo, no_network  # type: ignore[assignment]
        try:
            result = checked(args, expected_exit=3, env=FRESH_INSTALL | {"HF_HUB_OFFLINE": ""})
        finally:
            socket.getaddrinfo = resolve
        if "cannot reach" not in result.stderr:  # e.g. huggingface_hub imported with HF_HUB_OFFLINE=1 set
            raise SystemExit(f"describe without a network did not try the network: {result.stderr}")
        lines += [f"$ qvl-label {shown(args)}        # no network", *result.stderr.rstrip().splitlines()]
    return block(lines)


def doctor_run() -> str:
    """`qvl-label doctor` on this install, with a fresh state folder and a terminal wide enough for one line each.

    One thread: on a busy 2-core machine (CI's) llama.cpp's two threads wait on each other and the smoke
    test took 18 s, against 1.2 s on one thread (2026-12-03, load average 7).
    """
    args = ["doctor", "--threads", "1"]
    with in_scratch_folder():
        result = checked(args, env=FRESH_INSTALL | {"COLUMNS": "400"})
    fresh = shown(f"{name}={value}" for name, value in FRESH_INSTALL.items())
    return block([f"$ {fresh} qvl-label {shown(args)}", *result.stdout.rstrip().splitlines()])


def import_review_run() -> str:
    """`import-review` on the real Label Studio export the round trip made (tests/fixtures/labelstudio)."""
    with in_scratch_folder() as base:
        shutil.copy(FIXTURES / "labelstudio" / "export.json", base / "export.json")
        args = ["import-review", "export.json", "-o", "gold.jsonl"]
        result = checked(args)
        lines = [f"$ qvl-label {shown(args)}", *result.stderr.rstrip().splitlines()]
        jq = "{path, category: .label.category.path, colors: .label.attributes.colors}"
        lines.append(f"$ jq -c '{jq}' gold.jsonl")
        for line in Path("gold.jsonl").read_text().splitlines():
            label = json.loads(line)["label"]
            picked = {"path": json.loads(line)["path"], "category": label.get("category", {}).get("path"),
                      "colors": label.get("attributes", {}).get("colors")}  # fmt: skip
            lines.append(json.dumps(picked, ensure_ascii=False, separators=(",", ":")))
    return block(lines)
