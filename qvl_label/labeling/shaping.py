"""Turns a validated model answer into the record's label: taxonomy, attributes, details, copy, compliance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .compliance import check_copy, strip_emoji
from .config import Channel, LabelConfig
from .schema import ATTRIBUTE_FIELDS
from .taxonomy import category_record
from .vocabularies import normalised_list


def clean_list(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        text = " ".join(value.split())
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


def clean_text(value: str) -> str:
    return " ".join(value.split())


# What models write when they see no brand; such a value means "no brand", not a brand called "N/A".
NO_BRAND = frozenset(
    {"n/a", "na", "n.a.", "none", "no", "null", "nil", "unknown", "not visible", "no brand", "unbranded",
     "generic", "-", "--", "—", "?", "无", "没有", "不详", "未知", "无品牌", "不可见", "看不清", "なし", "不明",
     "keine", "unbekannt"}
)  # fmt: skip


def clean_brand(value: str) -> str | None:
    text = clean_text(value)
    if not text or text.casefold().strip(" .。") in NO_BRAND or text.casefold() in NO_BRAND:
        return None
    return text


@dataclass(frozen=True)
class LabelShaper:
    config: LabelConfig
    channel: Channel
    languages: tuple[str, ...]
    strict: bool = False

    def shape(self, answer: dict[str, Any]) -> dict[str, Any]:
        warnings: list[str] = []
        taxonomy = self.config.taxonomy
        category = self._category(answer["category"])
        attributes = self._attributes(answer, ATTRIBUTE_FIELDS)
        details = self._details(answer["details"], category["id"], warnings)
        copy = {
            lang: {
                "title": clean_text(text["title"]),
                "description": clean_text(text["description"]),
                "selling_points": clean_list(text["selling_points"]),
                "tags": clean_list(text["tags"]),
            }
            for lang, text in answer["copy"].items()
        }
        if not self.channel.emoji and strip_emoji(copy):
            warnings.append(f"emoji removed: the {self.channel.name} channel does not allow them")
        node = taxonomy.nodes[category["id"]]
        ancestors = {taxonomy.by_path[node.path[:d]] for d in range(1, len(node.path) + 1)}
        flags, compliance_warnings = check_copy(copy, self.config.rules, ancestors, self.strict)
        warnings += compliance_warnings
        brand = clean_brand(answer["brand"])
        items = [
            {
                "category": self._category(item["category"]),
                "attributes": self._attributes(item, ("colors", "materials")),
                "title": clean_text(item["title"]),
            }
            for item in answer.get("items", [])
        ]
        return {
            "scene": answer.get("scene", "single"),
            "items": items,
            "category": category,
            "attributes": attributes,
            "details": details,
            "brand": brand,
            "visible_text": [t.strip() for t in answer["visible_text"] if t.strip()],
            "copy": copy,
            "compliance": {"flags": flags, "rewritten": any(f["action"] not in ("flagged", "kept") for f in flags)},
            "warnings": warnings,
        }

    def _category(self, raw: dict[str, Any]) -> dict[str, Any]:
        return category_record(self.config.taxonomy, raw["top"], clean_list(raw["path"]), self.languages)

    def _attributes(self, raw: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """Each attribute's values: the model's wording and the vocabulary id it maps to."""
        return {name: normalised_list(self.config.vocabularies.get(name), clean_list(raw[name])) for name in names}

    def _details(self, raw: dict[str, Any], category_id: int, warnings: list[str]) -> dict[str, Any] | None:
        """Template fields, kept only when the model's template is the one its category calls for."""
        expected = self.config.template_for(category_id)
        chosen = raw.get("template")
        if chosen != expected.name:
            warnings.append(f"details for template {chosen!r} dropped: the category uses {expected.name!r}")
            return None
        fields: dict[str, Any] = {}
        for spec in expected.fields:
            value = raw.get(spec.name)
            fields[spec.name] = clean_list(value) if isinstance(value, list) else clean_text(str(value or ""))
        return {"template": expected.name, "fields": fields}
