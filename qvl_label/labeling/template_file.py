"""The schema of a user's --template file, checked with pydantic before anything of it is used."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from ..errors import UsageError

# Field names become JSON keys in the grammar and values become grammar literals: the GBNF
# converter does not escape quotes or backslashes, so such text is refused here.
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Literal_ = Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=r'^[^"\\\x00-\x1f\x7f]+$')]
Text = Annotated[str, StringConstraints(max_length=2000)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=60)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FieldFile(_Strict):
    description: Text | None = None
    enum: Annotated[list[Literal_], Field(min_length=1, max_length=100)] | None = None
    type: Literal["string", "array"] | None = None
    maxLength: Annotated[int, Field(ge=1, le=500)] = 40
    maxItems: Annotated[int, Field(ge=1, le=50)] = 5


class TemplateFile(_Strict):
    categories: list[Annotated[int, Field(ge=1)]] = []
    prompt: Text = ""
    fields: dict[FieldName, FieldFile] = {}


class ChannelFile(_Strict):
    title_max: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-zA-Z-]{2,10}$")], Annotated[int, Field(ge=1, le=500)]
    ]
    emoji: bool = False
    style: Text = ""

    @field_validator("title_max")
    @classmethod
    def _has_default(cls, value: dict[str, int]) -> dict[str, int]:
        if "default" not in value:
            raise ValueError("needs a `default` length")
        return value


class ValueFile(BaseModel):
    """One vocabulary value: display names per language (`en = "teal"`) and synonyms."""

    model_config = ConfigDict(extra="allow", strict=True)
    synonyms: Annotated[list[Word], Field(max_length=500)] = []

    @field_validator("synonyms", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # "text" would otherwise be one synonym per character somewhere
            raise ValueError('synonyms is a list of words, e.g. synonyms = ["teal", "duck egg"]')
        return value

    def model_post_init(self, context: Any) -> None:
        for key, value in (self.model_extra or {}).items():
            if not re.fullmatch(r"[a-zA-Z-]{2,10}", key) or not isinstance(value, str) or not value.strip():
                raise ValueError(f"{key!r}: a display name is a language code with a non-empty string")


class RuleFile(_Strict):
    id: Word
    lang: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z-]{2,10}$")]
    kind: Text = "forbidden wording"
    terms: Annotated[list[Word], Field(min_length=1)]
    suggestion: Text = ""
    replacements: dict[Word, Annotated[str, StringConstraints(max_length=60)]] = {}
    skip_categories: list[int] = []
    strict: Literal["drop-sentence"] | None = None
    exceptions: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = []

    @field_validator("exceptions")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value


class ComplianceFile(_Strict):
    rules: list[RuleFile] = []


class PromptFile(_Strict):
    instructions: Text = ""


Attribute = Literal["colors", "materials", "patterns", "style", "season", "audience", "usage_scenes"]


class TaxonomyFile(_Strict):
    """Shop wordings that stand for a category: `"Tee Shirts" = 212` (what `qvl-label learn` writes)."""

    aliases: dict[Word, Annotated[int, Field(ge=1)]] = {}


class UserTemplateFile(_Strict):
    prompt: PromptFile | None = None
    taxonomy: TaxonomyFile | None = None
    vocabularies: dict[Attribute, dict[FieldName, ValueFile]] = {}
    templates: dict[FieldName, TemplateFile] = {}
    channels: dict[FieldName, ChannelFile] = {}
    compliance: ComplianceFile | None = None


def check_user_file(tables: dict[str, Any], text: str, source: str) -> None:
    """A usage error naming the file, the line and the key of the first problem."""
    try:
        UserTemplateFile.model_validate(tables)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = [str(part) for part in error["loc"]]
        line = _line_of(text, location)
        where = f"{source} line {line}" if line else source
        raise UsageError(f"{where}: {'.'.join(location)}: {error['msg']}") from None


def _line_of(text: str, location: list[str]) -> int | None:
    """The line that sets the deepest key of the location that the text names, if any."""
    for key in reversed(location):
        if key.isdigit() or key.startswith("["):  # list positions and pydantic's "[key]" markers
            continue
        written = key.replace("\\", "\\\\").replace('"', '\\"')  # as a quoted TOML key spells it
        for spelling in dict.fromkeys((key, written)):
            pattern = re.compile(rf'(^|[\s.\[{{,"]){re.escape(spelling)}"?\s*(=|\]|\.)')
            for number, line in enumerate(text.split("\n"), 1):
                if pattern.search(line):
                    return number
    return None
