"""Category-mapping gold tables: read them and score the taxonomy mapper against them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..labeling.taxonomy import Taxonomy


@dataclass(frozen=True)
class GoldRow:
    top: str
    path: list[str]
    expected: tuple[str, ...]


@dataclass
class Outcome:
    rows: int = 0
    correct: int = 0
    too_general: int = 0  # mapped to an ancestor of the expected node (safe, less specific)
    wrong_branch: int = 0  # mapped to a node that is neither the expected one nor its ancestor
    fell_back: int = 0  # a deeper node was expected, the top level was given
    deeper_expected: int = 0
    top_only_correct: int = 0  # rows where the top level is the right answer, and was given
    timings_ms: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        deeper = self.correct - self.top_only_correct + self.too_general + self.wrong_branch
        return (self.correct - self.top_only_correct) / deeper if deeper else 1.0

    @property
    def coverage(self) -> float:
        mapped = self.deeper_expected - self.fell_back
        return mapped / self.deeper_expected if self.deeper_expected else 1.0


def read_gold(path: Path) -> list[GoldRow]:
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n"):  # not splitlines: U+2028 is text
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        top, model_path, expected = line.split("\t")
        rows.append(GoldRow(top, model_path.split(" > "), tuple(expected.split(" > "))))
    return rows


def evaluate(taxonomy: Taxonomy, rows: list[GoldRow]) -> Outcome:
    outcome = Outcome()
    for row in rows:
        taxonomy._matches.clear()  # time the mapping itself, not the cache
        started = time.perf_counter()
        node, _ = taxonomy.match(row.top, row.path)
        outcome.timings_ms.append((time.perf_counter() - started) * 1000)
        outcome.rows += 1
        deeper = len(row.expected) > 1
        outcome.deeper_expected += deeper
        if node.path == row.expected:
            outcome.correct += 1
            outcome.top_only_correct += not deeper
            continue
        if len(node.path) == 1:
            outcome.fell_back += 1
        elif row.expected[: len(node.path)] == node.path:
            outcome.too_general += 1
        else:
            outcome.wrong_branch += 1
        outcome.misses.append(f"{row.top} | {' > '.join(row.path)} -> {' > '.join(node.path)}")
    return outcome
