"""`taxonomy map|search` and `lint-copy` through the CLI: output lines, stdin, files, exit codes."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
from typer.testing import CliRunner

from qvl_label.cli import app

runner = CliRunner()


def _lines(output: str) -> list[dict]:
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


def test_taxonomy_map_arguments_and_stdin() -> None:
    result = runner.invoke(
        app, ["taxonomy", "map", "Electronics > Accessories > Phone Cases", "Apparel & Accessories > 服装 > 连衣裙"]
    )
    assert result.exit_code == 0, result.output
    phone, dress = _lines(result.stdout)
    assert phone["id"] == 2353 and phone["path"][-1] == "Mobile Phone Cases" and phone["match"] >= 0.6
    assert dress["id"] == 2271 and dress["names"]["zh"] == ["服饰与配饰", "服装", "连衣裙"]
    piped = runner.invoke(
        app, ["taxonomy", "map", "--names", "zh,ja"], input="服饰与配饰 > 服装 > T恤\n\nwireless earbuds\n"
    )
    tee, earbuds = _lines(piped.stdout)
    assert tee["id"] == 212 and set(tee["names"]) == {"zh", "ja"}
    assert earbuds["path"][-1] == "Headphones"  # no top level given: every top level is searched


def test_taxonomy_search_lists_best_nodes() -> None:
    result = runner.invoke(app, ["taxonomy", "search", "power", "bank", "-n", "3"])
    assert result.exit_code == 0
    nodes = _lines(result.stdout)
    assert 2 <= len(nodes) <= 3 and nodes[0]["id"] == 505295
    assert [n["match"] for n in nodes] == sorted((n["match"] for n in nodes), reverse=True)
    assert runner.invoke(app, ["taxonomy", "search", "x", "-n", "0"]).exit_code == 2


def test_lint_copy_flags_claims_and_exits_1() -> None:
    result = runner.invoke(app, ["lint-copy", "--lang", "zh", "第一次穿就很舒服", "最好的纯棉T恤"])
    assert result.exit_code == 1
    fact, claim = _lines(result.stdout)
    assert fact["flags"] == []
    assert claim["flags"][0]["text"] == "最好" and claim["flags"][0]["rule"] == "zh-absolute-claim"
    clean = runner.invoke(app, ["lint-copy", "--lang", "en", "Healthy dog treats."])
    assert clean.exit_code == 0 and _lines(clean.stdout)[0]["flags"] == []


def test_lint_copy_fix_stdin_and_channel_emoji() -> None:
    result = runner.invoke(app, ["lint-copy", "--lang", "en", "--channel", "amazon", "--fix"], input="Perfect fit ✨\n")
    (line,) = _lines(result.stdout)
    assert line["fixed"] == "Great fit" and {f["rule"] for f in line["flags"]} == {
        "en-absolute-claim",
        "amazon-no-emoji",
    }
    kept = _lines(runner.invoke(app, ["lint-copy", "--lang", "zh", "--fix", "抗菌砧板，厨房必备。"]).stdout)[0]
    assert kept["kept"] and kept["fixed"] == "抗菌砧板，厨房必备。"  # never emptied


def test_lint_copy_reads_a_csv_or_jsonl_column(tmp_path: Path) -> None:
    table = tmp_path / "titles.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title"])
        writer.writerows([["a", "顶级真丝连衣裙"], ["b", "纯棉T恤"]])
    result = runner.invoke(app, ["lint-copy", "--lang", "zh", "--file", str(table), "--column", "title"])
    assert [len(r["flags"]) for r in _lines(result.stdout)] == [1, 0] and result.exit_code == 1
    records = tmp_path / "out.jsonl"
    records.write_bytes(
        orjson.dumps({"label": {"copy": {"en": {"selling_points": ["Best gift", "Soft cotton"]}}}}) + b"\n"
    )
    result = runner.invoke(
        app, ["lint-copy", "--lang", "en", "--file", str(records), "--column", "label.copy.en.selling_points"]
    )
    assert [len(r["flags"]) for r in _lines(result.stdout)] == [1, 0]
    missing = runner.invoke(app, ["lint-copy", "--file", str(table), "--column", "nope"])
    assert missing.exit_code == 2 and "no column 'nope'" in missing.output


def test_lint_copy_medical_rules_skip_medical_goods() -> None:
    text = "Treats muscle pain."
    assert runner.invoke(app, ["lint-copy", "--lang", "en", text]).exit_code == 1
    assert runner.invoke(app, ["lint-copy", "--lang", "en", "--category", "491", text]).exit_code == 0
    assert runner.invoke(app, ["lint-copy", "--lang", "en", "--category", "999999", text]).exit_code == 2
