"""`qvl-label eval`: gold read from JSONL and CSV, scores worked out by hand, and a real run scored end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label import tinymodel
from qvl_label.cli import app
from qvl_label.errors import UsageError
from qvl_label.evaluation.compare import mcnemar_p
from qvl_label.evaluation.gold import GoldIndex, load_gold, tokens
from qvl_label.evaluation.metrics import evaluate, language_ok, token_f1
from qvl_label.labeling.config import load_config

from .conftest import FIXTURES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()
SHIRTS = ["Apparel & Accessories", "Clothing", "Shirts & Tops"]  # 212
CLOTHING = ["Apparel & Accessories", "Clothing"]  # 1604
MILK = ["Food, Beverages & Tobacco", "Beverages", "Milk"]  # 418


def _record(path: str, category_id: int, colors: list[tuple[str, str | None]], **label: object) -> dict:
    return {
        "path": path,
        "sha256": f"sha-{path}",
        "status": "ok",
        "timings_ms": {"total_ms": 100.0 * (1 + len(path))},
        "label": {
            "category": {"id": category_id},
            "attributes": {"colors": [{"raw": raw, "value": value} for raw, value in colors]},
            "brand": label.get("brand", ""),
            "visible_text": label.get("visible_text", []),
            "copy": label.get("copy", {}),
            "compliance": {"flags": label.get("flags", [])},
        },
    }


@pytest.fixture
def scored() -> dict:
    config = load_config(None)
    by_path = config.taxonomy.by_path
    records = [
        # exact category; colours {red, blue} against gold {red}: one right, one extra
        _record("a.jpg", by_path[tuple(SHIRTS)], [("Red", "red"), ("navy", "blue")], brand="ARLA ", copy={
            "en": {"title": "Red shirt", "description": "cotton"}, "zh": {"title": "红色T恤", "description": ""}}),
        # too general (an ancestor of the gold node); colours {} against {white}; an unmapped raw word
        _record("b.jpg", by_path[tuple(CLOTHING)], [("eggshell-ish", None)], brand="Nike",
                copy={"zh": {"title": "Red shirt in English", "description": ""}}, flags=[{"term": "最"}]),
        # another top level entirely; colours {black} against {black}
        _record("c.jpg", by_path[tuple(MILK)], [("black", "black")], visible_text=["Arla", "Standard Milk"]),
        {"path": "d.jpg", "status": "truncated", "error": "cut"},  # no label: counts in statuses only
    ]  # fmt: skip
    gold_file = Path(__file__).parent / "_gold.jsonl"
    gold_lines = [
        {"path": "a.jpg", "label": {"category": {"path": SHIRTS}, "attributes": {"colors": ["Red"]}, "brand": "Arla",
                                    "copy": {"en": {"title": "red shirt, cotton"}}}},
        {"path": "b.jpg", "label": {"category": {"id": by_path[tuple(SHIRTS)]}, "attributes": {"colors": ["White"]}}},
        {"sha256": "sha-c.jpg", "category": " > ".join(SHIRTS), "attributes": {"colors": [{"value": "black"}]},
         "visible_text": ["ARLA", "standard milk"]},
    ]  # fmt: skip
    try:
        gold_file.write_text("\n".join(json.dumps(g) for g in gold_lines))
        gold = GoldIndex(load_gold(gold_file, config), None)
    finally:
        gold_file.unlink()
    return evaluate(records, gold, config, "generic", worst=2).as_json()


def test_category_rates_against_gold(scored: dict) -> None:
    assert scored["records"] == 4 and scored["matched_with_gold"] == 3
    category = scored["category"]
    assert category["exact"]["hits"] == 1 and category["exact"]["n"] == 3
    assert category["same_top_level"]["hits"] == 2
    assert category["prediction_is_ancestor"]["hits"] == 1  # b: Clothing for Shirts & Tops
    assert category["gold_is_ancestor"]["hits"] == 0
    low, high = category["exact"]["ci95"]
    assert 0.0 <= low <= 1 / 3 <= high <= 1.0


def test_attribute_precision_recall_f1_micro_and_macro(scored: dict) -> None:
    colors = scored["attributes"]["colors"]
    # tp: red (a), black (c) = 2; fp: blue (a) = 1; fn: white (b) = 1
    assert colors["micro"]["precision"] == pytest.approx(2 / 3)
    assert colors["micro"]["recall"] == pytest.approx(2 / 3)
    # per value F1: red 1, black 1, blue 0, white 0
    assert colors["macro"]["f1"] == pytest.approx(0.5)
    assert colors["raw_unmapped"] == pytest.approx(1 / 4)  # 'eggshell-ish' of four colour entries


def test_brand_text_copy_statuses_and_speed(scored: dict) -> None:
    assert scored["brand"]["exact"]["hits"] == 1 and scored["brand"]["exact"]["n"] == 1  # 'ARLA ' is 'Arla'
    assert scored["visible_text"]["exact"]["hits"] == 1  # case and spacing do not count
    assert scored["titles"] == {"en": {"token_f1": pytest.approx(0.8), "n": 1}}  # 'Red shirt' against 3 gold tokens
    assert scored["statuses"] == {"ok": 0.75, "truncated": 0.25}
    assert scored["copy"]["language_script"]["zh"]["hits"] == 1  # b's zh title is English
    assert scored["copy"]["language_script"]["zh"]["n"] == 2
    assert scored["copy"]["compliance_flags_per_100"] == pytest.approx(100 / 3)
    assert scored["speed_ms"]["n"] == 3 and scored["speed_ms"]["p50"] == 600.0
    assert [w["path"] for w in scored["worst"]] == ["b.jpg", "a.jpg"]  # fewest fields right first
    assert ["Apparel & Accessories", "Food, Beverages & Tobacco", 1] in scored["top_level_confusion"]


def test_text_measures() -> None:
    assert tokens("Arla 有机牛奶 1L") == ["arla", "有", "机", "牛", "奶", "1l"]
    assert token_f1("Standard Milk", "standard milk") == 1.0
    assert token_f1("Standard", "standard milk") == pytest.approx(2 / 3)
    assert language_ok("纯棉T恤", "zh") and not language_ok("cotton tee", "zh")
    assert language_ok("Baumwoll-T-Shirt", "de") and not language_ok("纯棉T恤", "de")


def test_csv_gold_reads_as_the_jsonl_gold_does(tmp_path: Path) -> None:
    config = load_config(None)
    csv_gold = load_gold(FIXTURES / "gold.csv", config)
    assert len(csv_gold) == 10
    shirt = next(g for g in csv_gold if g.path == "products/ms04-red_main.jpg")
    assert shirt.category_id == config.taxonomy.by_path[tuple(SHIRTS)] and shirt.attributes == {"colors": {"red"}}
    zh = tmp_path / "zh.csv"
    zh.write_text("path,category\na.jpg,服饰与配饰 > 服装 > 衬衫与上衣\n", encoding="utf-8")  # the taxonomy's zh names
    assert load_gold(zh, config)[0].category_id == config.taxonomy.by_path[tuple(SHIRTS)]
    milk = next(g for g in csv_gold if g.path == "products/Arla-Standard-Milk_Iconic.jpg")
    assert milk.brand == "Arla" and "colors" not in milk.attributes  # an empty cell is "not given"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"path": "a.jpg", "category": 99999999}\n', "category id 99999999 is not in the taxonomy"),
        ('{"category": 212}\n', "needs a path or a sha256"),
        ("not json\n", "not a JSON line"),
    ],
)
def test_bad_gold_is_a_one_line_usage_error(tmp_path: Path, content: str, message: str) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(content)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"path": "a.jpg", "status": "ok"}) + "\n")
    result = runner.invoke(app, ["eval", str(out), "--gold", str(gold)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_eval_scores_a_real_run_on_the_tiny_model(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    photos = sorted((FIXTURES / "products").iterdir()) + sorted((FIXTURES / "catalogue").iterdir())
    listed = "".join(f"{p}\n" for p in photos)
    args = ["--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj), "--lang", "zh,en"]
    result = runner.invoke(app, ["batch", "-", "-o", str(out), "--no-cache", "--quiet", *args], input=listed)
    assert result.exit_code in (0, 1), result.output
    gold = ["--gold", str(FIXTURES / "gold.csv"), "--root", str(FIXTURES)]
    result = runner.invoke(app, ["eval", str(out), *gold, "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["records"] == 10 and report["matched_with_gold"] == sum(
        1 for r in map(orjson.loads, out.read_bytes().splitlines()) if r["status"] == "ok"
    )
    assert report["category"]["exact"]["n"] == report["matched_with_gold"]
    table = runner.invoke(app, ["eval", str(out), *gold])
    assert table.exit_code == 0 and "against gold" in table.stdout and "same top level" in table.stdout


GMC_FEED = (
    "id\ttitle\tgoogle_product_category\tcolor\tmaterial\tgender\tage_group\tbrand\timage_link\n"
    "t1\tRed tee\t212\tRed/Navy\tCotton\tfemale\tkids\tArla\thttps://shop.example/img/a/1.jpg?v=3\n"
    "t2\tMilk\tFood, Beverages & Tobacco > Beverages > Milk\t\t\t\t\t\thttps://cdn.other.example/2.jpg\n"
    "t3\tNo photo\t212\t\t\t\t\t\t\n"
    "t4\tOdd\tNo Such > Category At All\t\t\t\t\t\tlocal/4.jpg\n"
)
SHOPIFY_EXPORT = (
    "Title,URL handle,Vendor,Product category,Product image URL,Color (product.metafields.shopify.color-pattern)\n"
    "Linen shirt,linen-shirt,Acme,Apparel & Accessories > Clothing > Shirts & Tops,"
    'https://cdn.shopify.com/s/x/shirt.jpg,"White; Beige"\n'
)


def _from_feed(tmp_path: Path, text: str, *args: str) -> tuple[list[dict], str]:
    feed = tmp_path / "feed.txt"
    feed.write_text(text)
    result = runner.invoke(app, ["gold", "from-feed", str(feed), "-o", str(tmp_path / "gold.jsonl"), *args])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "gold.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines], result.output


def test_gold_from_a_merchant_center_feed(tmp_path: Path) -> None:
    entries, said = _from_feed(tmp_path, GMC_FEED, "--map", "https://shop.example/img/=photos")
    assert entries[0] == {
        "path": "photos/a/1.jpg",  # the mapped URL, without its query string
        "label": {
            "category": {"id": 212},
            "attributes": {"colors": ["Red", "Navy"], "materials": ["Cotton"], "audience": ["women", "kids"]},
            "brand": "Arla",
            "copy": {"en": {"title": "Red tee"}},
        },
    }
    assert entries[1] == {
        "path": "local/4.jpg",
        "label": {"copy": {"en": {"title": "Odd"}}},
    }  # unknown category left out
    assert len(entries) == 2
    assert "2 gold entries from 4 rows" in said
    assert "1 rows without a photo, 1 photo URLs no --map covers, 1 categories not in the taxonomy" in said
    gold = load_gold(tmp_path / "gold.jsonl", load_config(None))  # what eval reads back
    assert gold[0].attributes["colors"] == {"red", "blue"} and gold[0].category_id == 212


def test_gold_from_a_shopify_export(tmp_path: Path) -> None:
    entries, _ = _from_feed(tmp_path, SHOPIFY_EXPORT, "--map", "https://cdn.shopify.com/s/x/=shop")
    assert entries == [{
        "path": "shop/shirt.jpg",
        "label": {"category": {"id": 212}, "attributes": {"colors": ["White", "Beige"]}, "brand": "Acme",
                  "copy": {"en": {"title": "Linen shirt"}}},
    }]  # fmt: skip


def test_a_file_that_is_no_feed_is_a_usage_error(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name\n1,x\n")
    result = runner.invoke(app, ["gold", "from-feed", str(feed)])
    assert result.exit_code == 2 and "not a Merchant Center feed" in result.output
    feed.write_text(GMC_FEED)
    result = runner.invoke(app, ["gold", "from-feed", str(feed), "--image-column", "picture"])
    assert result.exit_code == 2 and "no column 'picture'" in result.output


def _labelled(path: str, category_id: int, colors: list[str], status: str = "ok", ms: float = 100.0) -> dict:
    return {
        "path": path, "status": status, "timings_ms": {"total_ms": ms},
        "label": {"category": {"id": category_id, "path": list(load_config(None).taxonomy.nodes[category_id].path)},
                  "attributes": {"colors": [{"raw": c, "value": c} for c in colors]}, "brand": ""},
    }  # fmt: skip


def test_mcnemar_exact_p_values() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_p(0, 8) == pytest.approx(2 / 256)
    assert mcnemar_p(3, 1) == pytest.approx(2 * 5 / 16)


def test_compare_agreement_differences_and_the_winner_against_gold(tmp_path: Path) -> None:
    # A gets the category of all ten photos right, B only the first two; colours agree except on p9.
    a = [_labelled(f"p{i}.jpg", 212, ["red"], ms=100.0) for i in range(10)] + [_labelled("only-a.jpg", 212, [])]
    b = [_labelled(f"p{i}.jpg", 212 if i < 2 else 418, ["red"] if i < 9 else ["blue"], ms=300.0) for i in range(10)]
    b.append({"path": "p0.jpg", "status": "corrupt", "error": "x"})  # a later record of a path wins, as in merge
    gold = tmp_path / "gold.csv"
    gold.write_text("path,category_id,colors\n" + "".join(f"p{i}.jpg,212,red\n" for i in range(10)))
    files = {}
    for name, records in (("a", a), ("b", b)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    args = ["compare", str(files["a"]), str(files["b"]), "--gold", str(gold), "--root", str(tmp_path)]
    result = runner.invoke(app, [*args, "--json", "--examples", "3", "--html", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["both_ok"] == 9 and report["only_in_a"] == 1 and report["only_in_b"] == 0  # p0 failed in B
    assert report["agreement"]["category"]["hits"] == 1  # p1 only
    assert report["agreement"]["colors"]["hits"] == 8  # all but p9
    assert report["statuses"]["b"] == {"corrupt": 1, "ok": 10}
    assert report["ms_per_image_p50"] == {"a": 100.0, "b": 300.0}
    category = report["against_gold"]["category"]
    assert (category["a_only_right"], category["b_only_right"], category["n"]) == (8, 0, 9)
    assert category["mcnemar_p"] == pytest.approx(2 / 256) and category["winner"] == "a"
    colors = report["against_gold"]["colors"]
    assert (colors["a_only_right"], colors["winner"]) == (1, None)  # one photo is no evidence
    assert [d["path"] for d in report["disagreements"]] == ["p2.jpg", "p3.jpg", "p4.jpg"]
    assert report["disagreements"][0]["fields"]["category"] == {"a": 212, "b": 418}
    assert "A and B agree" in (tmp_path / "c.html").read_text()
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "McNemar" in table.stdout and "differ: p2.jpg" in table.stdout


def test_learn_turns_corrections_into_a_template_that_eval_shows_working(tmp_path: Path) -> None:
    def record(path: str, colors: list[tuple[str, str | None]], raw_category: list[str], title: str) -> dict:
        return {
            "path": path, "status": "ok",
            "label": {"category": {"id": 1604, "path": CLOTHING, "raw": raw_category, "match": 0.3},
                      "attributes": {"colors": [{"raw": r, "value": v} for r, v in colors]},
                      "copy": {"en": {"title": title, "description": ""}}},
        }  # fmt: skip

    records = [
        record(
            "a.jpg", [("eggshell", None), ("red", "red")], ["Apparel & Accessories", "tee thing"], "Best Seller Red Tee"
        ),
        record("b.jpg", [("eggshell", None)], ["Apparel & Accessories", "tee thing"], "Best Seller Tee"),
        record("c.jpg", [("eggshell", None), ("puce-ish", None)], ["Apparel & Accessories", "Clothing"], "Tee"),
    ]
    run = tmp_path / "run.jsonl"
    run.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(g) + "\n" for g in [
        {"path": "a.jpg", "label": {"category": {"id": 212}, "attributes": {"colors": ["red", "white"]},
                                    "copy": {"en": {"title": "Red Tee"}}}},
        {"path": "b.jpg", "label": {"category": {"id": 212}, "attributes": {"colors": ["white"]},
                                    "copy": {"en": {"title": "Tee"}}}},
        # two unmapped wordings for one added value: ambiguous, so nothing is learnt from c
        {"path": "c.jpg", "label": {"category": {"id": 1604}, "attributes": {"colors": ["white", "black"]}}},
    ]))  # fmt: skip
    template = tmp_path / "shop.toml"
    result = runner.invoke(app, ["learn", str(gold), "--run", str(run), "-o", str(template), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 values with new synonyms, 1 category aliases, 1 removed phrases" in result.output
    text = template.read_text()
    tables = tomllib.loads(text)  # written by a TOML writer: read it with a TOML parser
    assert tables["vocabularies"]["colors"]["white"]["synonyms"] == ["eggshell"]
    assert tables["taxonomy"]["aliases"] == {"tee thing": 212} and '"tee thing" x2' in text  # count in a comment
    rule = tables["compliance"]["rules"][0]
    assert rule["terms"] == ["Best Seller"] and rule["lang"] == "en"
    config = load_config(template)  # a valid --template file
    assert config.vocabularies["colors"].normalise("eggshell") == "white"
    assert any(r.id == "shop-removed-en" for r in config.rules)

    def scores(*extra: str) -> dict:
        out = runner.invoke(app, ["eval", str(run), "--gold", str(gold), "--root", str(tmp_path), "--json", *extra])
        assert out.exit_code == 0, out.output
        return orjson.loads(out.stdout)

    before, after = scores(), scores("--template", str(template), "--remap")
    assert before["category"]["exact"]["hits"] == 1 and after["category"]["exact"]["hits"] == 3
    assert after["attributes"]["colors"]["micro"]["f1"] > before["attributes"]["colors"]["micro"]["f1"]


def test_template_aliases_name_real_categories_and_leave_the_built_in_taxonomy_alone(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[taxonomy.aliases]\n"tee thing" = 99999999\n')
    with pytest.raises(UsageError, match="unknown taxonomy ids"):
        load_config(bad)
    good = tmp_path / "good.toml"
    good.write_text('[taxonomy.aliases]\n"tee thing" = 212\n')
    assert load_config(good).taxonomy.match("Apparel & Accessories", ["tee thing"])[0].id == 212
    assert "tee thing" not in load_config(None).taxonomy.aliases
