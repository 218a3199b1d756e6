"""Google Product Taxonomy (2021-09-21): real category ids, display names, and mapping model wording onto them."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rapidfuzz import fuzz, process

from ..datafiles import data_dir, data_text
from .head_nouns import HeadNouns, HeadSearch, load_head_nouns
from .taxonomy_words import CJK as _CJK
from .taxonomy_words import Category, Match, name_key, words

TAXONOMY_FILE = "taxonomy-with-ids.en-US.txt"
TAXONOMY_VERSION = "2021-09-21"
# Below this score a deeper node is not trusted and the top level is used. Chosen on the
# gold table in tests/data/taxonomy-gold.tsv; scripts/bench_taxonomy.py prints precision
# and coverage at it (README, "Labels a catalogue can use").
MIN_SCORE = 0.6
# A node outside the model's top level is taken only on a strong match (a handbag the
# model put under Luggage & Bags), and then scores a little lower than one inside it.
CROSS_TOP_MIN = 0.9
CROSS_TOP_PENALTY = 0.1
# Two spellings of one word (typos, "t-shirt"/"tshirt") count as the same word at or above this.
WORD_SIMILARITY_CUTOFF = 86
# A word found in more names than this ("accessories", "clothing") leads to no candidates on its own.
COMMON_WORD_POSTINGS = 40


@dataclass(frozen=True)
class _Name:
    """One name a node answers to: its English leaf (or a part of it), a translated name, or a retail alias."""

    node_id: int
    key: str
    words: tuple[str, ...]
    weight: float  # 1.0 for the whole leaf name and aliases, less for one part of "Shirts & Tops"
    cjk: bool


class CategoryIndex:
    """Every name of every node, indexed by whole key and by word, for fuzzy lookup with rapidfuzz."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.names: list[_Name] = []
        for node in taxonomy.nodes.values():
            leaf = node.path[-1]
            self._add(node.id, leaf, 1.0)
            parts = [p for p in re.split(r"\s*(?:&|,)\s*", leaf) if p.strip()]
            if len(parts) > 1:  # "Handbags, Wallets & Cases" is also each of its parts
                for part in parts:
                    self._add(node.id, part, 0.85)
        for translated in taxonomy.names.values():
            for node_id, text in translated.items():
                if node_id in taxonomy.nodes:
                    self._add(node_id, text, 1.0)
        for alias, node_id in taxonomy.aliases.items():
            self._add(node_id, alias, 1.0)
        self.by_key: dict[str, list[int]] = {}
        self.by_word: dict[str, list[int]] = {}
        self.cjk_names: list[int] = []
        self.word_keys: list[frozenset[str]] = []  # per name: its words and adjacent pairs joined
        for index, entry in enumerate(self.names):
            self.by_key.setdefault(entry.key, []).append(index)
            if entry.cjk:
                self.cjk_names.append(index)
            compounds = {a + b for a, b in itertools.pairwise(entry.words)}  # "eye shadow" = "eyeshadow"
            self.word_keys.append(frozenset(entry.words) | compounds)
            for word in set(entry.words) | compounds:
                self.by_word.setdefault(word, []).append(index)
        self.vocabulary = sorted(self.by_word)

    def _add(self, node_id: int, text: str, weight: float) -> None:
        key = name_key(text)
        if key:
            cjk = bool(_CJK.search(key))
            self.names.append(_Name(node_id, key, () if cjk else words(text), weight, cjk))

    def _similar_words(self, word: str) -> list[tuple[str, float]]:
        """Index words spelled like this one: itself, or close spellings of words of 4+ letters."""
        if word in self.by_word:
            return [(word, 1.0)]
        if len(word) < 4:
            return []
        found = process.extract(word, self.vocabulary, scorer=fuzz.ratio, score_cutoff=WORD_SIMILARITY_CUTOFF, limit=3)
        return [(candidate, 0.9 * score / 100) for candidate, score, _ in found if len(candidate) >= 4]

    def segment_scores(self, segment: str) -> dict[int, float]:
        """Node id -> how well one level of the model's path names it (0..1)."""
        key = name_key(segment)
        if not key:
            return {}
        scores: dict[int, float] = {}

        def offer(node_id: int, score: float) -> None:
            if score > scores.get(node_id, 0.0):
                scores[node_id] = score

        for index in self.by_key.get(key, ()):
            offer(self.names[index].node_id, self.names[index].weight)
        if _CJK.search(key):
            for index in self.cjk_names:  # Chinese heads come last: 短袖T恤 is a T恤
                name = self.names[index]
                if len(name.key) < 2 or name.key == key:
                    continue
                if key.endswith(name.key):
                    offer(name.node_id, name.weight * (0.8 + 0.15 * len(name.key) / len(key)))
                elif name.key in key:
                    offer(name.node_id, name.weight * 0.65)
            return scores
        query = words(segment)
        if not query:
            return scores
        similar = {word: dict(self._similar_words(word)) for word in query}
        # Names are reached through the query's rarer words: "Accessories" alone is in hundreds
        # of names and decides none of them, so it only counts where a rarer word led.
        postings = {word: sum(len(self.by_word[v]) for v in similar[word]) for word in query}
        seeds = [w for w in query if postings[w] <= COMMON_WORD_POSTINGS] or list(query)
        candidates = {index for w in seeds for v in similar[w] for index in self.by_word[v]}
        for index in candidates:
            name = self.names[index]
            name_keys = self.word_keys[index]
            hits: dict[str, float] = {}
            for word in query:
                for candidate, quality in similar[word].items():
                    if candidate in name_keys and quality > hits.get(candidate, 0.0):
                        hits[candidate] = quality
            if not hits:
                continue
            total = sum(hits.values())
            name_words = set(name.words)
            # a compact word ("eyeshadow") stands for the two words it joins
            covered = sum(2 if word not in name_words else 1 for word in hits)
            precision = min(1.0, total / len(query))
            recall = min(1.0, covered * (total / len(hits)) / len(name_words))
            offer(name.node_id, name.weight * 2 * precision * recall / (precision + recall))
        return scores


