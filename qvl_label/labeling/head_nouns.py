"""Head nouns: the noun a category leaf ends in, read from Chinese compounds and English clippings."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from ..datafiles import data_text

HEAD_NOUNS_FILE = "taxonomy-head-nouns.tsv"
_LONGEST_MODIFIER = 4  # characters: 自行车, 电热
_SEPARATORS = re.compile(r"[\s\-_·・/&,，、]+")


@dataclass(frozen=True)
class HeadNouns:
    """The head-noun table (qvl_label/data/taxonomy-head-nouns.tsv)."""

    heads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # 垫 -> (mat, pad, cushion)
    modifiers: dict[str, str] = field(default_factory=dict)  # 鼠标 -> mouse
    english: dict[str, str] = field(default_factory=dict)  # bike -> bicycle

    def readings(self, text: str) -> list[str]:
        """English phrases a Chinese leaf may stand for, most likely first; [] without a known head.

        The longest known head at the end decides the noun (游戏鼠标垫 ends in 垫: mat, pad or
        cushion); known modifiers before it, read left to right and longest first, come before
        it (游戏 gaming, 鼠标 mouse), so each reading is "gaming mouse mat", "gaming mouse pad"...
        """
        key = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text).lower())
        for length in range(len(key), 0, -1):
            nouns = self.heads.get(key[-length:])
            if nouns is not None:
                break
        else:
            return []
        prefix = key[:-length]
        found: list[str] = []
        position = 0
        while position < len(prefix):
            for size in range(min(_LONGEST_MODIFIER, len(prefix) - position), 0, -1):
                word = self.modifiers.get(prefix[position : position + size])
                if word is not None:
                    found.append(word)
                    position += size
                    break
            else:
                position += 1  # a modifier the table does not know (不锈钢, 防滑) adds nothing
        return [" ".join([*found, noun]) for noun in nouns]

    def spelled(self, word: str) -> str:
        """The taxonomy's spelling of an English word (bike -> bicycle), else the word."""
        return self.english.get(word, word)


def parse_head_nouns(text: str) -> HeadNouns:
    table = HeadNouns()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, word, english = line.split("\t")
        if kind == "head":
            table.heads[word] = tuple(english.split("|"))
        elif kind == "word":
            table.modifiers[word] = english
        elif kind == "en":
            table.english[word.lower()] = english.lower()
        else:
            raise ValueError(f"{HEAD_NOUNS_FILE}: unknown kind {kind!r}")
    return table


@lru_cache(maxsize=1)
def load_head_nouns() -> HeadNouns:
    return parse_head_nouns(data_text(HEAD_NOUNS_FILE))
