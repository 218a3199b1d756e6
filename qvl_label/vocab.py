"""Controlled vocabularies: map the model's wording ("酒红", "burgundy") onto stable value ids ("red")."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .datafiles import data_text, parse_toml

_SUFFIXES = ("颜色", "色调", "色系", "色", "系", " colour", " color", " tone", " shade", " coloured", " colored")
_CJK = re.compile(r"[\u3400-\u9fff]")
_SPACES = re.compile(r"\s+")
_JOINERS = re.compile(r"\s*(?:&|/|,|\+|\band\b|\bwith\b|和|与|配|拼)\s*")


def fold(text: str) -> str:
    """Case, width, hyphens and spacing folded; a trailing 色 / 'colour' removed."""
    folded = unicodedata.normalize("NFKC", text).lower().replace("-", " ").replace("_", " ").replace("'", "")
    folded = _SPACES.sub(" ", folded).strip()
    for suffix in _SUFFIXES:
        if folded.endswith(suffix) and len(folded) > len(suffix):
            folded = folded[: -len(suffix)].strip()
            break
    return folded


def _contains(text: str, synonym: str) -> bool:
    if _CJK.search(synonym):
        return synonym in text
    return re.search(rf"(?<![a-z0-9]){re.escape(synonym)}(?![a-z0-9])", text) is not None


@dataclass
class Vocabulary:
    """One attribute's values: id -> display names, and every folded synonym -> id."""

    name: str
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    lookup: dict[str, str] = field(default_factory=dict)
    modifiers: tuple[str, ...] = ()
    _by_length: list[tuple[str, str]] = field(default_factory=list)

    def add(self, value_id: str, names: dict[str, str], synonyms: list[str]) -> None:
        self.values.setdefault(value_id, {}).update(names)
        for word in [*names.values(), *synonyms, value_id.replace("_", " ")]:
            key = fold(word)
            if key:
                self.lookup[key] = value_id
        self._by_length = sorted(self.lookup.items(), key=lambda kv: -len(kv[0]))

    def _strip_modifiers(self, text: str) -> str:
        out = text
        for modifier in self.modifiers:
            if _CJK.search(modifier):
                if out.startswith(modifier) and len(out) > len(modifier):
                    out = out[len(modifier) :]
            else:
                out = re.sub(rf"(?<![a-z0-9]){re.escape(modifier)}(?![a-z0-9])", " ", out)
        return _SPACES.sub(" ", out).strip()

    def normalise(self, raw: str) -> str | None:
        """The value id for the wording, or None when nothing in the vocabulary means it."""
        text = fold(raw)
        if not text:
            return None
        if text in self.lookup:
            return self.lookup[text]
        stripped = fold(self._strip_modifiers(text))
        if stripped in self.lookup:
            return self.lookup[stripped]
        parts = [p for p in _JOINERS.split(text) if p]
        if len(parts) > 1 and "multicolour" in self.values:
            found = {self.normalise(p) for p in parts} - {None}
            if len(found) > 1:
                return "multicolour"
        # Chinese compounds name two colours without a separator: 黑白, 红蓝
        if _CJK.search(text) and "multicolour" in self.values and len(self._cjk_families(stripped or text)) > 1:
            return "multicolour"
        for synonym, value_id in self._by_length:  # longest first: "navy blue" before "navy"
            if len(synonym) > 1 and _contains(stripped or text, synonym):
                return value_id
        return None

    def _cjk_families(self, text: str) -> set[str]:
        """Values named in a CJK string, longest synonyms first, without overlaps."""
        remaining = text
        found: set[str] = set()
        for synonym, value_id in self._by_length:
            if _CJK.search(synonym) and synonym in remaining:
                found.add(value_id)
                remaining = remaining.replace(synonym, " ")
        return found


VOCABULARY_ATTRIBUTES = {
    "colors": "colors",
    "materials": "materials",
    "patterns": "patterns",
    "style": "style",
    "season": "season",
    "audience": "audience",
    "usage_scenes": "usage_scenes",
}


def build_vocabularies(*sources: dict[str, Any]) -> dict[str, Vocabulary]:
    """Vocabularies from parsed TOML tables; later sources add values and synonyms to earlier ones."""
    modifiers: list[str] = []
    vocabularies: dict[str, Vocabulary] = {}
    for source in sources:
        modifiers += [fold(m) for m in source.get("modifiers", {}).get("words", [])]
        for attribute in VOCABULARY_ATTRIBUTES:
            for value_id, entry in source.get(attribute, {}).items():
                vocab = vocabularies.setdefault(attribute, Vocabulary(attribute))
                names = {k: str(v) for k, v in entry.items() if k not in ("synonyms",)}
                vocab.add(value_id, names, [str(s) for s in entry.get("synonyms", [])])
    ordered = tuple(sorted(set(modifiers), key=len, reverse=True))
    for vocab in vocabularies.values():
        vocab.modifiers = ordered
    return vocabularies


def builtin_vocabulary_table() -> dict[str, Any]:
    return parse_toml(data_text("vocabularies.toml"))


def normalised_list(vocab: Vocabulary | None, raws: list[str]) -> list[dict[str, str | None]]:
    """[{"raw": ..., "value": ...}], one entry per distinct wording; duplicates of a value kept once."""
    out: list[dict[str, str | None]] = []
    seen_values: set[str] = set()
    for raw in raws:
        value = vocab.normalise(raw) if vocab else None
        if value is not None:
            if value in seen_values:
                continue
            seen_values.add(value)
        out.append({"raw": raw, "value": value})
    return out
