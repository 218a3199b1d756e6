"""The package's data files and TOML parsing: one place for the Python 3.10 tomli fallback."""

from __future__ import annotations

import sys
from importlib import resources
from importlib.abc import Traversable
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

TOMLDecodeError = tomllib.TOMLDecodeError


def data_dir() -> Traversable:
    return resources.files("qvl_label").joinpath("data")


def data_text(name: str) -> str:
    return data_dir().joinpath(name).read_text(encoding="utf-8")


def parse_toml(text: str) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(text)
    return table
