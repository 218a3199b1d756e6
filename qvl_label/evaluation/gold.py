"""Gold labels a shop already has (JSONL in the record's shape, or CSV), read into one form and matched to records."""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import UsageError
from ..labeling.config import LabelConfig
from ..labeling.vocabularies import VOCABULARY_ATTRIBUTES, fold

# CSV columns (README, "eval"): several values in one cell are separated by ';'.
CSV_KEYS = ("path", "sha256", "category_id", "category", "brand", "visible_text")
LIST_SEPARATOR = ";"
PATH_SEPARATOR = ">"


@dataclass
class GoldLabel:
    """What a reviewer or a shop says one photo is; None / absent means "not given", never "empty"."""

    path: str | None = None
    sha256: str | None = None
    category_id: int | None = None
    attributes: dict[str, set[str]] = field(default_factory=dict)  # vocabulary value ids (or folded wording)
    brand: str | None = None
    visible_text: list[str] | None = None
    titles: dict[str, str] = field(default_factory=dict)


def load_gold(path: Path, config: LabelConfig) -> list[GoldLabel]:
    """Gold from a .jsonl/.json file (record-shaped lines) or a .csv/.tsv file; a bad file is a usage error."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the gold file {path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        text = raw.decode("utf-8-sig", errors="replace")
        rows = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        entries = [_from_row(row, config, number) for number, row in enumerate(rows, start=2)]
    else:
        entries = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UsageError(f"{path}:{number}: not a JSON line") from None
            if not isinstance(value, dict):
                raise UsageError(f"{path}:{number}: a gold line is a JSON object")
            entries.append(_from_record(value, config, f"{path}:{number}"))
    keyed = [e for e in entries if e.path or e.sha256]
    if len(keyed) < len(entries):
        raise UsageError(f"{path}: every gold entry needs a path or a sha256 to match records by")
    return entries


def category_id(config: LabelConfig, value: Any, where: str) -> int | None:
    taxonomy = config.taxonomy
    if value is None or value == "":
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if number not in taxonomy.nodes:
            raise UsageError(f"{where}: category id {number} is not in the taxonomy")
        return number
    levels = value if isinstance(value, list) else str(value).split(PATH_SEPARATOR)
    levels = [str(level).strip() for level in levels if str(level).strip()]
    exact = taxonomy.by_path.get(tuple(levels))
    if exact is not None:
        return exact
    try:  # a shop's own wording of a path, in any language the names tables cover
        category, _ = taxonomy.map_path(levels)
    except (ValueError, LookupError, KeyError):
        raise UsageError(f"{where}: category {' > '.join(levels)!r} matches no taxonomy node") from None
    return category.id


def _values(config: LabelConfig, attribute: str, items: Any) -> set[str]:
    """Gold wording through the same vocabulary the labels go through; unmapped wording stays, folded."""
    vocabulary = config.vocabularies.get(attribute)
    out: set[str] = set()
    for item in items:
        text = item.get("value") or item.get("raw") if isinstance(item, dict) else item
        if not isinstance(text, str) or not text.strip():
            continue
        mapped = vocabulary.normalise_all(text) if vocabulary is not None else []
        out.update(mapped or [fold(text)])
    return out


def _from_record(value: dict[str, Any], config: LabelConfig, where: str) -> GoldLabel:
    label: dict[str, Any] = value["label"] if isinstance(value.get("label"), dict) else value
    gold = GoldLabel(path=_text(value.get("path")), sha256=_text(value.get("sha256")))
    category = label.get("category")
    if isinstance(category, dict):
        category = category.get("id") if category.get("id") is not None else category.get("path")
    gold.category_id = category_id(config, category, where)
    attributes = label["attributes"] if isinstance(label.get("attributes"), dict) else {}
    for attribute in VOCABULARY_ATTRIBUTES:
        if isinstance(attributes.get(attribute), list):
            gold.attributes[attribute] = _values(config, attribute, attributes[attribute])
    gold.brand = _text(label.get("brand"))
    if isinstance(label.get("visible_text"), list):
        gold.visible_text = [t for t in label["visible_text"] if isinstance(t, str)]
    copy = label["copy"] if isinstance(label.get("copy"), dict) else {}
    for lang, block in copy.items():
        if isinstance(block, dict) and _text(block.get("title")):
            gold.titles[lang] = block["title"]
    return gold


def _from_row(row: dict[str, str | None], config: LabelConfig, number: int) -> GoldLabel:
    cells = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
    gold = GoldLabel(path=cells.get("path") or None, sha256=cells.get("sha256") or None)
    where = f"row {number}"
    gold.category_id = category_id(config, cells.get("category_id") or cells.get("category"), where)
    for attribute in VOCABULARY_ATTRIBUTES:
        if cells.get(attribute):
            gold.attributes[attribute] = _values(config, attribute, cells[attribute].split(LIST_SEPARATOR))
    gold.brand = cells.get("brand") or None
    if cells.get("visible_text"):
        gold.visible_text = [t.strip() for t in cells["visible_text"].split(LIST_SEPARATOR) if t.strip()]
    for key, cell in cells.items():
        if key.startswith("title_") and cell:
            gold.titles[key.removeprefix("title_")] = cell
    return gold


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def normalise_text(text: str) -> str:
    """For exact matches of brands and visible text: width, case, spacing and punctuation do not count."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch if ch.isalnum() else " " for ch in folded)
    return " ".join(kept.split())


def tokens(text: str) -> list[str]:
    """Words; CJK characters one token each (no spaces to split Chinese on)."""
    out: list[str] = []
    for word in normalise_text(text).split():
        run = ""
        for ch in word:
            if "\u3400" <= ch <= "\u9fff" or "\u3040" <= ch <= "\u30ff" or "\uac00" <= ch <= "\ud7af":
                if run:
                    out.append(run)
                    run = ""
                out.append(ch)
            else:
                run += ch
        if run:
            out.append(run)
    return out


class GoldIndex:
    """Finds a record's gold: by path relative to --root (or as written), else by sha256."""

    def __init__(self, entries: list[GoldLabel], root: Path | None) -> None:
        self.root = root
        self.by_path = {self._key(e.path): e for e in entries if e.path}
        self.by_sha = {e.sha256: e for e in entries if e.sha256}

    def _key(self, path: str) -> str:
        if self.root is not None and os.path.isabs(path):
            path = os.path.relpath(path, self.root)
        return os.path.normpath(path)

    def find(self, record: dict[str, Any]) -> GoldLabel | None:
        path = record.get("path")
        if isinstance(path, str):
            hit = self.by_path.get(self._key(path))
            if hit is None and self.root is not None:
                hit = self.by_path.get(os.path.normpath(os.path.relpath(os.path.abspath(path), self.root)))
            if hit is not None:
                return hit
        sha = record.get("sha256")
        return self.by_sha.get(sha) if isinstance(sha, str) else None