@dataclass
class Taxonomy:
    nodes: dict[int, Category]
    by_path: dict[tuple[str, ...], int]
    names: dict[str, dict[int, str]] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    heads: HeadNouns = field(default_factory=HeadNouns)
    _index: CategoryIndex | None = None
    _heads: HeadSearch | None = None
    _branches: frozenset[tuple[str, ...]] | None = None
    _matches: dict[tuple[str, tuple[str, ...]], Match] = field(default_factory=dict)

    @property
    def top_levels(self) -> list[str]:
        return [c.path[0] for c in self.nodes.values() if len(c.path) == 1]

    @property
    def head_search(self) -> HeadSearch:
        if self._heads is None:
            self._heads = HeadSearch(list(self.nodes.values()), self.heads)
        return self._heads

    @property
    def index(self) -> CategoryIndex:
        if self._index is None:
            self._index = CategoryIndex(self)
        return self._index

    def display_path(self, category_id: int, lang: str) -> list[str]:
        """The path in a language, level by level; levels without a translation stay English."""
        category = self.nodes[category_id]
        table = self.names.get(lang.split("-")[0], {})
        out = []
        for depth in range(1, len(category.path) + 1):
            node_id = self.by_path[category.path[:depth]]
            out.append(table.get(node_id, category.path[depth - 1]))
        return out

    def ancestors(self, category: Category) -> list[int]:
        return [self.by_path[category.path[:depth]] for depth in range(1, len(category.path))]

    def match(self, top: str, path: list[str]) -> tuple[Category, float]:
        """The taxonomy node that best fits the model's path; always a real node, the top level when unsure."""
        if (top,) not in self.by_path:
            raise KeyError(top)
        key = (top, tuple(path))
        result = self._matches.get(key)
        if result is None:
            result = self._match(top, key[1])
            if len(self._matches) < 8192:  # catalogues repeat paths; the bound keeps memory flat
                self._matches[key] = result
        return result.category, result.score

    def _match(self, top: str, path: tuple[str, ...]) -> Match:
        wanted = [p.strip() for p in path if p.strip() and name_key(p) != name_key(top)]
        exact = self.by_path.get((top, *wanted))
        if exact is not None:
            return Match(self.nodes[exact], 1.0)
        root = self.nodes[self.by_path[(top,)]]
        ranked = self.rank(wanted, top)
        best = ranked[0] if ranked and ranked[0].score >= MIN_SCORE else None
        found = self.head_search.find(top, wanted) if wanted else None
        if found is not None and (best is None or self._head_beats(best.category, found, wanted[-1])):
            return found[0]
        if best is None:
            return Match(root, ranked[0].score if ranked else 0.0)
        return best

    def _head_beats(self, best: Category, found: tuple[Match, str], last: str) -> bool:
        """Whether a node found by the head noun replaces the ranked one (issue #27's two shapes).

        Only where the ranked node came from an earlier level of the model's path (the most
        specific level does not name it) and does not end in the noun itself: then a node named
        by the noun below it ("Cycling" -> Bicycles), or in a sibling branch when it is a
        branch ("Cat Supplies" -> Pet Collars & Harnesses under Pet Supplies), is the thing.
        """
        by_head, head = found
        if head in HeadSearch.leaf_heads(best) or self.index.segment_scores(last).get(best.id, 0.0) >= MIN_SCORE:
            return False
        path = by_head.category.path
        if path[: len(best.path)] == best.path:
            return True
        is_branch = best.path in self.branches
        return is_branch and len(best.path) > 2 and path[: len(best.path) - 1] == best.path[:-1]

    @property
    def branches(self) -> frozenset[tuple[str, ...]]:
        """The paths of nodes that have children."""
        if self._branches is None:
            self._branches = frozenset(c.path[:-1] for c in self.nodes.values() if len(c.path) > 1)
        return self._branches

    def top_level_named(self, text: str) -> str | None:
        """The English top level a name stands for, in any language the names tables cover."""
        key = name_key(text)
        for category in self.nodes.values():
            if len(category.path) != 1:
                continue
            names = [category.path[0], *(table.get(category.id, "") for table in self.names.values())]
            if any(name and name_key(name) == key for name in names):
                return category.path[0]
        return None

    def map_path(self, levels: list[str]) -> tuple[Category, float]:
        """A whole path as people write it ("Electronics > Accessories > Phone Cases", "服饰与配饰 > 服装 > 连衣裙").

        When the first level names a top level it is used as the model's would be; otherwise the
        path is matched against every top level.
        """
        levels = [level.strip() for level in levels if level.strip()]
        if not levels:
            raise ValueError("an empty category path")
        top = self.top_level_named(levels[0])
        if top is not None:
            return self.match(top, levels[1:])
        ranked = self.rank(levels)
        if not ranked:
            raise LookupError("no taxonomy node matches")
        return ranked[0].category, ranked[0].score

    def rank(self, segments: list[str], top: str | None = None, limit: int = 5) -> list[Match]:
        """Nodes for the model's levels (general to specific), best first; `top` favours its own subtree.

        The most specific level decides: it is matched first, and an earlier level is used
        only when no node fits the later ones well enough. The other levels add a little
        to nodes whose ancestors they name ("Mobile Phone Accessories > Cases").
        """
        if not segments:
            return []
        per_segment = [self.index.segment_scores(s) for s in segments]
        for position in range(1, len(segments)):
            # a level read with its parent: "Mobile Phone Accessories > Cases" names Mobile Phone Cases
            joined = self.index.segment_scores(f"{segments[position - 1]} {segments[position]}")
            scores = per_segment[position]
            for node_id, score in joined.items():
                scores[node_id] = max(scores.get(node_id, 0.0), 0.98 * score)
        for position in range(len(segments) - 1, -1, -1):
            weight = 1.0 - 0.05 * (len(segments) - 1 - position)
            ranked = self._ranked(per_segment[position], per_segment, top, weight)
            if ranked and ranked[0][0] >= MIN_SCORE:
                break
        return [Match(node, min(score, 1.0)) for score, node in ranked[:limit]]

    def _ranked(
        self, scores: dict[int, float], all_scores: list[dict[int, float]], top: str | None, weight: float
    ) -> list[tuple[float, Category]]:
        results: list[tuple[float, Category]] = []
        for node_id, raw in scores.items():
            node = self.nodes[node_id]
            if len(node.path) == 1:
                continue
            ancestors = self.ancestors(node)[1:]
            support = max((other.get(a, 0.0) for other in all_scores for a in ancestors), default=0.0)
            score = raw * weight + 0.08 * support
            if top is not None and node.path[0] != top:
                if score < CROSS_TOP_MIN:
                    continue
                score -= CROSS_TOP_PENALTY
            results.append((score, node))
        # best score first (uncapped, so support still separates two perfect names); on a tie
        # the shallower node, which is the thing itself rather than its parts and accessories
        results.sort(key=lambda item: (-item[0], len(item[1].path), item[1].id))
        return results


