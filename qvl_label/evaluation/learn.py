"""Reviewers' corrections as data for the next run: synonyms, category aliases and shop rules in a --template file."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from ..labeling.config import LabelConfig
from ..labeling.taxonomy import Taxonomy
from ..labeling.taxonomy_words import Category
from ..labeling.vocabularies import VOCABULARY_ATTRIBUTES
from ..pipeline.records import OK
from ..store.values import as_dict as _dict
from .gold import GoldIndex, normalise_text

MAX_WORDING = 60  # the template file's limit for a synonym, an alias or a rule term
WORD = re.compile(r"\w+", re.UNICODE)
RULE_LANGUAGE = re.compile(r"[a-zA-Z-]{2,10}")  # what a template file's [[compliance.rules]] lang accepts


@dataclass
class Lessons:
    synonyms: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)  # attribute -> value -> raw wordings
    aliases: dict[str, Counter[int]] = field(default_factory=dict)  # model wording -> gold category ids
    alias_paths: dict[str, list[list[str]]] = field(default_factory=dict)  # wording -> the raw paths it came from
    unusable_aliases: int = 0  # wordings the mapping would not apply (a top-level name, an exact path): not kept
    removed: dict[str, Counter[str]] = field(default_factory=dict)  # language -> phrases reviewers took out
    records: int = 0


def _removed_phrases(predicted: str, reviewed: str) -> list[str]:
    """Runs of words in the model's copy that the reviewer's copy does not have (whole words, in order)."""
    kept = {normalise_text(w) for w in WORD.findall(reviewed)}
    phrases: list[str] = []
    run: list[str] = []
    for word in WORD.findall(predicted):
        if normalise_text(word) in kept:
            if run:
                phrases.append(" ".join(run))
                run = []
        else:
            run.append(word)
    if run:
        phrases.append(" ".join(run))
    return [p for p in phrases if 1 < len(p) <= MAX_WORDING]


def learn(records: Iterable[dict[str, Any]], gold: GoldIndex, config: LabelConfig) -> Lessons:
    """What the reviewed records teach: unambiguous corrections only, so a lesson is never a guess."""
    lessons = Lessons()
    for record in records:
        label = _dict(record.get("label"))
        entry = gold.find(record) if record.get("status") == OK else None
        if entry is None:
            continue
        lessons.records += 1
        attributes = _dict(label.get("attributes"))
        for attribute in VOCABULARY_ATTRIBUTES:
            vocabulary = config.vocabularies.get(attribute)
            if attribute not in entry.attributes or vocabulary is None:
                continue
            entries = [e for e in attributes.get(attribute) or [] if isinstance(e, dict)]
            predicted = {e["value"] for e in entries if e.get("value")}
            missing = [v for v in entry.attributes[attribute] - predicted if v in vocabulary.values]
            unmapped = [e["raw"] for e in entries if not e.get("value") and isinstance(e.get("raw"), str)]
            # One wording no value took, one value the reviewer added: that wording means that value.
            if len(missing) == 1 and len(unmapped) == 1 and 0 < len(unmapped[0].strip()) <= MAX_WORDING:
                values = lessons.synonyms.setdefault(attribute, {})
                values.setdefault(missing[0], Counter())[unmapped[0].strip()] += 1
        category = _dict(label.get("category"))
        raw = [r for r in category.get("raw") or [] if isinstance(r, str) and r.strip()]
        if entry.category_id is not None and category.get("id") != entry.category_id and raw:
            wording = raw[-1].strip()  # the model's most specific level
            if len(wording) <= MAX_WORDING and normalise_text(wording):
                lessons.aliases.setdefault(wording, Counter())[entry.category_id] += 1
                lessons.alias_paths.setdefault(wording, []).append(raw)
        copy = _dict(label.get("copy"))
        for lang, title in entry.titles.items():
            predicted_title = _dict(copy.get(lang)).get("title")
            if isinstance(predicted_title, str):
                for phrase in _removed_phrases(predicted_title, title):
                    lessons.removed.setdefault(lang, Counter())[phrase] += 1
    _keep_applicable_aliases(lessons, config.taxonomy)
    return lessons


def _keep_applicable_aliases(lessons: Lessons, taxonomy: Taxonomy) -> None:
    """Keep an alias only when `eval --remap` (and the labeller) would map a path it came from onto the
    reviewers' category with it: a wording that names a top level, or a path the taxonomy has exactly,
    never reaches the aliases, and a file promising what the mapping never does is a defect."""
    if not lessons.aliases:
        return
    chosen = {wording: ids.most_common(1)[0][0] for wording, ids in lessons.aliases.items()}
    trial = dataclasses.replace(taxonomy, aliases={**taxonomy.aliases, **chosen}, _index=None, _matches={})
    for wording, target in chosen.items():
        mapped = (remapped_category(trial, raw) for raw in lessons.alias_paths.get(wording, []))
        if not any(node is not None and node.id == target for node, _ in mapped):
            del lessons.aliases[wording]
            lessons.unusable_aliases += 1


def remapped_category(taxonomy: Taxonomy, raw: list[str]) -> tuple[Category | None, float]:
    """The node the model's category wording maps onto, as the labeller maps it: None when its first level
    is not a top level (the labeller's grammar only lets the model answer a top level there)."""
    if not raw or (raw[0],) not in taxonomy.by_path:
        return None, 0.0
    return taxonomy.match(raw[0], raw[1:])


def _shown(text: str) -> str:
    """Wording inside a TOML comment: JSON-quoted, so a newline or a control character cannot end the
    comment and start a section of its own."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _counts(counter: Counter[str], kept: list[str]) -> str:
    return ", ".join(f"{_shown(w)} x{counter[w]}" for w in kept)


def to_toml(lessons: Lessons, source: str, min_count: int = 1) -> str:
    """A --template file a person can read and edit: every entry says how often reviewers taught it.
    The tables are written by tomli-w (wording is data, quoted and escaped by a TOML writer); the comments
    above them are ours, with any wording in them JSON-quoted."""
    parts = [
        f"# Learnt by `qvl-label learn` from {lessons.records} reviewed records ({_shown(source)}).\n"
        "# Edit freely: delete a line to forget it. Use with: qvl-label batch ... --template this.toml\n"
    ]
    for attribute, values in sorted(lessons.synonyms.items()):
        for value, wordings in sorted(values.items()):
            kept = [w for w, n in wordings.most_common() if n >= min_count]
            if kept:
                table = {"vocabularies": {attribute: {value: {"synonyms": kept}}}}
                parts.append(f"# reviewers mapped: {_counts(wordings, kept)}\n" + tomli_w.dumps(table))
    aliases = {w: ids.most_common(1)[0] for w, ids in lessons.aliases.items()}
    aliases = {w: (i, n) for w, (i, n) in sorted(aliases.items()) if n >= min_count}
    if aliases:
        taught = ", ".join(f"{_shown(w)} x{n}" for w, (_, n) in aliases.items())
        parts.append(
            f"# the model's category wording -> the category reviewers chose (times): {taught}\n"
            + tomli_w.dumps({"taxonomy": {"aliases": {w: i for w, (i, _) in aliases.items()}}})
        )
    for lang, phrases in sorted(lessons.removed.items()):
        kept = [p for p, n in phrases.most_common() if n >= min_count]
        if kept and RULE_LANGUAGE.fullmatch(lang):  # a gold file's own key: the template file's rule for a lang
            rule = {"id": f"shop-removed-{lang}", "lang": lang, "kind": "wording reviewers removed", "terms": kept}
            parts.append(
                f"# phrases reviewers took out of {_shown(lang)} titles: {_counts(phrases, kept)}\n"
                + tomli_w.dumps({"compliance": {"rules": [rule]}})
            )
    return "\n".join(parts)


def remapped(records: Iterable[dict[str, Any]], config: LabelConfig) -> Iterable[dict[str, Any]]:
    """Records whose category and attribute values are derived again from the model's own wording with
    this configuration: what a template changes in the mapping layer, without running the model again."""
    taxonomy = config.taxonomy
    for record in records:
        label = _dict(record.get("label"))
        if record.get("status") != OK or not label:
            yield record
            continue
        label = dict(label)
        attributes = {}
        for attribute, entries in _dict(label.get("attributes")).items():
            vocabulary = config.vocabularies.get(attribute)
            if vocabulary is None or not isinstance(entries, list):
                attributes[attribute] = entries
                continue
            attributes[attribute] = [
                {**e, "value": vocabulary.normalise(e["raw"])} if isinstance(e, dict) and isinstance(e.get("raw"), str)
                else e
                for e in entries
            ]  # fmt: skip
        label["attributes"] = attributes
        category = _dict(label.get("category"))
        node, score = remapped_category(taxonomy, [r for r in category.get("raw") or [] if isinstance(r, str)])
        if node is not None:
            label["category"] = {**category, "id": node.id, "path": list(node.path), "match": round(score, 2)}
        yield {**record, "label": label}
