"""Words of category names: the singular stems and lookup keys both sides of a match are compared by."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

WORD = re.compile(r"[a-z0-9]+")
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_STOP_WORDS = frozenset({"and", "the", "for", "of", "with", "other", "misc"})


@dataclass(frozen=True)
class Category:
    id: int
    path: tuple[str, ...]


def _singular(word: str) -> str:
    """A canonical singular: plural and singular forms of one noun give the same stem.

    Not always an English word ("necktie" and "neckties" both give "necktiy"), but the
    same on both sides of a comparison, which is what matching needs.
    """
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("ie"):
        return word[:-2] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes", "zzes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> tuple[str, ...]:
    """Lower-case singular words of an English name; '&', hyphens and punctuation split words."""
    folded = unicodedata.normalize("NFKC", text).lower().replace("'", "")
    return tuple(_singular(w) for w in WORD.findall(folded) if w not in _STOP_WORDS)


def name_key(text: str) -> str:
    """One lookup key for a name in any language: words joined without spaces ('Skin Care' = 'skincare')."""
    folded = unicodedata.normalize("NFKC", text).lower()
    if CJK.search(folded):
        return re.sub(r"[\s\-_·・/&,，、]+", "", folded)
    return "".join(words(folded))


@dataclass(frozen=True)
class Match:
    category: Category
    score: float
