"""The label schema: one definition that drives the model's grammar, the parser's validation and the docs."""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

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

ATTRIBUTE_FIELDS: dict[str, tuple[int, str]] = {
    # name: (max items, what the model is asked for)
    "colors": (4, "main colours of the product itself, most visible first"),
    "materials": (4, "materials you can see or read on the label"),
    "style": (4, "style words a shopper filters by"),
    "season": (4, "seasons it suits: spring, summer, autumn, winter or all-season"),
    "audience": (3, "who it is for: women, men, unisex, kids, baby or pets"),
    "usage_scenes": (4, "where or when it is used"),
}


def _strings(max_items: int, max_length: int, min_items: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string", "maxLength": max_length},
        "maxItems": max_items,
    }
    if min_items:
        schema["minItems"] = min_items
    return schema


def copy_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 60},
            "description": {"type": "string", "maxLength": 300},
            "selling_points": _strings(5, 60, min_items=3),
            "tags": _strings(10, 20),
        },
        "required": ["title", "description", "selling_points", "tags"],
        "additionalProperties": False,
    }


def answer_schema(languages: tuple[str, ...]) -> dict[str, Any]:
    """What the model must answer: attributes in English once, copy once per language."""
    properties: dict[str, Any] = {
        "category": _strings(4, 40, min_items=1),
    }
    for name, (max_items, _) in ATTRIBUTE_FIELDS.items():
        properties[name] = _strings(max_items, 30)
    properties["brand"] = {"type": "string", "maxLength": 40}
    properties["visible_text"] = _strings(8, 80)
    properties["copy"] = {
        "type": "object",
        "properties": {lang: copy_schema() for lang in languages},
        "required": list(languages),
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"qvl-label model answer v{SCHEMA_VERSION}",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Check value against the JSON Schema subset this project uses; returns the problems found."""
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
        problems.append(f"{path}: not one of {schema['enum']}")
    return problems


def clip_lengths(value: Any, schema: dict[str, Any]) -> Any:
    """Cut strings to their maxLength.

    The grammar bounds length while generating, but counts partial UTF-8 sequences
    differently from the decoded text; an over-long string is trimmed, not rejected.
    """
    kind = schema.get("type")
    if kind == "string" and isinstance(value, str) and "maxLength" in schema:
        return value[: schema["maxLength"]]
    if kind == "array" and isinstance(value, list):
        return [clip_lengths(item, schema.get("items", {})) for item in value]
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: clip_lengths(v, props[k]) if k in props else v for k, v in value.items()}
    return value