def parse_taxonomy(text: str) -> Taxonomy:
    nodes: dict[int, Category] = {}
    by_path: dict[tuple[str, ...], int] = {}
    for line in text.split("\n"):  # not splitlines: U+2028, \x85 are text inside a name
        line = line.removesuffix("\r")
        if not line or line.startswith("#"):
            continue
        number, _, full = line.partition(" - ")
        category = Category(int(number), tuple(full.split(" > ")))
        nodes[category.id] = category
        by_path[category.path] = category.id
    return Taxonomy(nodes=nodes, by_path=by_path)


def _tsv(text: str) -> list[list[str]]:
    lines = (line.removesuffix("\r") for line in text.split("\n"))  # not splitlines: U+2028 is text
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def load_taxonomy() -> Taxonomy:
    taxonomy = parse_taxonomy(data_text(TAXONOMY_FILE))
    for entry in data_dir().iterdir():  # taxonomy-names.<lang>.tsv: display names per language
        parts = entry.name.split(".")
        if entry.name.startswith("taxonomy-names.") and len(parts) == 3 and parts[2] == "tsv":
            taxonomy.names[parts[1]] = {int(row[0]): row[1] for row in _tsv(entry.read_text(encoding="utf-8"))}
    for alias, number in _tsv(data_text("taxonomy-aliases.tsv")):
        taxonomy.aliases[alias] = int(number)
    taxonomy.heads = load_head_nouns()
    return taxonomy


def category_record(taxonomy: Taxonomy, top: str, path: list[str], languages: tuple[str, ...]) -> dict[str, Any]:
    category, score = taxonomy.match(top, path)
    return node_record(taxonomy, category, score, [top, *path], languages)


def node_record(
    taxonomy: Taxonomy, category: Category, score: float, raw: list[str], languages: tuple[str, ...]
) -> dict[str, Any]:
    """The category object records carry: id, English path, names per language, the wording, the match."""
    names = {lang: taxonomy.display_path(category.id, lang) for lang in languages if lang != "en"}
    return {
        "id": category.id,
        "path": list(category.path),
        "names": names,
        "raw": raw,
        "match": round(score, 2),
    }
