"""Controlled vocabularies: map the model's wording ("酒红", "burgundy") onto stable value ids ("red")."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ..datafiles import data_text, parse_toml

_SUFFIXES = ("颜色", "色调", "色系", "色", "系", " colour", " color", " tone", " shade", " coloured", " colored")
_CJK = re.compile(r"[\u3400-\u9fff]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")
_JOINERS = re.compile(r"\s*(?:&|/|,|\+|\band\b|\bwith\b|和|与|配|拼)\s*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def fold(text: str) -> str:
    """Case, width, hyphens and spacing folded; a trailing 色 / 'colour' removed."""
    folded = unicodedata.normalize("NFKC", text).lower().replace("-", " ").replace("_", " ").replace("'", "")
    folded = _SPACES.sub(" ", folded).strip()
    for suffix in _SUFFIXES:
        if folded.endswith(suffix) and len(folded) > len(suffix):
            folded = folded[: -len(suffix)].strip()
            break
    return folded


@dataclass
class Vocabulary:
    """One attribute's values: id -> display names, and every folded synonym -> id."""

    name: str
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    lookup: dict[str, str] = field(default_factory=dict)
    modifiers: tuple[str, ...] = ()
    _by_length: list[tuple[str, str]] = field(default_factory=list)

    _cjk_synonyms: list[tuple[str, str]] = field(default_factory=list)  # longest first
    _word_synonyms: dict[tuple[str, ...], str] = field(default_factory=dict)  # by their words
    _longest_words: int = 1
    _modifier_pattern: re.Pattern[str] | None = None

    def add(self, value_id: str, names: dict[str, str], synonyms: list[str]) -> None:
        self.values.setdefault(value_id, {}).update(names)
        for word in [*names.values(), *synonyms, value_id.replace("_", " ")]:
            key = fold(word)
            if key:
                self.lookup[key] = value_id
        self._by_length = sorted(self.lookup.items(), key=lambda kv: -len(kv[0]))
        # Indexes for finding synonyms inside longer wording: CJK ones by substring, the others
        # as runs of whole words, so a lookup costs a few dictionary probes, not a regex each.
        self._cjk_synonyms = [(s, v) for s, v in self._by_length if _CJK.search(s) and len(s) > 1]
        self._word_synonyms = {tuple(_words(s)): v for s, v in self._by_length if not _CJK.search(s) and len(s) > 1}
        self._longest_words = max((len(k) for k in self._word_synonyms), default=1)

    def set_modifiers(self, modifiers: tuple[str, ...]) -> None:
        self.modifiers = modifiers
        latin = [m for m in modifiers if not _CJK.search(m)]
        self._modifier_pattern = (
            re.compile(r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, latin)) + r")(?![a-z0-9])") if latin else None
        )

    def _strip_modifiers(self, text: str) -> str:
        out = text
        for modifier in self.modifiers:
            if _CJK.search(modifier) and out.startswith(modifier) and len(out) > len(modifier):
                out = out[len(modifier) :]
        if self._modifier_pattern is not None:
            out = self._modifier_pattern.sub(" ", out)
        return _SPACES.sub(" ", out).strip()

    def normalise(self, raw: str) -> str | None:
        """The value id for the wording, or None when nothing in the vocabulary means it."""
        values = self.normalise_all(raw)
        return values[0] if values else None

    def normalise_all(self, raw: str) -> list[str]:
        """Every value the wording names: one for "wine red", two for "cotton/polyester" or 春夏.

        Several values combine by attribute: two colours are `multicolour`, men and women
        are `unisex`; other attributes (a material blend, two seasons) keep each value.
        Hue compounds that name one colour (灰蓝, 蓝绿) are synonyms in the data, found first.
        """
        text = fold(raw)
        if not text:
            return []
        if text in self.lookup:
            return [self.lookup[text]]
        stripped = fold(self._strip_modifiers(text))
        if stripped in self.lookup:
            return [self.lookup[stripped]]
        parts = [p for p in _JOINERS.split(text) if p]
        if len(parts) > 1:
            named = list(dict.fromkeys(v for p in parts for v in self.normalise_all(p)))
            if len(named) > 1:
                return self._combine(named)
        # Chinese compounds name two values without a separator: 黑白, 红蓝, 春夏, 男女
        if _CJK.search(text):
            families = self._cjk_families(stripped or text)
            if len(families) > 1:
                return self._combine(families)
        head = self._head_synonym(stripped or text)
        return [head] if head is not None else []

    def _combine(self, values: list[str]) -> list[str]:
        if "multicolour" in self.values:
            return ["multicolour"]
        if {"men", "women"} <= set(values) and "unisex" in self.values:
            return ["unisex", *(v for v in values if v not in ("men", "women"))]
        return values

    def _head_synonym(self, text: str) -> str | None:
        """The synonym the wording ends on (its head word: "golden brown" is brown), longest first."""
        best: tuple[int, int, str] | None = None  # (end position, length, value)

        def offer(end: int, length: int, value: str) -> None:
            nonlocal best
            if best is None or (end, length) > best[:2]:
                best = (end, length, value)

        for synonym, value in self._cjk_synonyms:
            at = text.rfind(synonym)
            if at >= 0:
                offer(at + len(synonym), len(synonym), value)
        tokens = [(m.group(0), m.end()) for m in _WORD.finditer(text)]
        for start in range(len(tokens)):
            for count in range(1, min(self._longest_words, len(tokens) - start) + 1):
                run = tuple(word for word, _ in tokens[start : start + count])
                found = self._word_synonyms.get(run)
                if found is not None:
                    end = tokens[start + count - 1][1]
                    offer(end, end - (tokens[start][1] - len(tokens[start][0])), found)
        return best[2] if best else None

    def _cjk_families(self, text: str) -> list[str]:
        """Values named in a CJK string in reading order, longest synonyms first, without overlaps."""
        remaining = text
        found: list[tuple[int, str]] = []
        for synonym, value_id in self._by_length:
            if _CJK.search(synonym) and synonym in remaining:
                position = remaining.index(synonym)
                found.append((position, value_id))
                remaining = remaining.replace(synonym, " " * len(synonym))
        return list(dict.fromkeys(value for _, value in sorted(found)))


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
        vocab.set_modifiers(ordered)
    return vocabularies


def builtin_vocabulary_table() -> dict[str, Any]:
    return parse_toml(data_text("vocabularies.toml"))


def normalised_list(vocab: Vocabulary | None, raws: list[str]) -> list[dict[str, str | None]]:
    """[{"raw": ..., "value": ...}], one entry per distinct wording; duplicates of a value kept once."""
    out: list[dict[str, str | None]] = []
    seen_values: set[str] = set()
    for raw in raws:
        values = vocab.normalise_all(raw) if vocab else []
        if not values:
            out.append({"raw": raw, "value": None})
        for value in values:  # a blend ("cotton/polyester") gives one entry per value, same raw
            if value not in seen_values:
                seen_values.add(value)
                out.append({"raw": raw, "value": value})
    return out
