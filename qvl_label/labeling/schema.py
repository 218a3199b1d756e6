"""The label schema: one definition that drives the model's grammar, the parser's validation and the docs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from .config import Channel, LabelConfig

SCHEMA_VERSION = 2

LANGUAGES: dict[str, str] = {
    "zh": "Simplified Chinese",
    "zh-Hant": "Traditional Chinese",
    "en": "English",
    "ja": "Japanese",
    "ko": "Korean",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "ru": "Russian",
    "tr": "Turkish",
    "ar": "Arabic",
    "th": "Thai",
    "vi": "Vietnamese",
    "id": "Indonesian",
    "ms": "Malay",
}


def parse_languages(value: str, option: str = "--lang") -> tuple[str, ...]:
    """Comma-separated language codes, each once, in order; a UsageError names `option` when one is unknown."""
    codes = tuple(dict.fromkeys(code.strip() for code in value.split(",") if code.strip()))
    if not codes:
        raise UsageError(f"{option} needs at least one language code")
    unknown = [c for c in codes if c not in LANGUAGES]
    if unknown:
        raise UsageError(f"unknown language code(s) {', '.join(unknown)}; supported: {', '.join(LANGUAGES)}")
    return codes


ATTRIBUTE_FIELDS: dict[str, tuple[int, str]] = {
    # name: (max items, what the model is asked for; also the schema's description)
    "colors": (4, "main colours of the product itself, most visible first, as a shopper would name the shade"),
    "materials": (4, "materials you can see or read on a label or the pack"),
    "patterns": (3, "surface pattern, e.g. solid, striped, plaid, floral or graphic print"),
    "style": (4, "style words a shopper filters by"),
    "season": (4, "seasons it suits: spring, summer, autumn, winter or all-season"),
    "audience": (3, "who it is for: women, men, unisex, kids, baby or pets"),
    "usage_scenes": (4, "where or when it is used"),
}

COPY_LIMITS = {"description": 300, "selling_point": 60, "tag": 20}


def _strings(max_items: int, max_length: int, description: str, min_items: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string", "maxLength": max_length},
        "maxItems": max_items,
        "description": description,
    }
    if min_items:
        schema["minItems"] = min_items
    return schema


def copy_schema(title_max: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            # never empty: a feed leaves out a product without a title or a description
            "title": {"type": "string", "minLength": 1, "maxLength": title_max, "description": "product title"},
            "description": {
                "type": "string",
                "minLength": 1,
                "maxLength": COPY_LIMITS["description"],
                "description": "one paragraph",
            },
            "selling_points": _strings(5, COPY_LIMITS["selling_point"], "3 to 5 short selling points", min_items=3),
            "tags": _strings(10, COPY_LIMITS["tag"], "search keywords"),
        },
        "required": ["title", "description", "selling_points", "tags"],
        "additionalProperties": False,
    }


PHOTO_ROLES = ("main", "detail", "label", "packaging", "scene", "size_chart")


def product_schema(schema: dict[str, Any], photos: int) -> dict[str, Any]:
    """The answer schema for several photos of one product: the same label, plus each photo's role in order."""
    roles = {
        "type": "array",
        "items": {"enum": list(PHOTO_ROLES)},
        "minItems": photos,
        "maxItems": photos,
        "description": "the role of each photo, in the order shown",
    }
    return {
        **schema,
        "properties": {**schema["properties"], "photo_roles": roles},
        "required": [*schema["required"], "photo_roles"],
    }


SCENES = ("single", "set", "outfit")
MAX_ITEMS = 4  # other products in one photo: each costs about 270 answer tokens at most


def _category_schema(config: LabelConfig, depth: int, length: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "top": {"enum": config.taxonomy.top_levels, "description": "top level of the Google Product Taxonomy"},
            "path": _strings(depth, length, "deeper levels, general to specific, in English"),
        },
        "required": ["top", "path"],
        "additionalProperties": False,
    }


def items_schema(config: LabelConfig) -> dict[str, Any]:
    """The other products for sale in the photo (a set, an outfit): a category, colours, materials, a short title."""
    item = {
        "type": "object",
        "properties": {
            "category": _category_schema(config, 2, 30),
            "colors": _strings(2, 16, "main colours"),
            "materials": _strings(2, 16, "visible materials"),
            "title": {"type": "string", "maxLength": 40, "description": "a short English title"},
        },
        "required": ["category", "colors", "materials", "title"],
        "additionalProperties": False,
    }
    return {
        "type": "array",
        "items": item,
        "maxItems": MAX_ITEMS,
        "description": "the other distinct products for sale in the photo; empty for a single product",
    }


