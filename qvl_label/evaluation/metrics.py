"""Scores of a run's records against gold: category, vocabulary attributes, brand, text, copy, statuses, speed."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labeling.config import LabelConfig
from ..labeling.vocabularies import VOCABULARY_ATTRIBUTES
from ..pipeline.records import OK
from ..store.values import as_dict as _dict
from .gold import GoldIndex, GoldLabel, normalise_text, tokens

BOOTSTRAP_SAMPLES = 1000  # for F1 and mean scores, which have no closed-form interval
BOOTSTRAP_SEED = 7  # fixed: the same records give the same interval every time
BOOTSTRAP_CHUNK = 50  # resamples drawn at once: 50 x n indices, a few MB at n = 10,000
Z95 = 1.959963984540054  # the normal quantile of 0.975
SCRIPTS = {
    "zh": re.compile(r"[\u3400-\u9fff]"),
    "ja": re.compile(r"[\u3040-\u30ff]"),
    "ko": re.compile(r"[\uac00-\ud7af]"),
    "ru": re.compile(r"[\u0400-\u04ff]"),
    "ar": re.compile(r"[\u0600-\u06ff]"),
    "th": re.compile(r"[\u0e00-\u0e7f]"),
}
LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
LETTER = re.compile(r"[^\W\d_]")


@dataclass
class Rate:
    """A share of records with its 95% Wilson score interval."""

    hits: int
    total: int
    low: float | None = None
    high: float | None = None

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "hits": self.hits, "n": self.total, "ci95": [self.low, self.high]}


def wilson(hits: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion: a closed form that stays honest at 0/n and n/n
    (0/10 gives 0-27.8%, where resampling gives 0-0%), with coverage close to 95% for small n."""
    share = hits / total
    z2 = Z95 * Z95
    scale = 1 + z2 / total
    centre = (share + z2 / (2 * total)) / scale
    half = Z95 * math.sqrt(share * (1 - share) / total + z2 / (4 * total * total)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(outcomes: list[bool]) -> Rate:
    result = Rate(sum(outcomes), len(outcomes))
    if outcomes:
        result.low, result.high = wilson(result.hits, result.total)
    return result


def bootstrap_sums(columns: Sequence[Sequence[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Column sums over BOOTSTRAP_SAMPLES resamples of the rows (with replacement): shape (samples, columns).
    Vectorised (one index draw per chunk of resamples, one gather per column), so 10,000 records take a
    fraction of a second."""
    table = [np.asarray(column, dtype=np.float64) for column in columns]
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(table[0])
    chunks = []
    for done in range(0, BOOTSTRAP_SAMPLES, BOOTSTRAP_CHUNK):
        rows = rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, BOOTSTRAP_SAMPLES - done), n), dtype=np.int32)
        chunks.append(np.stack([np.take(column, rows).sum(axis=1) for column in table], axis=1))
    return np.concatenate(chunks)


def percentile_interval(values: np.ndarray[Any, np.dtype[np.float64]]) -> tuple[float, float]:
    ordered = np.sort(values)
    return float(ordered[int(0.025 * len(ordered))]), float(ordered[int(0.975 * len(ordered)) - 1])


def mean_interval(values: list[float]) -> tuple[float, float]:
    """95% percentile bootstrap interval of a mean."""
    return percentile_interval(bootstrap_sums([values])[:, 0] / len(values))


def f1_interval(pairs: list[tuple[set[str], set[str]]]) -> tuple[float, float]:
    """95% percentile bootstrap interval of micro F1 (2tp / (2tp + fp + fn)), records resampled."""
    tp = [len(p & g) for p, g in pairs]
    fp = [len(p - g) for p, g in pairs]
    fn = [len(g - p) for p, g in pairs]
    sums = bootstrap_sums([tp, fp, fn])
    denominator = 2 * sums[:, 0] + sums[:, 1] + sums[:, 2]
    f1 = np.divide(2 * sums[:, 0], denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return percentile_interval(f1)


@dataclass
class SetScores:
    """Precision, recall and F1 of predicted value sets against gold sets, micro (all values) and macro (per value)."""

    pairs: list[tuple[set[str], set[str]]] = field(default_factory=list)  # (predicted, gold) per record
    raw_entries: int = 0
    unmapped_entries: int = 0

    def micro(self, pairs: list[tuple[set[str], set[str]]] | None = None) -> tuple[float, float, float]:
        pairs = self.pairs if pairs is None else pairs
        tp = sum(len(p & g) for p, g in pairs)
        fp = sum(len(p - g) for p, g in pairs)
        fn = sum(len(g - p) for p, g in pairs)
        return _prf(tp, fp, fn)

    def macro(self) -> tuple[float, float, float]:
        counts: dict[str, list[int]] = {}
        for predicted, gold in self.pairs:
            for value in predicted | gold:
                tp_fp_fn = counts.setdefault(value, [0, 0, 0])
                tp_fp_fn[0] += value in predicted and value in gold
                tp_fp_fn[1] += value in predicted and value not in gold
                tp_fp_fn[2] += value in gold and value not in predicted
        if not counts:
            return 0.0, 0.0, 0.0
        scores = [_prf(*c) for c in counts.values()]
        return tuple(sum(s[i] for s in scores) / len(scores) for i in range(3))  # type: ignore[return-value]

    def as_json(self) -> dict[str, Any]:
        micro, macro = self.micro(), self.macro()
        f1_low, f1_high = f1_interval(self.pairs) if len(self.pairs) >= 2 else (None, None)
        return {
            "n": len(self.pairs),
            "micro": {"precision": micro[0], "recall": micro[1], "f1": micro[2], "f1_ci95": [f1_low, f1_high]},
            "macro": {"precision": macro[0], "recall": macro[1], "f1": macro[2]},
            "raw_unmapped": self.unmapped_entries / self.raw_entries if self.raw_entries else None,
        }


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def token_f1(predicted: str, gold: str) -> float:
    p, g = Counter(tokens(predicted)), Counter(tokens(gold))
    if not p and not g:
        return 1.0
    overlap = sum((p & g).values())
    return _prf(overlap, sum(p.values()) - overlap, sum(g.values()) - overlap)[2]


def language_ok(text: str, lang: str) -> bool:
    """The copy is written in the script its language uses (a script check, not a language identifier)."""
    letters = LETTER.findall(text)
    if not letters:
        return True  # nothing to judge (an empty title is a length matter)
    script = SCRIPTS.get(lang.split("-")[0])
    if script is None:  # Latin-script languages: most letters Latin
        return sum(bool(LATIN.match(ch)) for ch in letters) / len(letters) >= 0.6
    if lang.startswith("ja"):
        return bool(script.search(text)) or bool(SCRIPTS["zh"].search(text))
    return bool(script.search(text))


@dataclass
class Evaluation:
    """Everything `qvl-label eval` reports; `as_json` is the --json output."""

    records: int = 0
    matched: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    category: dict[str, list[bool]] = field(default_factory=dict)
    attributes: dict[str, SetScores] = field(default_factory=dict)
    brand_exact: list[bool] = field(default_factory=list)
    brand_f1: list[float] = field(default_factory=list)
    text_exact: list[bool] = field(default_factory=list)
    text_f1: list[float] = field(default_factory=list)
    title_f1: dict[str, list[float]] = field(default_factory=dict)
    copy_within_limits: list[bool] = field(default_factory=list)
    copy_language: dict[str, list[bool]] = field(default_factory=dict)
    compliance_flags: int = 0
    ok_records: int = 0
    total_ms: list[float] = field(default_factory=list)
    top_levels: Counter[tuple[str, str]] = field(default_factory=Counter)  # (gold top, predicted top)
    worst: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        def mean_ci(values: list[float]) -> list[float | None]:
            return list(mean_interval(values)) if len(values) >= 2 else [None, None]

        timings = sorted(self.total_ms)
        return {
            "records": self.records,
            "matched_with_gold": self.matched,
            "statuses": {k: v / self.records for k, v in sorted(self.statuses.items())} if self.records else {},
            "category": {name: rate(outcomes).as_json() for name, outcomes in self.category.items()},
            "attributes": {name: scores.as_json() for name, scores in self.attributes.items() if scores.pairs},
            "brand": {
                "exact": rate(self.brand_exact).as_json(),
                "token_f1": mean(self.brand_f1),
                "token_f1_ci95": mean_ci(self.brand_f1),
            },
            "visible_text": {
                "exact": rate(self.text_exact).as_json(),
                "token_f1": mean(self.text_f1),
                "token_f1_ci95": mean_ci(self.text_f1),
            },
            "titles": {lang: {"token_f1": mean(v), "n": len(v)} for lang, v in sorted(self.title_f1.items())},
            "copy": {
                "within_length_limits": rate(self.copy_within_limits).as_json(),
                "language_script": {lang: rate(v).as_json() for lang, v in sorted(self.copy_language.items())},
                "compliance_flags_per_100": 100 * self.compliance_flags / self.ok_records if self.ok_records else None,
            },
            "speed_ms": {
                "n": len(timings),
                "mean": mean(timings),
                "p50": timings[len(timings) // 2] if timings else None,
                "p95": timings[min(len(timings) - 1, int(0.95 * len(timings)))] if timings else None,
            },
            "top_level_confusion": [[g, p, n] for (g, p), n in sorted(self.top_levels.items())],
            "worst": self.worst,
        }


def evaluate(
    records: Iterable[dict[str, Any]], gold: GoldIndex, config: LabelConfig, channel: str, worst: int = 10
) -> Evaluation:
    """Score every record that has gold; statuses, speed and copy checks cover every record."""
    result = Evaluation()
    limits = config.channel(channel)
    taxonomy = config.taxonomy
    misses: list[tuple[float, dict[str, Any]]] = []
    for record in records:
        result.records += 1
        result.statuses[str(record.get("status"))] += 1
        timings = record.get("timings_ms")
        if isinstance(timings, dict) and isinstance(timings.get("total_ms"), int | float):
            result.total_ms.append(float(timings["total_ms"]))
        label = record.get("label")
        if record.get("status") != OK or not isinstance(label, dict):
            continue
        result.ok_records += 1
        compliance = label.get("compliance")
        if isinstance(compliance, dict):
            result.compliance_flags += len(compliance.get("flags") or [])
        for lang, block in _dict(label.get("copy")).items():
            if isinstance(block, dict) and isinstance(block.get("title"), str):
                result.copy_within_limits.append(len(block["title"]) <= limits.title_limit(lang))
                text = " ".join([block["title"], str(block.get("description") or "")])
                result.copy_language.setdefault(lang, []).append(language_ok(text, lang))
        entry = gold.find(record)
        if entry is None:
            continue
        result.matched += 1
        score = _score(result, record, label, entry, taxonomy)
        misses.append(
            (score, {"path": record.get("path"), "score": round(score, 3), **_summary(label, entry, taxonomy)})
        )
    misses.sort(key=lambda item: item[0])
    result.worst = [m for score, m in misses[:worst] if score < 1.0]  # a record with every field right is no example
    return result


def _score(result: Evaluation, record: dict[str, Any], label: dict[str, Any], entry: GoldLabel, taxonomy: Any) -> float:
    """Adds one record's outcomes; returns its share of fields right, to find the worst examples."""
    right: list[float] = []
    category = _dict(label.get("category"))
    predicted_id = category.get("id")
    if entry.category_id is not None and isinstance(predicted_id, int) and predicted_id in taxonomy.nodes:
        gold_node, predicted_node = taxonomy.nodes[entry.category_id], taxonomy.nodes[predicted_id]
        exact = predicted_id == entry.category_id
        outcomes = {
            "exact": exact,
            "same_top_level": gold_node.path[0] == predicted_node.path[0],
            "prediction_is_ancestor": predicted_id in taxonomy.ancestors(gold_node),  # right, less specific
            "gold_is_ancestor": entry.category_id in taxonomy.ancestors(predicted_node),  # more specific than gold
        }
        for name, hit in outcomes.items():
            result.category.setdefault(name, []).append(hit)
        result.top_levels[(gold_node.path[0], predicted_node.path[0])] += 1
        right.append(float(exact))
    attributes = _dict(label.get("attributes"))
    for attribute in VOCABULARY_ATTRIBUTES:
        scores = result.attributes.setdefault(attribute, SetScores())
        entries = [e for e in attributes.get(attribute) or [] if isinstance(e, dict)]
        scores.raw_entries += len(entries)
        scores.unmapped_entries += sum(1 for e in entries if not e.get("value"))
        if attribute in entry.attributes:
            predicted = {e["value"] for e in entries if e.get("value")}
            scores.pairs.append((predicted, entry.attributes[attribute]))
            right.append(float(predicted == entry.attributes[attribute]))
    if entry.brand is not None:
        brand = label["brand"] if isinstance(label.get("brand"), str) else ""
        result.brand_exact.append(normalise_text(brand) == normalise_text(entry.brand))
        result.brand_f1.append(token_f1(brand, entry.brand))
        right.append(float(result.brand_exact[-1]))
    if entry.visible_text is not None:
        seen = [t for t in label.get("visible_text") or [] if isinstance(t, str)]
        result.text_exact.append({normalise_text(t) for t in seen} == {normalise_text(t) for t in entry.visible_text})
        result.text_f1.append(token_f1(" ".join(seen), " ".join(entry.visible_text)))
        right.append(result.text_f1[-1])
    for lang, title in entry.titles.items():
        block = _dict(label.get("copy")).get(lang)
        if isinstance(block, dict) and isinstance(block.get("title"), str):
            result.title_f1.setdefault(lang, []).append(token_f1(block["title"], title))
    return sum(right) / len(right) if right else 1.0


def _summary(label: dict[str, Any], entry: GoldLabel, taxonomy: Any) -> dict[str, Any]:
    category = _dict(label.get("category"))
    attributes = _dict(label.get("attributes"))
    gold_path = list(taxonomy.nodes[entry.category_id].path) if entry.category_id is not None else None
    return {
        "category": {"predicted": category.get("path"), "gold": gold_path},
        "attributes": {
            name: {
                "predicted": sorted(e["value"] for e in attributes.get(name) or [] if _dict(e).get("value")),
                "gold": sorted(values),
            }
            for name, values in entry.attributes.items()
        },
        "brand": {"predicted": label.get("brand"), "gold": entry.brand} if entry.brand is not None else None,
    }
