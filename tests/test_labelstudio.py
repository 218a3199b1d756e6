"""The Label Studio round trip: the project files we write, and a real Label Studio export read back into gold.

tests/fixtures/labelstudio/export.json is what Label Studio 1.23.2 exported after
scripts/labelstudio_roundtrip.sh imported our tasks and posted three reviews through its API: task 1 corrected
(category to Juice, colours to orange, accepted), task 2 rejected untouched, task 3 accepted as predicted.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label.cli import app
from qvl_label.errors import UsageError
from qvl_label.store.labelstudio import image_url

from .conftest import FIXTURES

runner = CliRunner()
EXPORT = FIXTURES / "labelstudio" / "export.json"


def _record(path: str, category: list[str], colors: list[tuple[str, str | None]], match: float) -> dict:
    return {
        "path": path, "status": "ok", "sha256": "s-" + path, "run": "fp123", "languages": ["en"],
        "label": {"category": {"id": 0, "path": category, "match": match},
                  "attributes": {"colors": [{"raw": r, "value": v} for r, v in colors]},
                  "brand": "Arla", "copy": {"en": {"title": "Milk", "description": "Whole milk."}}},
    }  # fmt: skip


def test_export_writes_a_labelling_config_and_tasks_with_predictions(tmp_path: Path) -> None:
    photos = tmp_path / "shop" / "photos"
    records = [
        _record(
            str(photos / "milk.jpg"), ["Food, Beverages & Tobacco", "Beverages", "Milk"], [("white", "white")], 1.0
        ),
        _record(str(photos / "tee.jpg"), ["Apparel & Accessories"], [("eggshell", None), ("red", "red")], 0.5),
        {"path": str(photos / "bad.jpg"), "status": "corrupt", "error": "x"},
    ]
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = runner.invoke(app, ["export", str(out), "--label-studio", str(tmp_path / "ls"), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2 tasks" in result.output and "1 records not ok" in result.output
    view = ElementTree.parse(tmp_path / "ls" / "config.xml").getroot()  # well-formed XML, '&' escaped
    taxonomy = view.find("Taxonomy")
    assert taxonomy is not None and {c.get("value") for c in taxonomy} == {
        "Apparel & Accessories",
        "Food, Beverages & Tobacco",
    }
    paths = {c.get("value") for c in taxonomy.iter("Choice")}
    assert {"Beverages", "Milk", "Shirts & Tops"} <= paths  # whole subtrees of the top levels in play
    assert "Cameras & Optics" not in paths
    colors = next(c for c in view.iter("Choices") if c.get("name") == "colors")
    assert "red" in {c.get("value") for c in colors}
    names = {e.get("name") for e in view if e.get("name")}
    assert {"image", "category", "brand", "title_en", "description_en", "verdict"} <= names
    tasks = orjson.loads((tmp_path / "ls" / "tasks.json").read_bytes())
    milk, tee = tasks
    assert milk["data"]["image"] == "/data/local-files/?d=shop/photos/milk.jpg"
    prediction = milk["predictions"][0]
    assert prediction["model_version"] == "fp123" and prediction["score"] == 1.0
    assert tee["predictions"][0]["score"] == 0.5  # match 0.5, one of two colour wordings mapped: (0.5 + 0.5) / 2
    by_name = {r["from_name"]: r["value"] for r in prediction["result"]}
    assert by_name["category"] == {"taxonomy": [["Food, Beverages & Tobacco", "Beverages", "Milk"]]}
    assert by_name["colors"] == {"choices": ["white"]} and by_name["title_en"] == {"text": ["Milk"]}


def test_a_photo_outside_the_document_root_cannot_be_served() -> None:
    assert image_url("/srv/photos/a b.jpg", "/srv", None) == "/data/local-files/?d=photos/a%20b.jpg"
    assert image_url("/srv/photos/a.jpg", "/srv", "https://cdn.example/img") == "https://cdn.example/img/photos/a.jpg"
    with pytest.raises(UsageError, match="not under --root"):
        image_url("/elsewhere/a.jpg", "/srv", None)


def test_a_real_label_studio_export_becomes_gold_with_what_reviewers_changed(tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    result = runner.invoke(app, ["import-review", str(EXPORT), "-o", str(gold)])
    assert result.exit_code == 0, result.output
    assert "2 gold entries from 3 reviewed of 10 tasks (1 rejected without a correction, left out)" in result.output
    assert "category: changed in 1, kept in 1" in result.output and "colors: changed in 1, kept in 0" in result.output
    entries = [orjson.loads(line) for line in gold.read_bytes().splitlines()]
    corrected = entries[0]
    assert corrected["path"] == "./catalogue/Bravo-Orange-Juice_Iconic.jpg"
    assert corrected["label"]["category"] == {"path": ["Food, Beverages & Tobacco", "Beverages", "Juice"]}
    assert corrected["label"]["attributes"] == {"colors": ["orange"]}
    accepted = entries[1]  # accepted as predicted: the prediction is the gold
    assert accepted["path"] == "./catalogue/Oatly-Oat-Milk_Iconic.jpg"
    assert accepted["label"]["category"] == {"path": ["Business & Industrial"]}


def test_what_is_not_an_export_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "export.json"
    bad.write_text('{"tasks": []}')
    result = runner.invoke(app, ["import-review", str(bad)])
    assert result.exit_code == 2 and "not a Label Studio JSON export" in result.output
