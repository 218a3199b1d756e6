"""The output record: one JSON object per image, built from the image, the model's answer and the run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

from ..engine.protocol import Generation
from ..labeling.schema import SCHEMA_VERSION, validate
from ..settings import ModelRef
from .images import LoadedImage

OK = "ok"
# Statuses that mean the model ran but its answer is not a usable label.
INVALID_OUTPUT = "invalid_output"
UNPARSEABLE_OUTPUT = "unparseable_output"
TRUNCATED_OUTPUT = "truncated_output"
ENGINE_ERROR = "engine_error"


class AnswerShaper(Protocol):
    """What turns a validated answer into the record's label (a LabelShaper, or one wrapping it)."""

    def shape(self, answer: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class RunContext:
    """What every record of one run shares."""

    model: ModelRef | None
    prompt_version: str
    languages: tuple[str, ...]
    schema: dict[str, Any] | None
    fingerprint: str = ""
    shaper: AnswerShaper | None = None


def display_path(path: str) -> str:
    """The path as given, made JSON-safe and reversible (see `path_from_display`).

    Bytes that are not UTF-8 (held as surrogates by Python's file-system decoding) become
    `\\xNN`, and a backslash becomes `\\\\`, so a name that really contains the four
    characters `\\xff` and one with the byte 0xFF get different paths.
    """
    if "\\" not in path and not any("\udc80" <= ch <= "\udcff" for ch in path):
        return path
    out = []
    for ch in path:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def path_from_display(display: str) -> str:
    """The inverse of display_path: the file-system path string (undecodable bytes as surrogates)."""
    out = []
    i = 0
    while i < len(display):
        ch = display[i]
        if ch == "\\" and display[i + 1 : i + 2] == "\\":
            out.append("\\")
            i += 2
        elif ch == "\\" and display[i + 1 : i + 2] == "x" and i + 4 <= len(display):
            out.append(chr(0xDC00 + int(display[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _base(path: str, run: RunContext) -> dict[str, Any]:
    return {
        "path": display_path(path),
        "sha256": None,
        "file": None,
        "status": None,
        "error": None,
        "image": None,
        "model": asdict(run.model) if run.model else None,
        "prompt_version": run.prompt_version,
        "languages": list(run.languages),
        "label": None,
        "answer": None,
        "raw_output": None,
        "tokens": None,
        "timings_ms": None,
        "duplicate_of": None,
        "schema_version": SCHEMA_VERSION,
        "run": run.fingerprint,
    }


def file_block(identity: tuple[int, int] | None) -> dict[str, int] | None:
    """The file as it was read: resume treats a record as done only while the file still matches."""
    return None if identity is None else {"size": identity[0], "mtime_ns": identity[1]}


def error_record(
    path: str,
    run: RunContext,
    status: str,
    error: str,
    sha256: str | None = None,
    identity: tuple[int, int] | None = None,
) -> dict[str, Any]:
    record = _base(path, run)
    record.update(status=status, error=error, sha256=sha256, file=file_block(identity))
    return record


_CONTROL = dict.fromkeys(range(0x20), " ")


def _strip_controls(value: Any) -> Any:
    if isinstance(value, str):
        return value.translate(_CONTROL)
    if isinstance(value, list):
        return [_strip_controls(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_controls(v) for k, v in value.items()}
    return value


def parse_answer(text: str) -> Any:
    """Strict JSON first; raw control characters inside strings are tolerated and blanked."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return _strip_controls(json.loads(text, strict=False))
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from exc


def interpret(
    generation: Generation, schema: dict[str, Any] | None, shaper: AnswerShaper | None = None
) -> tuple[str, str | None, Any]:
    """Decide the status of a generation: (status, error, label-or-answer)."""
    if generation.error is not None:
        return ENGINE_ERROR, generation.error, None
    if generation.finish_reason == "length":  # a cut-off answer is never passed off as complete
        return TRUNCATED_OUTPUT, f"answer cut at {generation.tokens.completion} tokens (max_tokens)", None
    if schema is None:
        return OK, None, generation.text.strip()
    try:
        answer = parse_answer(generation.text)
    except ValueError as exc:
        return UNPARSEABLE_OUTPUT, f"answer is not JSON: {exc}", None
    problems = validate(answer, schema)
    if problems:
        return INVALID_OUTPUT, "; ".join(problems[:5]), None
    if shaper is None:
        return OK, None, answer
    return OK, None, shaper.shape(answer)


def image_block(image: LoadedImage) -> dict[str, Any]:
    return {
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "mode": image.mode,
        "model_input": [image.prepared.width, image.prepared.height],
        "notes": image.notes,
    }


def reused_record(
    path: str,
    run: RunContext,
    image: LoadedImage,
    source_path: str,
    source: dict[str, Any],
    match: str = "identical",
    distance: int = 0,
) -> dict[str, Any]:
    """A duplicate's record: the original's label and status, this file's own identity, and where it came from."""
    return {**source, **duplicate_overlay(path, run, image, source_path, match, distance)}


def duplicate_overlay(
    path: str, run: RunContext, image: LoadedImage, source_path: str, match: str = "identical", distance: int = 0
) -> dict[str, Any]:
    """What a duplicate's record holds of its own, laid over the original's record once that exists."""
    return {
        "path": display_path(path),
        "sha256": image.sha256,
        "file": file_block(image.identity),
        "image": image_block(image),
        "tokens": None,
        "timings_ms": None,
        "run": run.fingerprint,
        "duplicate_of": {"path": source_path, "match": match, "distance": distance},
    }


def model_record(path: str, run: RunContext, image: LoadedImage, generation: Generation) -> dict[str, Any]:
    record = _base(path, run)
    status, error, value = interpret(generation, run.schema, run.shaper)
    record.update(status=status, error=error, sha256=image.sha256, file=file_block(image.identity))
    record["image"] = image_block(image)
    if status == OK:
        record["label" if run.schema is not None else "answer"] = value
    elif generation.error is None:
        record["raw_output"] = generation.text
    record["tokens"] = asdict(generation.tokens)
    record["timings_ms"] = {k: round(v, 1) for k, v in asdict(generation.timings).items()}
    return record


def dumps(record: dict[str, Any], pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(record, option=option)
