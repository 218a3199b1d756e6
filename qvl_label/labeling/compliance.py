"""Compliance: flag wording marketplaces and advertising law forbid, and rewrite it under --strict."""

from __future__ import annotations

import bisect
import itertools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .config import Rule

_WORD_LANGS = {"en", "de", "fr", "es", "it", "nl", "pt", "pl", "tr", "id", "ms", "vi"}
EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\u2b50\u2b55\u2934\u2935\u3030\u303d\ufe0f\u200d]+"
)


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    term: str
    rule: Rule


@lru_cache(maxsize=256)
def _pattern(lang: str, terms: tuple[str, ...]) -> re.Pattern[str]:
    ordered = sorted(terms, key=len, reverse=True)  # "全网最低" before "最"
    alternatives = "|".join(re.escape(t) for t in ordered)
    if lang.split("-")[0] in _WORD_LANGS:
        return re.compile(rf"(?<![\w#])(?:{alternatives})(?!\w)", re.IGNORECASE)
    return re.compile(alternatives, re.IGNORECASE)


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


# Unicode's Default_Ignorable_Code_Point characters that are not format characters (Cf): a reader sees
# nothing, so one inside a word ("b\u034fest") would split it for the rules as a zero-width space would.
# Combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian free variation selectors,
# variation selectors, unassigned ignorables (DerivedCoreProperties.txt, Unicode 15.1).
_IGNORABLE = frozenset(
    chr(code)
    for first, last in [(0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2065, 0x2065),
                        (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF)]
    for code in range(first, last + 1)
)  # fmt: skip


def _invisible(char: str) -> bool:
    return char in _IGNORABLE or unicodedata.category(char) == "Cf"


# Cyrillic, Greek and Armenian letters drawn like a Latin one (Unicode's confusables.txt, the
# single-letter mappings to a-z and A-Z): a Cyrillic "е" in "bеst" reads as "best". They are
# read as Latin only where they cannot be real text of their own script (`_fold_look_alikes`).
_LOOK_ALIKE = str.maketrans(
    "аАВсСеЕһНіІјЈКӏӀМоОрРԛԚѕЅТԝԜхХуҮԁ"  # Cyrillic
    "αΑΒΕΖΗιΙΚΜΝνοΟρΡΤυΥΧγ"  # Greek
    "օսհո",  # Armenian
    "aABcCeEhHiIjJKllMoOpPqQsSTwWxXyYd"
    "aABEZHiIKMNvoOpPTuYXy"
    "ouhn",
)  # fmt: skip
_LOOK_ALIKE_CHARS = frozenset(chr(code) for code in _LOOK_ALIKE)
_WORD = re.compile(r"\w+")


def _is_latin(char: str) -> bool:
    return (char.isascii() and char.isalpha()) or unicodedata.name(char, "").startswith("LATIN ")


def _fold_look_alikes(text: str) -> str:
    """Look-alike letters of other scripts read as the Latin letters they imitate, where they cannot be real text.

    A word that mixes Latin letters with look-alikes ("bеst" with a Cyrillic е) is folded; so is
    a word made only of look-alikes ("ВЕЅТ") in a text written mostly in Latin letters. Words of
    a Cyrillic, Greek or Armenian text ("лучший", "сор") stay as they are, for that language's
    rules. One character for one, so the indexes into the text are unchanged.
    """
    if not any(char in _LOOK_ALIKE_CHARS for char in text):
        return text
    letters = [char for char in text if char.isalpha()]
    mostly_latin = 2 * sum(_is_latin(char) for char in letters) > len(letters)
    pieces: list[str] = []
    last = 0
    for match in _WORD.finditer(text):
        word = match.group(0)
        look_alikes = sum(char in _LOOK_ALIKE_CHARS for char in word)
        if look_alikes and (any(_is_latin(char) for char in word) or (mostly_latin and look_alikes == len(word))):
            pieces += [text[last : match.start()], word.translate(_LOOK_ALIKE)]
            last = match.end()
    return "".join([*pieces, text[last:]])


def normalise(text: str) -> tuple[str, list[int]]:
    """The text as the rules read it, and for each of its characters the index it came from.

    Full-width and other compatibility forms fold to their plain letters (NFKC: "ｂｅｓｔ" is
    "best"), and format characters a reader never sees (zero-width space and joiners, soft
    hyphen, word joiner, byte-order mark: Unicode category Cf; and the other default-ignorable
    characters, such as the combining grapheme joiner and variation selectors) are dropped, so that
    they cannot split a flagged word. Look-alike letters of other scripts inside Latin words read
    as Latin (`_fold_look_alikes`). The index list has one extra entry, the text's length.
    """
    folded: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if _invisible(char):
            continue
        for part in unicodedata.normalize("NFKC", char):
            folded.append(part)
            origin.append(index)
    origin.append(len(text))
    return _fold_look_alikes("".join(folded)), origin


