"""Head nouns: the noun a category leaf ends in (a table for Chinese compounds), and finding a leaf by it."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from ..datafiles import data_text
from .taxonomy_words import CJK, WORD, Category, Match, words

HEAD_NOUNS_FILE = "taxonomy-head-nouns.tsv"
# A leaf found by its head noun in the model's top level (issue #27: "Cat Supplies > Cat Collar"
# is Pet Collars & Harnesses): the base score, what each of the model's other words found in
# its name or its ancestors adds, and what each word of its name the model did not use costs.
HEAD_SCORE = 0.8
HEAD_WORD_IN_LEAF = 0.05
HEAD_WORD_IN_PATH = 0.02
HEAD_EXTRA_WORD = 0.03
# Words that end a name without saying what the thing is ("LEGO Set", "Phone Accessories").
_NOT_HEADS = frozenset({"set", "kit", "accessory", "accessories", "part", "supply", "item", "product", "pack"})
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


# A node as the search sees it: the node, the words of the name part that ends in the head,
# the words of its whole leaf name, and the words of its ancestors.
_Named = tuple[Category, frozenset[str], frozenset[str], frozenset[str]]


class HeadSearch:
    """Every node below a top level, indexed by the nouns its name ends in."""

    def __init__(self, nodes: list[Category], table: HeadNouns) -> None:
        self.nodes = nodes
        self.table = table
        self._by_head_cache: dict[str, list[_Named]] | None = None

    @staticmethod
    def leaf_heads(category: Category) -> set[str]:
        """The nouns a leaf name ends in: each part's last word, and its last two words joined ("teapot")."""
        heads: set[str] = set()
        for part in re.split(r"\s*(?:&|,)\s*", category.path[-1]):
            part_words = words(part)
            if part_words:
                heads.add(part_words[-1])
                if len(part_words) > 1:
                    heads.add(part_words[-2] + part_words[-1])
        return heads

    def _index(self) -> dict[str, list[_Named]]:
        """Head noun -> (node, words of the name part it ends, of its whole leaf, of its ancestors)."""
        if self._by_head_cache is None:
            self._by_head_cache = {}
            for node in self.nodes:
                if len(node.path) == 1:
                    continue
                leaf = frozenset(words(node.path[-1]))
                above = frozenset(w for level in node.path[:-1] for w in words(level))
                for part in re.split(r"\s*(?:&|,)\s*", node.path[-1]):
                    part_words = words(part)
                    heads = {part_words[-1], "".join(part_words[-2:])} if part_words else set()
                    for head in heads:
                        self._by_head_cache.setdefault(head, []).append((node, frozenset(part_words), leaf, above))
        return self._by_head_cache

    def english_words(self, text: str) -> list[str]:
        """The words of an English segment in the taxonomy's spelling (bike -> bicycle)."""
        raw = WORD.findall(unicodedata.normalize("NFKC", text).lower().replace("'", ""))
        return list(words(" ".join(self.table.spelled(w) for w in raw)))

    def find(self, top: str, segments: list[str]) -> tuple[Match, str] | None:
        """The node in the top level's subtree whose leaf ends in the model's head noun, and that noun.

        The head is the last word of the most specific level, or for Chinese the English nouns
        of its head (菜刀: kitchen knife; 垫: mat, pad or cushion, tried in turn). The model's
        other words choose among the nodes: those in the leaf count most, then those in its
        ancestors, and each leaf word the model did not use costs a little.
        """
        last = segments[-1]
        readings = self.table.readings(last) if CJK.search(last) else [last]
        context = {w for s in segments[:-1] if not CJK.search(s) for w in self.english_words(s)}
        found: list[tuple[float, int, Category, str]] = []
        for order, reading in enumerate(readings):
            query = self.english_words(reading)
            if not query or query[-1] in _NOT_HEADS:
                continue
            head, said = query[-1], (set(query) | context) - {query[-1]}
            nearest = query[-2] if len(query) > 1 else ""  # "mouse" in "gaming mouse pad" says most
            for node, part, leaf, above in self._index().get(head, ()):
                if node.path[0] != top:
                    continue
                extra = part - said - {head} - {w for w in part if w in head and len(w) > 2}  # tea, pot: "teapot"
                score = (
                    HEAD_SCORE
                    + HEAD_WORD_IN_LEAF * (len(said & leaf) + (nearest in leaf))
                    + HEAD_WORD_IN_PATH * len(said & above - leaf)
                    - HEAD_EXTRA_WORD * len(extra)
                    - 0.01 * order  # an earlier reading of a Chinese head is the likelier one
                )
                found.append((score, len(node.path), node, head))
        if not found:
            return None
        # best first; on a tie the deeper node, the thing itself rather than the branch holding it
        score, _, node, head = max(found, key=lambda item: (item[0], item[1], -item[2].id))
        return Match(node, min(score, 1.0)), head
