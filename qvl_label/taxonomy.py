"""Google Product Taxonomy (2021-09-21): real category ids, display names, and mapping model wording onto them."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .datafiles import data_dir, data_text

TAXONOMY_FILE = "taxonomy-with-ids.en-US.txt"
TAXONOMY_VERSION = "2021-09-21"
MIN_SCORE = 0.45  # below this a deeper node is not trusted; the best matching ancestor is used

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Category:
    id: int
    path: tuple[str, ...]


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words(text: str) -> frozenset[str]:
    return frozenset(_singular(w) for w in _WORD.findall(text.lower().replace("&", " ")) if w not in {"and", "the"})


def similarity(a: str, b: str) -> float:
    """Word overlap, or spelling closeness for one-word variants ('t-shirt' / 'tshirt')."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return 0.0
    overlap = len(wa & wb) / len(wa | wb)
    containment = len(wa & wb) / len(wb)  # all of the node's words said by the model
    spelling = difflib.SequenceMatcher(None, " ".join(sorted(wa)), " ".join(sorted(wb))).ratio()
    return max(overlap, 0.9 * containment, 0.8 * spelling if spelling > 0.8 else 0.0)


@dataclass
class Taxonomy:
    nodes: dict[int, Category]
    by_path: dict[tuple[str, ...], int]
    names: dict[str, dict[int, str]] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)

    @property
    def top_levels(self) -> list[str]:
        return [c.path[0] for c in self.nodes.values() if len(c.path) == 1]

    def display_path(self, category_id: int, lang: str) -> list[str]:
        """The path in a language, level by level; levels without a translation stay English."""
        category = self.nodes[category_id]
        table = self.names.get(lang.split("-")[0], {})
        out = []
        for depth in range(1, len(category.path) + 1):
            node_id = self.by_path[category.path[:depth]]
            out.append(table.get(node_id, category.path[depth - 1]))
        return out

    def subtree(self, top: str) -> list[Category]:
        return [c for c in self.nodes.values() if c.path[0] == top]

    def match(self, top: str, path: list[str]) -> tuple[Category, float]:
        """The taxonomy node under `top` that best fits the model's path; always a real node."""
        if top not in {t for t in self.top_levels}:
            raise KeyError(top)
        wanted = [p for p in path if p.strip() and p.strip().lower() != top.lower()]
        exact = self.by_path.get((top, *wanted))
        if exact is not None:
            return self.nodes[exact], 1.0
        for segment in reversed(wanted):  # retail words the taxonomy names differently
            alias = self.aliases.get(" ".join(sorted(words(segment))))
            if alias is not None and self.nodes[alias].path[0] == top:
                return self.nodes[alias], 0.95
        root = self.nodes[self.by_path[(top,)]]
        if not wanted:
            return root, 0.0
        best, best_score = root, 0.0
        last = wanted[-1]
        for node in self.subtree(top):
            if len(node.path) == 1:
                continue
            leaf_score = max(similarity(last, node.path[-1]), 0.8 * max(similarity(w, node.path[-1]) for w in wanted))
            if leaf_score == 0.0:
                continue
            ancestors = node.path[1:-1]
            context = (
                sum(max(similarity(w, a) for w in wanted) for a in ancestors) / len(ancestors) if ancestors else 0.5
            )
            score = leaf_score + 0.25 * context - 0.01 * len(node.path)
            if score > best_score:
                best, best_score = node, score
        if best_score < MIN_SCORE:
            return root, best_score
        return best, min(best_score, 1.0)


def parse_taxonomy(text: str) -> Taxonomy:
    nodes: dict[int, Category] = {}
    by_path: dict[tuple[str, ...], int] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        number, _, full = line.partition(" - ")
        category = Category(int(number), tuple(full.split(" > ")))
        nodes[category.id] = category
        by_path[category.path] = category.id
    return Taxonomy(nodes=nodes, by_path=by_path)


def _tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def load_taxonomy() -> Taxonomy:
    taxonomy = parse_taxonomy(data_text(TAXONOMY_FILE))
    for entry in data_dir().iterdir():  # taxonomy-names.<lang>.tsv: display names per language
        parts = entry.name.split(".")
        if entry.name.startswith("taxonomy-names.") and len(parts) == 3 and parts[2] == "tsv":
            taxonomy.names[parts[1]] = {int(row[0]): row[1] for row in _tsv(entry.read_text(encoding="utf-8"))}
    for alias, number in _tsv(data_text("taxonomy-aliases.tsv")):
        taxonomy.aliases[" ".join(sorted(words(alias)))] = int(number)
    return taxonomy


def category_record(taxonomy: Taxonomy, top: str, path: list[str], languages: tuple[str, ...]) -> dict[str, Any]:
    category, score = taxonomy.match(top, path)
    names = {lang: taxonomy.display_path(category.id, lang) for lang in languages if lang != "en"}
    return {
        "id": category.id,
        "path": list(category.path),
        "names": names,
        "raw": [top, *path],
        "match": round(score, 2),
    }
