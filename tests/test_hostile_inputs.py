"""Hostile inputs to the reading commands: mistyped fields, odd CSV, non-ASCII digits, bytes that are not UTF-8,
markup and TOML in wording, unbounded options and patterns, and the statistics' known values (issue #24)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import xml.etree.ElementTree as ElementTree
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label.cli import app
from qvl_label.errors import UsageError
from qvl_label.evaluation.compare import mcnemar_p
from qvl_label.evaluation.metrics import f1_interval, rate, wilson
from qvl_label.labeling import compliance
from qvl_label.labeling.config import Rule, load_config
from qvl_label.pipeline.products import check_pattern_cost, group_by_pattern

from .conftest import PRODUCTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()
SHIRTS = ["Apparel & Accessories", "Clothing", "Shirts & Tops"]  # 212


def _ok(path: str, **label: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "category": {"id": 212, "path": SHIRTS, "raw": ["Apparel & Accessories", "tee"], "match": 0.9},
        "attributes": {"colors": [{"raw": "red", "value": "red"}]},
        "brand": "Arla",
        "visible_text": ["ARLA"],
        "copy": {"en": {"title": "Red tee", "description": "Cotton."}},
        "compliance": {"flags": []},
    }
    base.update(label)
    return {"path": path, "status": "ok", "sha256": "s-" + path, "run": "r1", "languages": ["en"], "label": base,
            "timings_ms": {"total_ms": 120.0}}  # fmt: skip


def _jsonl(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _no_crash(output: str) -> None:
    assert "internal error" not in output and "Traceback" not in output, output


# -- mistyped record fields: one line naming file:line and the field, exit 2 --------------------------------

MISTYPED = [
    ("label.category.path", {"category": {"id": 212, "path": 5}}),
    ("label.category.raw", {"category": {"id": 212, "path": SHIRTS, "raw": "Apparel"}}),
    ("label.category.id", {"category": {"id": "212", "path": SHIRTS}}),
    ("label.attributes.colors", {"attributes": {"colors": [{"raw": "red", "value": ["red"]}]}}),
    ("label.visible_text", {"visible_text": 7}),
    ("label.compliance.flags", {"compliance": {"flags": 3}}),
    ("label.copy.en.title", {"copy": {"en": {"title": ["Red tee"]}}}),
]


@pytest.mark.parametrize("command", ["eval", "compare", "learn"])
@pytest.mark.parametrize(("field", "label"), MISTYPED, ids=[m[0] for m in MISTYPED])
def test_runs_with_mistyped_fields_name_file_line_and_field(
    tmp_path: Path, command: str, field: str, label: dict[str, Any]
) -> None:
    run = _jsonl(tmp_path / "run.jsonl", [_ok("a.jpg"), _ok("b.jpg", **label)])
    good = _jsonl(tmp_path / "good.jsonl", [_ok("a.jpg"), _ok("b.jpg")])
    gold = _jsonl(tmp_path / "gold.jsonl", [{"path": "a.jpg", "label": {"category": {"id": 212}}},
                                             {"path": "b.jpg", "label": {"category": {"id": 1604}}}])  # fmt: skip
    args = {
        "eval": ["eval", str(run), "--gold", str(gold), "--root", str(tmp_path)],
        "compare": ["compare", str(good), str(run), "--gold", str(gold), "--root", str(tmp_path)],
        "learn": ["learn", str(gold), "--run", str(run), "--root", str(tmp_path)],
    }[command]
    result = runner.invoke(app, args)
    _no_crash(result.output)
    assert result.exit_code == 2, result.output
    assert f"run.jsonl:2: field {field} must be" in result.output


@pytest.mark.parametrize(("field", "label"), MISTYPED[:4], ids=[m[0] for m in MISTYPED[:4]])
def test_export_label_studio_refuses_mistyped_fields_before_writing(
    tmp_path: Path, field: str, label: dict[str, Any]
) -> None:
    run = _jsonl(tmp_path / "run.jsonl", [_ok(str(tmp_path / "a.jpg")), _ok(str(tmp_path / "b.jpg"), **label)])
    result = runner.invoke(app, ["export", str(run), "--label-studio", str(tmp_path / "ls"), "--root", str(tmp_path)])
    _no_crash(result.output)
    assert result.exit_code == 2 and f"run.jsonl:2: field {field} must be" in result.output
    assert not (tmp_path / "ls" / "config.xml").exists()


def _review_task(result: list[Any], task_id: int = 7, path: Any = "./a.jpg") -> dict[str, Any]:
    return {
        "id": task_id,
        "data": {"image": "/data/local-files/?d=a.jpg", "path": path, "sha256": "s-a"},
        "annotations": [{"id": 1, "was_cancelled": False, "updated_at": "2026-01-01T00:00:00", "result": result}],
        "predictions": [],
    }


GOOD_RESULT = [{"from_name": "colors", "to_name": "image", "type": "choices", "value": {"choices": ["red"]}}]
BAD_RESULTS = [
    ("annotations.0.result.0.value.choices", [{"from_name": "colors", "value": {"choices": 5}}]),
    ("annotations.0.result.0.value.choices", [{"from_name": "colors", "value": {"choices": ["red", 2]}}]),
    ("annotations.0.result.0.value.text", [{"from_name": "brand", "value": {"text": [5]}}]),
    ("annotations.0.result.0.value.taxonomy", [{"from_name": "category", "value": {"taxonomy": "Apparel"}}]),
    ("annotations.0.result.0.from_name", [{"from_name": 3, "value": {"choices": ["red"]}}]),
    ("annotations.0.result.1", [GOOD_RESULT[0], "colors=red"]),
]


@pytest.mark.parametrize(("field", "result"), BAD_RESULTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_RESULTS)])
def test_import_review_names_the_task_and_field_of_a_mistyped_export(
    tmp_path: Path, field: str, result: list[Any]
) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([_review_task(GOOD_RESULT, 6), _review_task(result, 7)]))
    out = runner.invoke(app, ["import-review", str(export), "-o", str(tmp_path / "gold.jsonl")])
    _no_crash(out.output)
    assert out.exit_code == 2, out.output
    assert f"export.json: task 2 (id 7): field {field} must be" in out.output


def test_import_review_mixed_annotation_ids_and_dates_are_named(tmp_path: Path) -> None:
    task = _review_task(GOOD_RESULT)
    task["annotations"].append({"id": "x", "updated_at": 5, "result": GOOD_RESULT})
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([task]))
    out = runner.invoke(app, ["import-review", str(export)])
    _no_crash(out.output)
    assert out.exit_code == 2 and "field annotations.1.id must be an integer" in out.output


@pytest.mark.parametrize("path", [None, "", 5])
def test_import_review_never_writes_gold_without_a_path(tmp_path: Path, path: Any) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([_review_task(GOOD_RESULT, 6), _review_task(GOOD_RESULT, 7, path=path)]))
    gold = tmp_path / "gold.jsonl"
    out = runner.invoke(app, ["import-review", str(export), "-o", str(gold)])
    _no_crash(out.output)
    if path == 5:
        assert out.exit_code == 2 and "field data.path must be a string" in out.output
        return
    assert out.exit_code == 0, out.output
    assert "left out 1 reviewed tasks without data.path" in out.output
    entries = [orjson.loads(line) for line in gold.read_bytes().splitlines()]
    assert [e["path"] for e in entries] == ["./a.jpg"]


# -- CSV: huge cells, extra cells, non-ASCII digits -----------------------------------------------------------


def _csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


@pytest.mark.parametrize("size", [200_000, 3_000_000])
def test_cells_over_the_csv_modules_default_limit_are_read(tmp_path: Path, size: int) -> None:
    long_text = "ARLA " * (size // 5)
    gold = _csv(tmp_path / "gold.csv", [["path", "category_id", "visible_text"], ["a.jpg", "212", long_text]])
    run = _jsonl(tmp_path / "run.jsonl", [_ok("a.jpg")])
    result = runner.invoke(app, ["eval", str(run), "--gold", str(gold), "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["matched_with_gold"] == 1
    copy_file = _csv(tmp_path / "copy.csv", [["title"], ["best " + long_text]])
    linted = runner.invoke(app, ["lint-copy", "--lang", "en", "--file", str(copy_file), "--column", "title"])
    _no_crash(linted.output)
    assert linted.exit_code in (0, 1) and orjson.loads(linted.stdout.splitlines()[0])["text"].startswith("best")


@pytest.mark.parametrize(
    ("command", "rows", "delimiter"),
    [
        ("eval", [["path", "category_id"], ["a.jpg", "212"], ["b.jpg", "212", "oops"]], ","),
        ("eval-tsv", [["path", "category_id"], ["a.jpg", "212", "x", "y"]], "\t"),
        ("lint", [["title"], ["fine"], ["a", "b"]], ","),
        ("feed", [["id", "image_link", "title"], ["1", "a.jpg", "T", "extra"]], "\t"),
    ],
)
def test_a_row_with_an_extra_cell_names_its_line(
    tmp_path: Path, command: str, rows: list[list[str]], delimiter: str
) -> None:
    suffix = ".tsv" if delimiter == "\t" else ".csv"
    table = _csv(tmp_path / f"table{suffix}", rows, delimiter)
    run = _jsonl(tmp_path / "run.jsonl", [_ok("a.jpg")])
    args = {
        "eval": ["eval", str(run), "--gold", str(table)],
        "eval-tsv": ["eval", str(run), "--gold", str(table)],
        "lint": ["lint-copy", "--lang", "en", "--file", str(table), "--column", "title"],
        "feed": ["gold", "from-feed", str(table)],
    }[command]
    result = runner.invoke(app, args)
    _no_crash(result.output)
    assert result.exit_code == 2, result.output
    line = len(rows)
    assert f":{line}: {len(rows[-1])} cells in a row, the header names {len(rows[0])}" in result.output


@pytest.mark.parametrize("digits", ["²", "①", "١٢", "12³"])
def test_category_ids_are_ascii_digits_only(tmp_path: Path, digits: str) -> None:
    assert digits.isdigit()  # what str.isdigit let through
    gold = _csv(tmp_path / "gold.csv", [["path", "category_id"], ["a.jpg", digits]])
    run = _jsonl(tmp_path / "run.jsonl", [_ok("a.jpg")])
    result = runner.invoke(app, ["eval", str(run), "--gold", str(gold)])
    _no_crash(result.output)
    assert result.exit_code == 2 and "gold.csv:2: category" in result.output and "matches no taxonomy" in result.output


@pytest.mark.parametrize("category", [True, 2.5, {"id": {"x": 1}}])
def test_a_gold_category_of_the_wrong_type_is_named(tmp_path: Path, category: Any) -> None:
    gold = _jsonl(tmp_path / "gold.jsonl", [{"path": "a.jpg", "label": {"category": category}}])
    run = _jsonl(tmp_path / "run.jsonl", [_ok("a.jpg")])
    result = runner.invoke(app, ["eval", str(run), "--gold", str(gold)])
    _no_crash(result.output)
    assert result.exit_code == 2 and "gold.jsonl:1: field category" in result.output


# -- stdin that is not UTF-8 -------------------------------------------------------------------------------

INVALID_UTF8 = [b"Apparel \xff\n", b"\xc3\x28\n", b"\xed\xa0\x80 surrogate\n", b"\xf8\x88\x80\x80\x80\n", b"ok\xe2\x82"]


@pytest.mark.parametrize("command", [["taxonomy", "map"], ["lint-copy", "--lang", "en"]])
@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_stdin_that_is_not_utf8_names_the_line(command: list[str], bad: bytes) -> None:
    result = runner.invoke(app, command, input=b"Apparel & Accessories\n" + bad)
    _no_crash(result.output)
    assert result.exit_code == 2, result.output
    assert "stdin line 2 is not UTF-8 (byte 0x" in result.output
    assert result.stdout.count("\n") == 1  # the good first line was answered before


# -- wording that would be markup in config.xml or sections in the learnt TOML --------------------------------

HOSTILE = ['</Choice><Choice value="injected"/>', '"><View/><x a="', "&amp; <![CDATA[ ]]> &#0;", "a\"b'c<d>e&f"]


@pytest.mark.parametrize("wording", HOSTILE)
def test_record_wording_stays_an_attribute_value_in_config_xml(tmp_path: Path, wording: str) -> None:
    path = str(tmp_path / "a.jpg")
    record = _ok(path, category={"id": 212, "path": [wording, "x"]})
    run = _jsonl(tmp_path / "run.jsonl", [record, _ok(str(tmp_path / "b.jpg"))])
    result = runner.invoke(app, ["export", str(run), "--label-studio", str(tmp_path / "ls"), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    view = ElementTree.parse(tmp_path / "ls" / "config.xml").getroot()
    taxonomy = view.find("Taxonomy")
    assert taxonomy is not None
    assert sorted(c.get("value") for c in taxonomy) == sorted([wording, "Apparel & Accessories"])
    assert [e.tag for e in view].count("View") == 0 and view.find(".//x") is None
    assert "injected" not in {c.get("value") for c in view.iter("Choice")}


@pytest.mark.parametrize("language", ['en"/><Choice value="x', "en lang", "<x>", ""])
def test_a_record_language_that_is_no_tag_is_refused_not_written_into_xml(tmp_path: Path, language: str) -> None:
    record = _ok(str(tmp_path / "a.jpg"))
    record["languages"] = [language]
    run = _jsonl(tmp_path / "run.jsonl", [record])
    result = runner.invoke(app, ["export", str(run), "--label-studio", str(tmp_path / "ls"), "--root", str(tmp_path)])
    _no_crash(result.output)
    assert result.exit_code == 2 and "not a language tag" in result.output


INJECTIONS = ["eggshell\n[channels.evil]\ntitle_limit = 1", 'egg"]\n[channels.evil]', "egg\r\n[channels.evil]\x7f"]


@pytest.mark.parametrize("wording", INJECTIONS)
def test_learnt_wording_cannot_add_toml_sections(tmp_path: Path, wording: str) -> None:
    record = _ok("a.jpg", attributes={"colors": [{"raw": wording, "value": None}]},
                 copy={"en": {"title": f"Tee {wording.splitlines()[0]} sale", "description": ""}})  # fmt: skip
    run = _jsonl(tmp_path / "run.jsonl", [record])
    gold_label = {"attributes": {"colors": ["white"]}, "copy": {"en": {"title": "Tee"}}}
    gold = _jsonl(tmp_path / "gold.jsonl", [{"path": "a.jpg", "label": gold_label}])
    template = tmp_path / "shop.toml"
    result = runner.invoke(app, ["learn", str(gold), "--run", str(run), "-o", str(template), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    tables = tomllib.loads(template.read_text(encoding="utf-8"))
    assert "channels" not in tables
    assert tables["vocabularies"]["colors"]["white"]["synonyms"] == [wording]
    assert load_config(template).vocabularies["colors"].normalise(wording) == "white"


def test_a_gold_language_key_or_file_name_cannot_add_toml_sections(tmp_path: Path) -> None:
    language = 'en"\n[channels.evil]\nx = "'
    record = _ok("a.jpg", copy={language: {"title": "Best Seller Tee", "description": ""}})
    run = _jsonl(tmp_path / "run.jsonl", [record])
    gold = _jsonl(tmp_path / "g\n[channels.evil2]\n.jsonl",
                  [{"path": "a.jpg", "label": {"copy": {language: {"title": "Tee"}}}}])  # fmt: skip
    result = runner.invoke(app, ["learn", str(gold), "--run", str(run), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "channels" not in tomllib.loads(result.stdout)
    template = tmp_path / "shop.toml"
    template.write_text(result.stdout, encoding="utf-8")
    load_config(template)


# -- learn's aliases are ones eval --remap applies --------------------------------------------------------------


def test_learn_keeps_only_aliases_the_mapping_applies(tmp_path: Path) -> None:
    def record(path: str, raw: list[str]) -> dict[str, Any]:
        return _ok(path, category={"id": 1604, "path": ["Apparel & Accessories", "Clothing"], "raw": raw})

    records = [
        record("top.jpg", ["Apparel & Accessories"]),  # a bare top-level word: the mapper never reads aliases
        record("exact.jpg", ["Apparel & Accessories", "Clothing"]),  # an exact path wins over any alias
        record("tee.jpg", ["Apparel & Accessories", "tee thing"]),  # this one applies
    ]
    run = _jsonl(tmp_path / "run.jsonl", records)
    gold = _jsonl(tmp_path / "gold.jsonl", [{"path": r["path"], "label": {"category": {"id": 212}}} for r in records])
    template = tmp_path / "shop.toml"
    result = runner.invoke(app, ["learn", str(gold), "--run", str(run), "-o", str(template), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 category aliases" in result.output and "left out 2 category corrections" in result.output
    assert tomllib.loads(template.read_text())["taxonomy"]["aliases"] == {"tee thing": 212}

    def exact(*extra: str) -> int:
        out = runner.invoke(app, ["eval", str(run), "--gold", str(gold), "--root", str(tmp_path), "--json", *extra])
        assert out.exit_code == 0, out.output
        return int(orjson.loads(out.stdout)["category"]["exact"]["hits"])

    assert exact() == 0 and exact("--template", str(template), "--remap") == 1  # every alias written took effect


# -- statistics against published values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (1, 10, 0.0179, 0.4042),
        (81, 263, 0.2553, 0.3662),
    ],  # Newcombe (1998) / Wilson tables; 81/263 is Wikipedia's example
)
def test_wilson_intervals_match_published_values(hits: int, n: int, low: float, high: float) -> None:
    got = wilson(hits, n)
    assert got[0] == pytest.approx(low, abs=5e-4) and got[1] == pytest.approx(high, abs=5e-4)
    r = rate([True] * hits + [False] * (n - hits))
    assert (r.low, r.high) == got


def test_an_all_wrong_rate_has_an_interval_wider_than_nothing() -> None:
    r = rate([False] * 10)
    assert r.low == 0.0 and r.high is not None and r.high > 0.27  # resampling gave 0.0-0.0%


@pytest.mark.parametrize(
    ("a_only", "b_only", "p"),
    [(1, 9, 0.021484375), (0, 5, 0.0625), (3, 3, 1.0), (0, 0, 1.0), (2, 12, 0.012939453125), (7, 18, 0.043285)],
)
def test_mcnemar_exact_matches_the_binomial_test(a_only: int, b_only: int, p: float) -> None:
    assert mcnemar_p(a_only, b_only) == pytest.approx(p, rel=1e-4)
    assert mcnemar_p(b_only, a_only) == pytest.approx(p, rel=1e-4)


@pytest.mark.parametrize(("a_only", "b_only"), [(4950, 5050), (100, 400), (0, 2000), (2, 3), (60, 40)])
def test_mcnemar_matches_exact_integer_sums_at_any_size(a_only: int, b_only: int) -> None:
    n, k = a_only + b_only, min(a_only, b_only)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)  # exact, slow: the reference
    exact = min(1.0, float(2 * tail)) if 2 * k < n else 1.0
    assert mcnemar_p(a_only, b_only) == pytest.approx(exact, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("a_only", "b_only"), [(4950, 5050), (100, 400), (7, 18), (0, 30)])
def test_mcnemar_matches_scipys_binomtest(a_only: int, b_only: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert mcnemar_p(a_only, b_only) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_micro_f1_interval_is_deterministic_and_brackets_the_value() -> None:
    pairs = [({"red"}, {"red"})] * 60 + [({"red"}, {"blue"})] * 40
    low, high = f1_interval(pairs)
    assert f1_interval(pairs) == (low, high) and low < 0.6 < high and low > 0.45 and high < 0.75


# -- unbounded options and costly patterns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--product-max-photos", "100000"], "--product-max-photos must be between 1 and 32"),
        (["--product-max-photos", "0"], "--product-max-photos must be between 1 and 32"),
        (["--product-max-tokens", "1000000000"], "--product-max-tokens must be between"),
        (["--product-max-tokens", "40000"], "--product-max-tokens must be between"),
    ],
)
def test_product_limits_are_bounded_before_the_model_loads(tmp_path: Path, option: list[str], message: str) -> None:
    broken = tmp_path / "model.gguf"  # loading it would be exit 4: exit 2 shows the check came first
    broken.write_bytes(b"GGUF" + bytes(64))
    model = ["--model", str(broken), "--mmproj", str(broken)]
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", str(out), "--group-by", "folder", *option, *model])
    _no_crash(result.output)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("extra", [["--actors", "4097"], ["--actors", "CORES+1"], ["--cpus-per-actor", "CORES"]])
def test_local_ray_actors_are_bounded_by_this_machines_cpus(tmp_path: Path, extra: list[str]) -> None:
    import os

    cores = os.cpu_count() or 1
    values = [str(cores + 1) if v == "CORES+1" else str(cores) if v == "CORES" else v for v in extra]
    if extra[0] == "--cpus-per-actor":
        values += ["--actors", "2"]
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", str(tmp_path / "o.jsonl"), "--ray", *values])
    _no_crash(result.output)
    assert result.exit_code == 2, result.output
    assert "CPUs" in result.output or "--actors must be between" in result.output


COSTLY = ["^(a+)+$", "^(a|aa)*b$", "(.*)(.*)(.*)(.*)x", "^((ab)*c)*$", "^(x{1,50}){1,50}y$", "(" * 101 + ")" * 101]


@pytest.mark.parametrize("pattern", COSTLY)
def test_costly_group_patterns_are_refused_before_any_work(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(UsageError, match="--group-pattern"):
        group_by_pattern(["x/" + "a" * 200 + "!.jpg"], pattern)
    result = runner.invoke(
        app, ["batch", str(PRODUCTS), "-o", str(tmp_path / "o.jsonl"), "--group-by", "pattern", "--group-pattern",
              pattern, "--model", str(tmp_path / "none.gguf"), "--mmproj", str(tmp_path / "none.gguf")],
    )  # fmt: skip
    _no_crash(result.output)
    assert result.exit_code == 2 and "--group-pattern" in result.output


@pytest.mark.parametrize("pattern", [r"^(.+)[_-][^_-]*$", r"^([A-Z]+\d+)", r"^(\w+?)-(front|back|side)$"])
def test_ordinary_group_patterns_still_group(pattern: str) -> None:
    check_pattern_cost(pattern)
    products = group_by_pattern(["p/MS04-front.jpg", "p/MS04-back.jpg"], pattern)
    assert len(products) == 1


# -- lint-copy --fix: the linear rewrite gives what the old one gave ------------------------------------------


def _rules() -> list[Rule]:
    return compliance.rules_for(load_config(None).rules, "en", set())


TEXTS = [
    "Best seller! The best tee. Cures colds. Soft cotton.",  # replacements, capitals, a dropped sentence
    "The best tee, guaranteed cure. 100% natural!",  # a dropped sentence holding a replaced word
    "Soft cotton. The best tee is heals-free. No. 1 in town.",
    "No flagged words here.",
]


@pytest.mark.parametrize("text", TEXTS)
def test_fix_rewrites_long_text_in_one_pass_like_short_text(text: str) -> None:
    """The linear rewrite (sentence ends found once, output joined once) gives 400 texts what it gives one."""
    one = compliance.check_text(text, _rules(), "text", strict=True)
    many = compliance.check_text(" ".join([text] * 400), _rules(), "text", strict=True)
    assert len(many.flags) == 400 * len(one.flags)
    assert many.text == " ".join([one.text] * 400)
    expected = {TEXTS[0]: "Great seller! A great tee. Soft cotton.", TEXTS[1]: "100% natural!"}
    assert one.text == expected.get(text, one.text)


def test_lint_copy_fix_on_a_megabyte_of_copy_answers(tmp_path: Path) -> None:
    text = "The best tee. Cures colds. Soft cotton. " * 30_000  # 1.2 MB, flagged 60,000 times
    result = runner.invoke(app, ["lint-copy", "--lang", "en", "--fix"], input=text.encode() + b"\n")
    assert result.exit_code == 1, result.output
    answer = json.loads(result.stdout)
    assert "best" not in answer["fixed"].lower().split() and len(answer["flags"]) >= 30_000


# -- invisible characters that are not format characters (Cf) still cannot split a flagged word ---------------

# Unicode's Default_Ignorable_Code_Point characters outside category Cf: combining grapheme joiner, variation
# selectors (Mongolian, standard, supplementary), Khmer inherent vowels, Hangul fillers. A reader sees nothing.
INVISIBLE = ["\u034f", "\ufe00", "\ufe0e", "\u180b", "\u17b4", "\u115f", "\u3164", "\uffa0", "\U000e0100"]


@pytest.mark.parametrize("invisible", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_default_ignorable_characters_do_not_evade_the_rules(invisible: str) -> None:
    text = f"The b{invisible}est tee. Cu{invisible}res colds."
    result = runner.invoke(app, ["lint-copy", "--lang", "en", "--fix", text])
    assert result.exit_code == 1, result.output
    answer = orjson.loads(result.stdout)
    assert [f["text"] for f in answer["flags"]] == [f"The b{invisible}est", f"Cu{invisible}res"]
    assert answer["fixed"] == "A great tee.", answer["fixed"]  # the claim's sentence goes, "the best" is replaced
