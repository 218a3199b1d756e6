"""Reading record fields that may hold any JSON value (hand-edited or foreign records) without a crash."""

from __future__ import annotations

from typing import Any

import orjson


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: Any) -> str:
    """A cell from any JSON value a record may hold where text belongs."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