def answer_schema(languages: tuple[str, ...], config: LabelConfig, channel: Channel) -> dict[str, Any]:
    """What the model must answer: category and attributes once, copy once per language."""
    properties: dict[str, Any] = {
        "scene": {"enum": list(SCENES), "description": "one product, a set sold together, or an outfit"},
        "category": _category_schema(config, 4, 40),
    }
    for name, (max_items, hint) in ATTRIBUTE_FIELDS.items():
        properties[name] = _strings(max_items, 30, hint)
    properties["details"] = {
        "anyOf": [template.schema() for template in config.templates.values()],
        "description": "attributes of the category's template",
    }
    properties["brand"] = {"type": "string", "maxLength": 40, "description": "brand if legible, else empty"}
    properties["visible_text"] = _strings(8, 80, "text printed on the product or pack, verbatim")
    properties["copy"] = {
        "type": "object",
        "properties": {lang: copy_schema(channel.title_limit(lang)) for lang in languages},
        "required": list(languages),
        "additionalProperties": False,
    }
    properties["items"] = items_schema(config)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"qvl-label model answer v{SCHEMA_VERSION}",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def max_answer_tokens(schema: dict[str, Any]) -> int:
    """The default output budget: the largest compact answer the schema allows, one token per
    character of every string at its maxLength and one per byte of everything else.

    Key names, enum words, quotes and separators are counted at one token per byte (a token
    is never less than a byte); string contents at one token per character, which the Qwen
    tokenizer stays under for zh, ja and Latin-script text (tests/test_labels.py checks
    schema-maximal zh and en answers). The engine reserves this many cells per sequence.
    """
    if "anyOf" in schema:
        return max(max_answer_tokens(branch) for branch in schema["anyOf"])
    if "const" in schema:
        return _json_bytes(schema["const"])
    if "enum" in schema:
        return max(_json_bytes(value) for value in schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        members = sum(_json_bytes(name) + 1 + max_answer_tokens(sub) for name, sub in props.items())
        return 2 + max(len(props) - 1, 0) + members
    if kind == "array":
        items = int(schema["maxItems"])
        return 2 + max(items - 1, 0) + items * max_answer_tokens(schema.get("items", {}))
    if kind == "string":
        return 2 + int(schema["maxLength"])
    raise ValueError(f"no bound for a schema node without maxLength/maxItems: {sorted(schema)}")


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Check value against the JSON Schema subset this project uses; returns the problems found."""
    if "anyOf" in schema:
        branches = [validate(value, branch, path) for branch in schema["anyOf"]]
        if any(not problems for problems in branches):
            return []
        return [f"{path}: matches none of the {len(branches)} allowed shapes"]
    problems: list[str] = []
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}.{name}: missing")
        if schema.get("additionalProperties") is False:
            problems.extend(f"{path}.{name}: not allowed" for name in value if name not in props)
        for name, sub in props.items():
            if name in value:
                problems.extend(validate(value[name], sub, f"{path}.{name}"))
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            problems.extend(validate(item, schema.get("items", {}), f"{path}[{i}]"))
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string"]
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: longer than {schema['maxLength']} characters")
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{path}: shorter than {schema['minLength']} characters")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: not one of the allowed values")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: must be {schema['const']!r}")
    return problems


def record_label_schema(languages: tuple[str, ...]) -> dict[str, Any]:
    """The shape of `label` in an output record (documentation for consumers)."""
    normalised = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"raw": {"type": "string"}, "value": {"type": ["string", "null"]}},
            "required": ["raw", "value"],
        },
    }
    copy_entry = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "selling_points": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"qvl-label record label v{SCHEMA_VERSION}",
        "type": "object",
        "properties": {
            "category": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "description": "Google Product Taxonomy id (2021-09-21)"},
                    "path": {"type": "array", "items": {"type": "string"}, "description": "English path"},
                    "names": {"type": "object", "description": "path per non-English language"},
                    "raw": {"type": "array", "items": {"type": "string"}, "description": "the model's own path"},
                    "match": {"type": "number", "description": "0..1 confidence of the mapping"},
                },
            },
            "attributes": {"type": "object", "properties": dict.fromkeys(ATTRIBUTE_FIELDS, normalised)},
            "details": {"type": ["object", "null"], "description": "{template, fields} of the category template"},
            "brand": {"type": ["string", "null"]},
            "visible_text": {"type": "array", "items": {"type": "string"}},
            "copy": {"type": "object", "properties": dict.fromkeys(languages, copy_entry)},
            "compliance": {"type": "object", "description": "{flags: [...], rewritten: bool}"},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    }