def find(text: str, rules: list[Rule]) -> list[Hit]:
    """Every flagged term or claim pattern in the text, with spans in the text as written.

    Matching runs on the normalised text; a match inside a context its rule names as factual
    (an exception) is not flagged.
    """
    folded, origin = normalise(text)
    hits: list[Hit] = []
    for rule in rules:
        terms = {}
        for t in reversed(rule.terms):
            terms[t.lower()] = t  # the first listed spelling of a term wins
        inside_factual = _covered(sorted(m.span() for e in _compiled(rule.exceptions) for m in e.finditer(folded)))
        matches = list(_pattern(rule.lang, rule.terms).finditer(folded)) if rule.terms else []
        matches += [m for p in _compiled(rule.patterns) for m in p.finditer(folded) if m.end() > m.start()]
        for match in matches:
            if inside_factual(match.start(), match.end()):
                continue
            term = terms.get(match.group(0).lower(), match.group(0))
            hits.append(Hit(origin[match.start()], origin[match.end() - 1] + 1, term, rule))
    hits.sort(key=lambda h: (h.start, -(h.end - h.start)))
    kept: list[Hit] = []
    for hit in hits:  # overlapping matches of several rules: keep the first, longest one
        if not kept or hit.start >= kept[-1].end:
            kept.append(hit)
    return kept


def _covered(spans: list[tuple[int, int]]) -> Callable[[int, int], bool]:
    """Whether start..end lies inside one of the sorted spans: a binary search over the spans' starts and the
    furthest end reached so far, so a long text with many matches stays linear (times a log)."""
    starts = [start for start, _ in spans]
    furthest = list(itertools.accumulate((end for _, end in spans), max))

    def covered(start: int, end: int) -> bool:
        index = bisect.bisect_right(starts, start) - 1
        return index >= 0 and furthest[index] >= end

    return covered


_SENTENCE_END = re.compile(r"[.!?。！？；;\n]+")


def _sentence_bounds(starts: list[int], ends: list[int], length: int, position: int) -> tuple[int, int]:
    """The sentence around position: from the last sentence end before it to the first end after it, found by
    binary search in the text's sentence ends (found once, as sorted starts and ends), not a scan per hit."""
    before = bisect.bisect_right(ends, position) - 1
    after = bisect.bisect_left(starts, position)
    return ends[before] if before >= 0 else 0, ends[after] if after < len(ends) else length


def _rewrite(text: str, hits: list[Hit]) -> str:
    """Replace or delete each flagged term; claims marked drop-sentence take their sentence with them.
    Linear in the text: sentence ends are found once, and the output is joined from pieces in one pass."""
    spans = [m.span() for m in _SENTENCE_END.finditer(text)]
    starts, ends = [start for start, _ in spans], [end for _, end in spans]
    dropped: list[tuple[int, int]] = []
    for hit in hits:
        if hit.rule.drop_sentence:
            start, end = _sentence_bounds(starts, ends, len(text), hit.start)
            if dropped and start <= dropped[-1][1]:
                dropped[-1] = (dropped[-1][0], max(end, dropped[-1][1]))
            else:
                dropped.append((start, end))
    edits: list[tuple[int, int, str]] = [(start, end, "") for start, end in dropped]
    in_dropped = _covered(dropped)
    for hit in hits:
        if hit.rule.drop_sentence or in_dropped(hit.start, hit.start + 1):
            continue
        replacement = hit.rule.replacements.get(hit.term, "")
        before = hit.start - 1
        while before >= 0 and text[before].isspace():
            before -= 1
        sentence_start = before < 0 or text[before] in ".!?"
        if replacement and (text[hit.start].isupper() or (sentence_start and not text[hit.start].islower())):
            replacement = replacement[:1].upper() + replacement[1:]
        edits.append((hit.start, hit.end, replacement))
    pieces: list[str] = []
    position = 0
    for start, end, replacement in sorted(edits):
        if start < position:  # inside a dropped sentence already cut
            position = max(position, end)
            continue
        pieces += [text[position:start], replacement]
        position = end
    pieces.append(text[position:])
    out = "".join(pieces)
    out = re.sub(r"\s{2,}", " ", out)
    out = re.sub(r"\s+([,.;:!?，。；：！？])", r"\1", out)
    out = re.sub(r"([，,])\s*([，,。.])", r"\2", out)
    out = out.strip(" ,，;；")
    # a sentence that began with the removed words begins with a capital again
    return out[:1].upper() + out[1:] if not text[:1].islower() else out


