"""Reading finished outputs: pick one record per image across files, merge shards, flatten to CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import OutputError, UsageError
from ..labeling.schema import ATTRIBUTE_FIELDS
from ..pipeline.records import OK

LIST_SEPARATOR = "; "


@dataclass
class Selection:
    """Where the chosen record of each path lives, so records are read twice rather than held in memory."""

    chosen: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # path -> (rank, file, offset, length)
    languages: list[str] = field(default_factory=list)
    torn_lines: int = 0
    records: int = 0


def _rank(record: dict[str, Any]) -> int:
    return 1 if record.get("status") == OK else 0


def select(files: list[Path]) -> Selection:
    """One record per path: an `ok` record beats a failure, and a later record beats an earlier one."""
    selection = Selection()
    for file_index, path in enumerate(files):
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with handle:
            offset = 0
            for line in handle:
                length = len(line)
                try:
                    record = orjson.loads(line)
                    key = record["path"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    if line.strip():
                        selection.torn_lines += 1
                    offset += length
                    continue
                selection.records += 1
                rank = _rank(record)
                previous = selection.chosen.get(key)
                if previous is None or rank >= previous[0]:
                    selection.chosen[key] = (rank, file_index, offset, length)
                for lang in record.get("languages") or []:
                    if lang not in selection.languages:
                        selection.languages.append(lang)
                offset += length
    return selection


def chosen_records(files: list[Path], selection: Selection) -> Iterator[dict[str, Any]]:
    """The selected records, sorted by path."""
    handles = [path.open("rb") for path in files]
    try:
        for key in sorted(selection.chosen):
            _, file_index, offset, length = selection.chosen[key]
            handle = handles[file_index]
            handle.seek(offset)
            yield orjson.loads(handle.read(length))
    finally:
        for handle in handles:
            handle.close()


def merge(files: list[Path], output: IO[bytes]) -> Selection:
    selection = select(files)
    try:
        for record in chosen_records(files, selection):
            output.write(orjson.dumps(record) + b"\n")
    except OSError as exc:
        raise OutputError(f"cannot write the merged output: {exc.strerror or exc}") from exc
    return selection


def csv_columns(languages: list[str]) -> list[str]:
    columns = ["path", "status", "error", "sha256", "duplicate_of", "category_id", "category"]
    columns += [f"category_{lang}" for lang in languages if lang != "en"]
    columns += ["brand", "visible_text"]
    for name in ATTRIBUTE_FIELDS:
        columns += [name, f"{name}_raw"]
    columns += ["details"]
    for lang in languages:
        columns += [f"title_{lang}", f"description_{lang}", f"selling_points_{lang}", f"tags_{lang}"]
    columns += ["compliance_flags", "answer"]
    return columns


def _joined(values: list[str] | None, sep: str = LIST_SEPARATOR) -> str:
    return sep.join(v for v in values or [] if v)


def csv_row(record: dict[str, Any], languages: list[str]) -> dict[str, str]:
    label = record.get("label") or {}
    category = label.get("category") or {}
    duplicate = record.get("duplicate_of") or {}
    row = {
        "path": record["path"],
        "status": record.get("status") or "",
        "error": record.get("error") or "",
        "sha256": record.get("sha256") or "",
        "duplicate_of": duplicate.get("path", ""),
        "category_id": str(category.get("id", "")),
        "category": _joined(category.get("path"), " > "),
        "brand": label.get("brand") or "",
        "visible_text": _joined(label.get("visible_text"), " | "),
        "answer": record.get("answer") or "",
    }
    for lang in languages:
        if lang != "en":
            row[f"category_{lang}"] = _joined((category.get("names") or {}).get(lang), " > ")
    attributes = label.get("attributes") or {}
    for name in ATTRIBUTE_FIELDS:
        values = attributes.get(name) or []
        row[name] = _joined([v["value"] for v in values if v.get("value")])
        row[f"{name}_raw"] = _joined([v["raw"] for v in values])
    details = label.get("details") or {}
    row["details"] = _joined(
        [f"{k}={_joined(v) if isinstance(v, list) else v}" for k, v in (details.get("fields") or {}).items()]
    )
    copy = label.get("copy") or {}
    for lang in languages:
        text = copy.get(lang) or {}
        row[f"title_{lang}"] = text.get("title", "")
        row[f"description_{lang}"] = text.get("description", "")
        row[f"selling_points_{lang}"] = _joined(text.get("selling_points"))
        row[f"tags_{lang}"] = _joined(text.get("tags"))
    flags = (label.get("compliance") or {}).get("flags") or []
    row["compliance_flags"] = _joined([f"{f['field']}: {f['text']} ({f['rule']}, {f['action']})" for f in flags])
    return row


# Spreadsheet programs run a cell that starts with one of these as a formula (OWASP "CSV
# injection"); model text can start with any of them, so such cells get a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def export_csv(files: list[Path], target: Path) -> Selection:
    """UTF-8 with a BOM so Excel opens Chinese correctly; one column per attribute and per language."""
    selection = select(files)
    try:
        with target.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=csv_columns(selection.languages))
            writer.writeheader()
            for record in chosen_records(files, selection):
                row = csv_row(record, selection.languages)
                writer.writerow({column: neutralise_formula(value) for column, value in row.items()})
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return selection
