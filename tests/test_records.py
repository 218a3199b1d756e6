"""Schema, validation and the record: every answer becomes a valid `ok` label or a failure status with the raw text."""

from __future__ import annotations

import json
import os

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qvl_label.engine.protocol import Generation, PreparedImage, TokenCounts
from qvl_label.labeling.config import load_config
from qvl_label.labeling.schema import answer_schema, validate
from qvl_label.labeling.shaping import LabelShaper
from qvl_label.pipeline.images import LoadedImage
from qvl_label.pipeline.records import OK, RunContext, display_path, interpret, model_record, path_from_display

from .conftest import sample_answer


def _answer(**overrides: object) -> dict:
    return sample_answer(("en",), **overrides)


def _gen(text: str, finish: str = "stop", error: str | None = None) -> Generation:
    return Generation(key=0, text=text, finish_reason=finish, tokens=TokenCounts(completion=12), error=error)


CONFIG = load_config()
SCHEMA = answer_schema(("en",), CONFIG, CONFIG.channel("generic"))
SHAPER = LabelShaper(CONFIG, CONFIG.channel("generic"), ("en",))


def test_valid_answer_is_ok_and_shaped() -> None:
    answer = _answer(colors=["wine red", " Red ", "navy  blue", "glittery"])
    status, error, label = interpret(_gen(json.dumps(answer)), SCHEMA, SHAPER)
    assert (status, error) == (OK, None)
    assert label["attributes"]["colors"] == [
        {"raw": "wine red", "value": "red"},
        {"raw": "navy blue", "value": "blue"},
        {"raw": "glittery", "value": None},
    ]
    assert label["category"]["id"] == 212 and label["category"]["path"][-1] == "Shirts & Tops"
    assert label["details"] == {
        "template": "apparel",
        "fields": {"neckline": "crew", "sleeve_length": "short", "fit": "regular", "length": "hip", "closure": "none"},
    }
    assert label["brand"] is None
    assert label["copy"]["en"]["selling_points"] == ["Short sleeves", "Crew neck", "Red"]
    assert label["compliance"] == {"flags": [], "rewritten": False} and label["warnings"] == []


@pytest.mark.parametrize(
    ("text", "finish", "status"),
    [
        ('{"category": ["a"], "colors": [', "length", "truncated_output"),
        ("not json at all", "stop", "unparseable_output"),
        (json.dumps(_answer(category={"top": "Clothes", "path": []})), "stop", "invalid_output"),
        (json.dumps(_answer(details={"template": "shoes", "neckline": "crew"})), "stop", "invalid_output"),
        (json.dumps({k: v for k, v in _answer().items() if k != "copy"}), "stop", "invalid_output"),
        (json.dumps(_answer(extra=1)), "stop", "invalid_output"),
        (json.dumps(_answer(colors="red")), "stop", "invalid_output"),
    ],
)
def test_bad_answers_keep_the_raw_text(text: str, finish: str, status: str) -> None:
    image = LoadedImage(PreparedImage(b"\0" * 3 * 32 * 32, 32, 32), "0" * 64, 32, 32, "JPEG", "RGB")
    run = RunContext(model=None, prompt_version="label-2", languages=("en",), schema=SCHEMA, fingerprint="f")
    record = model_record("a.jpg", run, image, _gen(text, finish))
    assert record["status"] == status
    assert record["label"] is None and record["raw_output"] == text and record["error"]


def test_raw_control_characters_are_blanked_and_overlong_strings_rejected() -> None:
    raw = json.dumps(_answer()).replace("Men's red running tee", "Men's\\u0007 tee").replace("\\u0007", "\x07")
    status, _, label = interpret(_gen(raw), SCHEMA, SHAPER)
    assert status == OK and label["copy"]["en"]["title"] == "Men's tee"
    long_title = _answer()
    long_title["copy"]["en"]["title"] = "x" * 500
    status, error, label = interpret(_gen(json.dumps(long_title)), SCHEMA, SHAPER)
    # The grammar bounds lengths exactly, so an over-long string is reported, never trimmed silently.
    assert status == "invalid_output" and label is None and "longer than 80" in (error or "")


def test_engine_error_is_engine_error() -> None:
    assert interpret(_gen("", "error", "vision encoder failed"), SCHEMA)[0] == "engine_error"


def test_question_mode_has_no_schema() -> None:
    assert interpret(_gen("Yes, it is a winter coat."), None) == (OK, None, "Yes, it is a winter coat.")


def test_a_cut_off_answer_is_truncated_output_in_question_mode_too() -> None:
    status, error, value = interpret(_gen("Yes, it is a winter", "length"), None)
    assert status == "truncated_output" and value is None and "max_tokens" in (error or "")


def test_schema_has_copy_per_language() -> None:
    schema = answer_schema(("zh", "en", "ja"), CONFIG, CONFIG.channel("taobao"))
    assert schema["properties"]["copy"]["required"] == ["zh", "en", "ja"]
    assert list(schema["properties"])[:2] == ["scene", "category"] and list(schema["properties"])[-1] == "items"
    assert schema["properties"]["copy"]["properties"]["zh"]["properties"]["title"]["maxLength"] == 30
    assert len(schema["properties"]["category"]["properties"]["top"]["enum"]) == 21
    assert validate(_answer(), SCHEMA) == []
    assert validate(_answer(), schema)  # zh and ja missing


def test_display_path_survives_undecodable_names() -> None:
    name = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")
    assert display_path(name) == "caf\\xe9.jpg"
    assert display_path("连衣裙.jpg") == "连衣裙.jpg"
    # the four characters \xff and the byte 0xFF are different names, and stay different
    literal, byte = "a\\xff.jpg", b"a\xff.jpg".decode("utf-8", "surrogateescape")
    assert display_path(literal) != display_path(byte)
    assert display_path(literal) == "a\\\\xff.jpg"


@given(st.binary(min_size=1, max_size=40))
def test_display_path_round_trips_any_file_name(name: bytes) -> None:
    path = os.fsdecode(name)
    shown = display_path(path)
    assert path_from_display(shown) == path
    orjson.dumps(shown)  # always valid JSON text
    assert os.fsencode(path_from_display(shown)) == name
