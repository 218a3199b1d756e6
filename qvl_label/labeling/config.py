"""Label configuration: vocabularies, category templates, channels, compliance rules; built in or from a user file."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..datafiles import TOMLDecodeError, data_text, parse_toml
from ..errors import UsageError
from .taxonomy import Taxonomy, load_taxonomy
from .template_file import check_user_file
from .vocabularies import Vocabulary, build_vocabularies, builtin_vocabulary_table

GENERIC_TEMPLATE = "generic"
DEFAULT_CHANNEL = "generic"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    description: str
    enum: tuple[str, ...] | None = None
    is_list: bool = False
    max_length: int = 40
    max_items: int = 5

    def schema(self) -> dict[str, Any]:
        item: dict[str, Any] = (
            {"enum": list(self.enum)} if self.enum else {"type": "string", "maxLength": self.max_length}
        )
        if self.is_list:
            return {"type": "array", "items": item, "maxItems": self.max_items, "description": self.description}
        return {**item, "description": self.description}


@dataclass(frozen=True)
class Template:
    name: str
    categories: tuple[int, ...]
    prompt: str
    fields: tuple[FieldSpec, ...]

    def schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {"template": {"const": self.name}}
        properties.update({f.name: f.schema() for f in self.fields})
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }


@dataclass(frozen=True)
class Channel:
    name: str
    title_max: dict[str, int]
    emoji: bool
    style: str

    def title_limit(self, lang: str) -> int:
        return self.title_max.get(lang, self.title_max.get(lang.split("-")[0], self.title_max.get("default", 80)))


@dataclass(frozen=True)
class Rule:
    id: str
    lang: str
    kind: str
    terms: tuple[str, ...]
    suggestion: str
    replacements: dict[str, str]
    skip_categories: tuple[int, ...]
    drop_sentence: bool = False
    # Regular expressions for the contexts in which a term is a fact, not a claim (第一次, 最大承重
    # 100 kg, dog treats, DWR treatment): a match that covers a hit cancels it.
    exceptions: tuple[str, ...] = ()
    # Regular expressions for claims no single word gives away ("lose 10 pounds in two weeks",
    # 三天美白, "no side effects"): each match is flagged like a term.
    patterns: tuple[str, ...] = ()
    basis: str = ""  # the law or guidance the rule rests on (广告法 article, FTC or ASA guidance)


@dataclass
class LabelConfig:
    vocabularies: dict[str, Vocabulary]
    templates: dict[str, Template]
    channels: dict[str, Channel]
    rules: list[Rule]
    taxonomy: Taxonomy
    instructions: str = ""
    digest: str = ""
    sources: list[str] = field(default_factory=list)

    def template_for(self, category_id: int) -> Template:
        """The template of the nearest ancestor (or the node itself) that a template names."""
        category = self.taxonomy.nodes[category_id]
        for depth in range(len(category.path), 0, -1):
            node_id = self.taxonomy.by_path[category.path[:depth]]
            for template in self.templates.values():
                if node_id in template.categories:
                    return template
        return self.templates[GENERIC_TEMPLATE]

    def channel(self, name: str) -> Channel:
        if name not in self.channels:
            raise UsageError(f"unknown channel {name!r}; choose from {', '.join(self.channels)}")
        return self.channels[name]


def _data(name: str) -> dict[str, Any]:
    return parse_toml(data_text(name))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; arrays of tables (rules) are appended; other values are replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, list) and value and isinstance(value[0], dict) and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def _field(name: str, raw: dict[str, Any]) -> FieldSpec:
    enum = raw.get("enum")
    return FieldSpec(
        name=name,
        description=str(raw.get("description", name.replace("_", " "))),
        enum=tuple(str(v) for v in enum) if enum else None,
        is_list=raw.get("type") == "array",
        max_length=int(raw.get("maxLength", 40)),
        max_items=int(raw.get("maxItems", 5)),
    )


def build_config(tables: dict[str, Any], sources: list[str]) -> LabelConfig:
    try:
        templates = {
            name: Template(
                name=name,
                categories=tuple(int(c) for c in raw.get("categories", [])),
                prompt=str(raw.get("prompt", "")),
                fields=tuple(_field(fname, fraw) for fname, fraw in raw.get("fields", {}).items()),
            )
            for name, raw in tables["templates"].items()
        }
        channels = {
            name: Channel(
                name=name,
                title_max={str(k): int(v) for k, v in raw.get("title_max", {}).items()},
                emoji=bool(raw.get("emoji", False)),
                style=str(raw.get("style", "")),
            )
            for name, raw in tables["channels"].items()
        }
        rules = [
            Rule(
                id=str(raw["id"]),
                lang=str(raw["lang"]),
                kind=str(raw.get("kind", "forbidden wording")),
                terms=tuple(str(t) for t in raw["terms"]),
                suggestion=str(raw.get("suggestion", "")),
                replacements={str(k): str(v) for k, v in raw.get("replacements", {}).items()},
                skip_categories=tuple(int(c) for c in raw.get("skip_categories", [])),
                drop_sentence=raw.get("strict") == "drop-sentence",
                exceptions=tuple(str(e) for e in raw.get("exceptions", [])),
                patterns=tuple(str(p) for p in raw.get("patterns", [])),
                basis=str(raw.get("basis", "")),
            )
            for raw in tables["compliance"]["rules"]
        ]
        for rule in rules:
            for pattern in (*rule.exceptions, *rule.patterns):
                re.compile(pattern)
        vocabularies = build_vocabularies(*tables["vocabularies"])
    except re.error as exc:
        raise UsageError(f"invalid compliance exception pattern in {', '.join(sources)}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"invalid label configuration in {', '.join(sources)}: {exc!r}") from exc
    if GENERIC_TEMPLATE not in templates or DEFAULT_CHANNEL not in channels:
        raise UsageError("the label configuration must keep the 'generic' template and the 'generic' channel")
    taxonomy = load_taxonomy()
    aliases = {str(k): int(v) for k, v in tables.get("taxonomy", {}).get("aliases", {}).items()}
    if aliases:
        unknown_ids = sorted({v for v in aliases.values() if v not in taxonomy.nodes})
        if unknown_ids:
            raise UsageError(f"taxonomy aliases in {', '.join(sources)} name unknown taxonomy ids {unknown_ids}")
        # A copy: the built-in taxonomy is shared by every configuration, and its index is rebuilt with these.
        taxonomy = dataclasses.replace(taxonomy, aliases={**taxonomy.aliases, **aliases}, _index=None, _matches={})
    for template in templates.values():
        unknown = [c for c in template.categories if c not in taxonomy.nodes]
        if unknown:
            raise UsageError(f"template {template.name!r} names unknown taxonomy ids {unknown}")
    digest = hashlib.sha256(orjson.dumps(tables, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return LabelConfig(
        vocabularies=vocabularies,
        templates=templates,
        channels=channels,
        rules=rules,
        taxonomy=taxonomy,
        instructions=str(tables.get("prompt", {}).get("instructions", "")),
        digest=digest,
        sources=sources,
    )


def builtin_tables() -> dict[str, Any]:
    return {
        "vocabularies": [builtin_vocabulary_table()],  # a user file's entries add to these
        "templates": _data("templates.toml")["templates"],
        "channels": _data("channels.toml")["channels"],
        "compliance": {"rules": _data("compliance.toml")["rules"]},
        "prompt": {"instructions": ""},
    }


def load_config(user_file: Path | None = None) -> LabelConfig:
    """Built-in data, with a user TOML file merged over it (vocabularies, templates, channels, compliance, prompt)."""
    tables = builtin_tables()
    sources = ["built-in"]
    if user_file is not None:
        try:
            text = user_file.read_text(encoding="utf-8")
            user = parse_toml(text)
        except OSError as exc:
            raise UsageError(f"cannot read template file {user_file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise UsageError(f"template file {user_file} is not UTF-8 text") from None
        except TOMLDecodeError as exc:
            raise UsageError(f"template file {user_file} is not valid TOML: {exc}") from exc
        allowed = {"vocabularies", "templates", "channels", "compliance", "prompt", "taxonomy"}
        unknown = set(user) - allowed
        if unknown:
            raise UsageError(f"template file {user_file}: unknown section(s) {', '.join(sorted(unknown))}")
        check_user_file(user, text, str(user_file))
        extra_vocabulary = user.pop("vocabularies", None)
        tables = _merge(tables, user)
        if extra_vocabulary:
            tables["vocabularies"] = [*tables["vocabularies"], extra_vocabulary]
        sources.append(str(user_file))
    return build_config(tables, sources)
