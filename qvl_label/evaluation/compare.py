"""A/B of two runs over the same photos: where they agree, where they differ, and with gold which wins per field."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..labeling.vocabularies import VOCABULARY_ATTRIBUTES
from ..pipeline.records import OK
from ..store.values import as_dict as _dict
from .gold import GoldIndex, GoldLabel, normalise_text
from .metrics import rate

WINNING_P = 0.05


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar test: the discordant pairs against a fair coin, i.e. a two-sided binomial test
    with p = 1/2 (what scipy.stats.binomtest gives). The tail is summed in floats from its largest term down,
    each term from the last by a ratio, so 10,000 pairs take microseconds rather than sums of huge integers."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    if 2 * k >= n:
        return 1.0  # a tie: nothing is more extreme on either side
    # log of C(n, k) / 2^n, the largest term of the lower tail (k < n/2)
    term = math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2))
    tail = 0.0
    for i in range(k, -1, -1):
        tail += term
        term *= i / (n - i + 1)  # C(n, i-1) = C(n, i) * i / (n - i + 1)
        if term < tail * 1e-17:
            break  # the rest cannot change a double
    return float(min(1.0, 2 * tail))


def _values(label: dict[str, Any], attribute: str) -> frozenset[str]:
    entries = _dict(label.get("attributes")).get(attribute) or []
    return frozenset(e["value"] for e in entries if isinstance(e, dict) and e.get("value"))


def fields_of(label: dict[str, Any]) -> dict[str, Any]:
    """The comparable value of each field of a label (category id, value sets, normalised brand)."""
    out: dict[str, Any] = {"category": _dict(label.get("category")).get("id")}
    top = _dict(label.get("category")).get("path") or [None]
    out["category_top_level"] = top[0]
    for attribute in VOCABULARY_ATTRIBUTES:
        out[attribute] = _values(label, attribute)
    brand = label.get("brand")
    out["brand"] = normalise_text(brand) if isinstance(brand, str) else ""
    return out


def gold_fields(entry: GoldLabel, taxonomy: Any) -> dict[str, Any]:
    """The same fields from gold; a field the gold does not give is absent."""
    out: dict[str, Any] = {}
    if entry.category_id is not None:
        out["category"] = entry.category_id
        out["category_top_level"] = taxonomy.nodes[entry.category_id].path[0]
    for attribute, values in entry.attributes.items():
        out[attribute] = frozenset(values)
    if entry.brand is not None:
        out["brand"] = normalise_text(entry.brand)
    return out


@dataclass
class Comparison:
    both_ok: int = 0
    only_in: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: {"a": Counter(), "b": Counter()})
    total_ms: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})
    agree: dict[str, list[bool]] = field(default_factory=dict)
    # field -> (a right, b right) per record with gold for that field
    against_gold: dict[str, list[tuple[bool, bool]]] = field(default_factory=dict)
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def p50(values: list[float]) -> float | None:
            return sorted(values)[len(values) // 2] if values else None

        winners: dict[str, Any] = {}
        for name, pairs in self.against_gold.items():
            a_right = sum(a for a, _ in pairs)
            b_right = sum(b for _, b in pairs)
            a_only = sum(a and not b for a, b in pairs)
            b_only = sum(b and not a for a, b in pairs)
            p = mcnemar_p(a_only, b_only)
            winner = "a" if a_only > b_only else "b" if b_only > a_only else None
            winners[name] = {
                "n": len(pairs),
                "a_right": a_right / len(pairs),
                "b_right": b_right / len(pairs),
                "a_only_right": a_only,
                "b_only_right": b_only,
                "mcnemar_p": p,
                "winner": winner if winner and p < WINNING_P else None,
            }
        return {
            "both_ok": self.both_ok,
            "only_in_a": self.only_in["a"],
            "only_in_b": self.only_in["b"],
            "statuses": {side: dict(sorted(c.items())) for side, c in self.statuses.items()},
            "ms_per_image_p50": {side: p50(values) for side, values in self.total_ms.items()},
            "agreement": {name: rate(outcomes).as_json() for name, outcomes in self.agree.items()},
            "against_gold": winners,
            "disagreements": self.disagreements,
        }


def _by_path(records: Iterable[dict[str, Any]], side: str, result: Comparison) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        result.statuses[side][str(record.get("status"))] += 1
        timings = record.get("timings_ms")
        if isinstance(timings, dict) and isinstance(timings.get("total_ms"), int | float):
            result.total_ms[side].append(float(timings["total_ms"]))
        out[record["path"]] = record  # a later record of a path wins, as in merge
    return out


def compare(
    a_records: Iterable[dict[str, Any]],
    b_records: Iterable[dict[str, Any]],
    gold: GoldIndex | None,
    taxonomy: Any,
    examples: int = 10,
) -> Comparison:
    """Pairs records by path; fields are compared where both are `ok`."""
    result = Comparison()
    a, b = _by_path(a_records, "a", result), _by_path(b_records, "b", result)
    result.only_in = {"a": len(a.keys() - b.keys()), "b": len(b.keys() - a.keys())}
    for path in sorted(a.keys() & b.keys()):
        ra, rb = a[path], b[path]
        if ra.get("status") != OK or rb.get("status") != OK:
            continue
        result.both_ok += 1
        fa, fb = fields_of(_dict(ra.get("label"))), fields_of(_dict(rb.get("label")))
        differing = []
        for name in fa:
            same = fa[name] == fb[name]
            result.agree.setdefault(name, []).append(same)
            if not same:
                differing.append(name)
        if differing and len(result.disagreements) < examples:
            result.disagreements.append({
                "path": path,
                "fields": {n: {"a": _shown(fa[n]), "b": _shown(fb[n])} for n in differing},
            })  # fmt: skip
        entry = gold.find(ra) if gold is not None else None
        if entry is not None:
            for name, value in gold_fields(entry, taxonomy).items():
                result.against_gold.setdefault(name, []).append((fa[name] == value, fb[name] == value))
    return result


def _shown(value: Any) -> Any:
    return sorted(value) if isinstance(value, frozenset) else value
