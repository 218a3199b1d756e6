"""Reading what other programs and people wrote: record fields of any JSON type, records checked field by field
(file:line:field in the error), CSV rows and text lines that may be malformed."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import UsageError

# A cell of a shop's feed or gold may hold a long description; the csv module refuses fields over 128 KiB
# by default. Past this bound a "cell" is a broken quote swallowing the rest of the file.
MAX_CSV_FIELD = 16 * 1024 * 1024


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: Any) -> str:
    """A cell from any JSON value a record may hold where text belongs."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


# -- records checked field by field ---------------------------------------------------------------------
# Every field the evaluation and Label Studio readers use, with the JSON type they rely on. A record that
# breaks one is refused with file:line:field, so the code after the check never meets a surprise type.

Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _entries(value: Any) -> bool:
    """An attribute's list: {"raw": wording, "value": vocabulary id or null} objects."""
    return isinstance(value, list) and all(
        isinstance(e, dict) and all(e.get(k) is None or isinstance(e[k], str) for k in ("raw", "value")) for e in value
    )


def _text_or_texts(value: Any) -> bool:
    return isinstance(value, str) or _texts(value)


def _taxonomy_paths(value: Any) -> bool:
    return isinstance(value, list) and all(_texts(path) for path in value)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _list(value: Any) -> bool:
    return isinstance(value, list)


# (dotted field, check, what it must be); "*" stands for every key of an object or item of a list.
# null is always allowed: a field left out and a null field both mean "not given".
RECORD_FIELDS: tuple[tuple[str, Check, str], ...] = (
    ("path", _text, "a string"),
    ("status", _text, "a string"),
    ("sha256", _text, "a string"),
    ("timings_ms", _object, "an object"),
    ("timings_ms.total_ms", _number, "a number"),
    ("label", _object, "an object"),
    ("label.category", _object, "an object"),
    ("label.category.id", _integer, "an integer"),
    ("label.category.path", _texts, "a list of strings"),
    ("label.category.raw", _texts, "a list of strings"),
    ("label.category.match", _number, "a number"),
    ("label.attributes", _object, "an object"),
    ("label.attributes.*", _entries, 'a list of {"raw": string, "value": string or null} objects'),
    ("label.brand", _text, "a string"),
    ("label.visible_text", _texts, "a list of strings"),
    ("label.copy", _object, "an object"),
    ("label.copy.*", _object, "an object"),
    ("label.copy.*.title", _text, "a string"),
    ("label.copy.*.description", _text, "a string"),
    ("label.compliance", _object, "an object"),
    ("label.compliance.flags", _list, "a list"),
)


def _result_fields(prefix: str) -> tuple[tuple[str, Check, str], ...]:
    return (
        (prefix, _list, "a list"),
        (f"{prefix}.*", _object, "an object"),
        (f"{prefix}.*.from_name", _text, "a string"),
        (f"{prefix}.*.value", _object, "an object"),
        (f"{prefix}.*.value.taxonomy", _taxonomy_paths, "a list of lists of strings"),
        (f"{prefix}.*.value.choices", _texts, "a list of strings"),
        (f"{prefix}.*.value.text", _text_or_texts, "a string or a list of strings"),
    )


# A task of Label Studio's JSON export: the fields import-review reads.
REVIEW_TASK_FIELDS: tuple[tuple[str, Check, str], ...] = (
    ("data", _object, "an object"),
    ("data.path", _text, "a string"),
    ("data.sha256", _text, "a string"),
    ("annotations", _list, "a list"),
    ("annotations.*", _object, "an object"),
    ("annotations.*.id", _integer, "an integer"),
    ("annotations.*.updated_at", _text, "a string"),
    ("annotations.*.created_at", _text, "a string"),
    *_result_fields("annotations.*.result"),
    ("annotations.*.prediction", _object, "an object"),
    *_result_fields("annotations.*.prediction.result"),
    ("predictions", _list, "a list"),
    *_result_fields("predictions.*.result"),
)


def _values_at(value: Any, parts: list[str], prefix: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield prefix, value
        return
    head, rest = parts[0], parts[1:]
    if isinstance(value, list) and head == "*":
        items: list[tuple[Any, Any]] = list(enumerate(value))
    elif isinstance(value, dict):
        items = list(value.items()) if head == "*" else [(head, value.get(head))]
    else:
        return  # the parent's own check reports it
    for key, item in items:
        if item is not None:
            yield from _values_at(item, rest, f"{prefix}.{key}" if prefix else str(key))


def check_fields(value: dict[str, Any], where: str, fields: tuple[tuple[str, Check, str], ...]) -> dict[str, Any]:
    """The object itself when every listed field has its type; else a usage error naming where and the field."""
    for dotted, check, wanted in fields:
        for name, found in _values_at(value, dotted.split("."), ""):
            if not check(found):
                raise UsageError(f"{where}: field {name} must be {wanted}, not {_shown(found)}")
    return value


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a batch output, streamed and checked; lines that are not records (torn, foreign) are
    skipped, as merge skips them; a record with a field of the wrong type is a usage error (file:line: field)."""
    try:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict) and isinstance(value.get("path"), str) and "status" in value:
                    yield check_fields(value, f"{path}:{number}", RECORD_FIELDS)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def check_records(paths: list[Path]) -> None:
    """Every record of these outputs read once, so a wrong field stops a command before it writes anything."""
    for path in paths:
        for _ in read_records(path):
            pass


# -- CSV and text lines -----------------------------------------------------------------------------------


def csv_rows(text: str, source: str, delimiter: str = ",") -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and (line, row) pairs of a CSV/TSV text; a row with more cells than the header, a cell past
    MAX_CSV_FIELD or a broken quote is a usage error naming the line, not a crash."""
    csv.field_size_limit(MAX_CSV_FIELD)  # the module's own default (128 KiB) is too small for long copy
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)  # quoted newlines stay in the cell
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise UsageError(f"{source}:{reader.line_num}: not valid CSV: {exc}") from None

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                raise UsageError(f"{source}:{reader.line_num}: not valid CSV: {exc}") from None
            if cells is None:
                return
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                raise UsageError(
                    f"{source}:{reader.line_num}: {len(cells)} cells in a row, the header names {len(header)} "
                    "(a separator inside a cell needs quotes)"
                )
            yield reader.line_num, dict(zip(header, [*cells, *[""] * (len(header) - len(cells))], strict=True))

    return header, rows()


def decoded_lines(stream: IO[bytes], source: str) -> Iterator[str]:
    """Lines of a byte stream (stdin) as text, without their line ends; a line that is not UTF-8 is a usage
    error naming the line and the byte, so nothing is guessed."""
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start : exc.start + 1].hex()
            raise UsageError(f"{source} line {number} is not UTF-8 (byte 0x{bad} at byte {exc.start + 1})") from None
        yield text.rstrip("\r\n")