def _text_fields(copy: dict[str, Any]) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [("title", None), ("description", None)]
    fields += [(f"selling_points[{i}]", i) for i in range(len(copy.get("selling_points", [])))]
    fields += [(f"tags[{i}]", i) for i in range(len(copy.get("tags", [])))]
    return fields


_WORDLESS = re.compile(r"^[\W_]*$")


def rules_for(rules: list[Rule], lang: str, category_ancestors: set[int]) -> list[Rule]:
    """The rules of a language that apply to a product in these categories."""
    base = lang.split("-")[0]
    return [r for r in rules if r.lang.split("-")[0] == base and not set(r.skip_categories) & category_ancestors]


@dataclass(frozen=True)
class Checked:
    """One text checked: its flags, and under strict its rewrite (the text itself when it was kept)."""

    flags: list[dict[str, Any]]
    text: str
    kept: bool  # strict wanted to remove wording but that would have emptied the text


def check_text(value: str, rules: list[Rule], field: str, strict: bool, may_empty: bool = False) -> Checked:
    """Flag one text; with strict, rewrite it unless that would leave nothing (then `kept`)."""
    hits = find(value, rules)
    rewritten = _rewrite(value, hits) if strict and hits else value
    kept = strict and bool(hits) and not may_empty and _WORDLESS.match(rewritten) is not None
    if kept:
        rewritten = value
    flags = [
        {
            "field": field,
            "span": [hit.start, hit.end],
            "text": value[hit.start : hit.end],
            "rule": hit.rule.id,
            "kind": hit.rule.kind,
            "suggestion": _suggestion(hit),
            "action": ("kept" if kept else _action(hit)) if strict else "flagged",
        }
        for hit in hits
    ]
    return Checked(flags, rewritten, kept)


def check_copy(
    copy: dict[str, dict[str, Any]], rules: list[Rule], category_ancestors: set[int], strict: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Flags for every language's copy, and warnings; with strict, the copy is rewritten in place.

    A rewrite never empties a field: when removing the flagged wording would leave nothing,
    the text is kept as written, its flags say `kept`, and a warning asks for a person.
    """
    flags: list[dict[str, Any]] = []
    warnings: list[str] = []
    for lang, text in copy.items():
        applicable = rules_for(rules, lang, category_ancestors)
        if not applicable:
            continue
        originals = {key: list(text.get(key, [])) for key in ("selling_points", "tags")}
        for name, index in _text_fields(text):
            key = name.split("[")[0]
            value = text[key] if index is None else text[key][index]
            # a list item may go (the list is checked below); a title or description may not
            checked = check_text(value, applicable, f"copy.{lang}.{name}", strict, may_empty=index is not None)
            flags += checked.flags
            if checked.kept:
                warnings.append(
                    f"copy.{lang}.{name} kept as written: removing the flagged wording would empty it; "
                    "rewrite it by hand"
                )
            if checked.text != value:
                if index is None:
                    text[key] = checked.text
                else:
                    text[key][index] = checked.text
        if strict:  # a selling point or tag that was only a claim goes, unless the list would go with it
            for key in ("selling_points", "tags"):
                kept_items = [item for item in text.get(key, []) if not _WORDLESS.match(item)]
                if kept_items or not text.get(key):
                    text[key] = kept_items
                else:
                    text[key] = originals[key]
                    warnings.append(f"copy.{lang}.{key} kept as written: every item was a flagged claim")
    return flags, warnings


def _action(hit: Hit) -> str:
    if hit.rule.drop_sentence:
        return "sentence removed"
    return "rewritten" if hit.rule.replacements.get(hit.term) else "removed"


def _suggestion(hit: Hit) -> str:
    replacement = hit.rule.replacements.get(hit.term)
    if replacement:
        return f"{hit.rule.suggestion}; e.g. replace “{hit.term}” with “{replacement}”"
    return f"{hit.rule.suggestion}; e.g. delete “{hit.term}”"


def strip_emoji(copy: dict[str, dict[str, Any]]) -> bool:
    """Remove emoji from every copy field; returns whether any was removed."""
    changed = False
    for text in copy.values():
        for key in ("title", "description"):
            cleaned = EMOJI.sub("", text[key]).strip()
            changed |= cleaned != text[key]
            text[key] = cleaned
        for key in ("selling_points", "tags"):
            cleaned_list = [EMOJI.sub("", v).strip() for v in text[key]]
            changed |= cleaned_list != text[key]
            text[key] = [v for v in cleaned_list if v]
    return changed
