"""Shop feeds: each output checked by a checker written from the shop's specification, not from our writer.

Google Merchant Center product data specification: attribute names as TSV headers, one item per
line, no tabs or line breaks inside values; id 1-50 characters; title or structured_title, whose
text-feed form is `digital_source_type:content` (content 1-150, quoted when it holds `:` or `"`);
description up to 5000; google_product_category a taxonomy id; color up to 3 values joined by
`/`, each up to 40 and together up to 100; gender male, female or unisex; age_group newborn,
infant, toddler, kids or adult; image_link an http(s) URL up to 2000; up to 10 additional image
links, comma-separated. XML feeds: RSS 2.0 items with the g: namespace, structured attributes
with g:digital_source_type and g:content children.

Shopify product CSV: a header row with Shopify's column names; rows of one product share a URL
handle (lower-case letters, digits, dashes) and follow each other, the first carrying the Title;
Image position a whole number; SEO title up to 70 and SEO description up to 320 characters;
Status active, draft or archived.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
from typer.testing import CliRunner

from qvl_label.cli import app
from qvl_label.labeling.config import load_config
from qvl_label.labeling.shaping import LabelShaper
from qvl_label.labeling.taxonomy import load_taxonomy

from .conftest import sample_answer

runner = CliRunner()
G = "{http://base.google.com/ns/1.0}"
GMC_ATTRIBUTES = {
    "id", "title", "description", "structured_title", "structured_description", "google_product_category",
    "product_type", "color", "material", "pattern", "gender", "age_group", "image_link", "additional_image_link",
}  # fmt: skip
BASE = "https://shop.example.com/photos"


def _label(**overrides: object) -> dict:
    config = load_config()
    answer = sample_answer(("en", "zh"), **overrides)
    return LabelShaper(config, config.channel("generic"), ("en", "zh")).shape(answer)


def _records(tmp_path: Path) -> Path:
    tee = _label()
    dress = _label(category={"top": "Apparel & Accessories", "path": ["Clothing", "Dresses"]},
                   colors=["black", "white", "red", "navy"], audience=["women"])  # fmt: skip
    dress["copy"]["en"]["title"] = 'Summer dress: "linen" look'  # a colon and quotes to escape
    dress["copy"]["en"]["description"] = "Linen\ufffe dress,\tfully lined."  # XML cannot hold U+FFFE; a tab
    long_title = _label()
    long_title["copy"]["en"]["title"] = "x" * 200  # cannot be a valid GMC title
    records = [
        {"path": "photos/tee-front.jpg", "status": "ok", "label": tee, "languages": ["en", "zh"]},
        {"path": "photos/tee-back.jpg", "status": "ok", "label": tee, "languages": ["en", "zh"]},
        {"path": "photos/dress.jpg", "status": "ok", "label": dress, "languages": ["en", "zh"]},
        {"path": "photos/broken.jpg", "status": "corrupt", "label": None, "languages": ["en", "zh"]},
        {"path": "photos/long.jpg", "status": "ok", "label": long_title, "languages": ["en", "zh"]},
    ]
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    (tmp_path / "ids.csv").write_text("path,id\nphotos/tee-front.jpg,TEE-1\nphotos/tee-back.jpg,TEE-1\n")
    return path


def _export(tmp_path: Path, feed: str, *extra: str) -> tuple[str, str]:
    source = _records(tmp_path)
    result = runner.invoke(app, ["export", str(source), "--format", feed, "-o", "-", "--image-base-url", BASE,
                                 "--root", "photos", "--ids", str(tmp_path / "ids.csv"), *extra])  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def _check_structured(value: str, limit: int) -> str:
    source, _, content = value.partition(":")
    assert source in ("", "default", "trained_algorithmic_media"), value
    if content.startswith('"'):
        assert content.endswith('"'), value
        content = content[1:-1].replace('""', '"')
    else:
        assert ":" not in content and '"' not in content, value
    assert 1 <= len(content) <= limit, value
    return content


def _check_gmc_item(item: dict[str, str]) -> None:
    taxonomy = load_taxonomy()
    assert 1 <= len(item["id"]) <= 50
    assert item.get("title") or item.get("structured_title")
    if item.get("structured_title"):
        _check_structured(item["structured_title"], 150)
    if item.get("structured_description"):
        _check_structured(item["structured_description"], 5000)
    assert len(item.get("description", "")) <= 5000
    assert int(item["google_product_category"]) in taxonomy.nodes
    colors = [c for c in item.get("color", "").split("/") if c]
    assert len(colors) <= 3 and all(len(c) <= 40 for c in colors) and len(item.get("color", "")) <= 100
    assert item.get("gender", "") in ("", "male", "female", "unisex")
    assert item.get("age_group", "") in ("", "newborn", "infant", "toddler", "kids", "adult")
    assert re.match(r"^https?://", item["image_link"]) and len(item["image_link"]) <= 2000
    extra = [u for u in item.get("additional_image_link", "").split(",") if u]
    assert len(extra) <= 10 and all(re.match(r"^https?://", u) for u in extra)


def test_gmc_tsv_follows_the_specification(tmp_path: Path) -> None:
    text, stderr = _export(tmp_path, "gmc-tsv")
    lines = text.split("\n")[:-1]
    header = lines[0].split("\t")
    assert set(header) <= GMC_ATTRIBUTES
    items = []
    for line in lines[1:]:
        values = line.split("\t")
        assert len(values) == len(header) and "\r" not in line
        items.append(dict(zip(header, values, strict=True)))
    for item in items:
        _check_gmc_item(item)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {"TEE-1", next(k for k in by_id if k.startswith("dress-"))}  # 2 photos merged, 1 alone
    tee = by_id["TEE-1"]
    assert tee["image_link"] == f"{BASE}/tee-front.jpg" and tee["additional_image_link"] == f"{BASE}/tee-back.jpg"
    assert tee["google_product_category"] == "212" and tee["gender"] == "male" and tee["age_group"] == "adult"
    assert tee["structured_title"] == "trained_algorithmic_media:Men's red running tee" and tee["title"] == ""
    dress = next(i for k, i in by_id.items() if k.startswith("dress-"))
    assert _check_structured(dress["structured_title"], 150) == 'Summer dress: "linen" look'
    assert dress["color"] == "black/white/red" and dress["gender"] == "female"
    assert "1 records not ok" in stderr and "long" in stderr and "cannot be valid" in stderr  # reported, not cut
    assert "4 colours, the first 3 kept" in stderr


def test_gmc_xml_follows_the_specification(tmp_path: Path) -> None:
    text, _ = _export(tmp_path, "gmc-xml")
    root = ET.fromstring(text)
    assert root.tag == "rss" and root.get("version") == "2.0"
    items = root.findall("./channel/item")
    assert len(items) == 2
    for element in items:
        item: dict[str, str] = {}
        for child in element:
            name = child.tag.removeprefix(G)
            if name in ("structured_title", "structured_description"):
                source = child.find(f"{G}digital_source_type")
                content = child.find(f"{G}content")
                assert source is not None and source.text == "trained_algorithmic_media" and content is not None
                item[name] = f'trained_algorithmic_media:"{(content.text or "").replace(chr(34), chr(34) * 2)}"'
            elif name == "additional_image_link":
                item[name] = ",".join(filter(None, [item.get(name, ""), child.text or ""]))
            else:
                item[name] = child.text or ""
        assert set(item) <= GMC_ATTRIBUTES
        _check_gmc_item(item)


def test_shopify_csv_follows_shopifys_rules(tmp_path: Path) -> None:
    mapping = tmp_path / "shopify_to_google.txt"
    mapping.write_text(
        "→ Apparel & Accessories > Clothing > Tops > T-Shirts\n⇒ Apparel & Accessories > Clothing > Shirts & Tops\n\n"
        "→ Apparel & Accessories > Clothing > Dresses\n⇒ Apparel & Accessories > Clothing > Dresses\n"
        "→ Apparel & Accessories > Clothing > Skirts & Dresses\n⇒ Apparel & Accessories > Clothing > Dresses\n"
    )
    text, stderr = _export(tmp_path, "shopify-csv", "--shopify-mapping", str(mapping), "--vendor", "Acme")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert {"Title", "URL handle"} <= set(rows[0])
    handles = [r["URL handle"] for r in rows]
    for handle in handles:
        assert re.fullmatch(r"[a-z0-9-]+", handle)
    seen: list[str] = []
    for row in rows:
        if row["URL handle"] not in seen:
            seen.append(row["URL handle"])
            assert row["Title"] and row["Status"] in ("active", "draft", "archived")
        else:
            assert seen[-1] == row["URL handle"]  # rows of one product follow each other
        assert row["Image position"].isdigit()
        assert len(row["SEO title"]) <= 70 and len(row["SEO description"]) <= 320
    tee = [r for r in rows if r["URL handle"] == "tee-1"]
    assert [r["Image position"] for r in tee] == ["1", "2"]
    assert tee[0]["Product category"] == "Apparel & Accessories > Clothing > Tops > T-Shirts"  # unique reverse
    assert tee[0]["Google Shopping / Google product category"] == "Apparel & Accessories > Clothing > Shirts & Tops"
    assert tee[0]["Vendor"] == "Acme" and tee[0]["Color (product.metafields.shopify.color-pattern)"] == "red"
    dress = next(r for r in rows if r["URL handle"].startswith("dress-"))
    assert dress["Product category"] == ""  # two Shopify categories map to Dresses: ambiguous, left empty
    assert "Product category left empty for 1 products" in stderr


def test_shop_feeds_need_public_image_urls(tmp_path: Path) -> None:
    source = _records(tmp_path)
    result = runner.invoke(app, ["export", str(source), "--format", "gmc-tsv", "-o", str(tmp_path / "feed.tsv")])
    assert result.exit_code == 2 and "--image-base-url" in result.output
    result = runner.invoke(app, ["export", str(source), "--format", "ebay", "-o", str(tmp_path / "feed.tsv")])
    assert result.exit_code == 2 and "--format takes one of" in result.output


def test_a_product_record_is_one_feed_item_with_its_photos_and_items_stay_in_its_row(tmp_path: Path) -> None:
    """batch --group-by writes one record per product: one GMC item, one CSV row; other products in
    the photo (items) are no rows of their own."""
    outfit = _label(scene="outfit", items=[
        {"category": {"top": "Apparel & Accessories", "path": ["Clothing", "Pants"]}, "colors": ["navy"],
         "materials": ["denim"], "title": "Navy jeans"}])  # fmt: skip
    assert outfit["scene"] == "outfit" and outfit["items"][0]["attributes"]["colors"][0]["value"] == "blue"
    photos = [{"path": "photos/sku7_main.jpg", "status": "ok", "sent": True},
              {"path": "photos/sku7_back.jpg", "status": "ok", "sent": True},
              {"path": "photos/sku7_extra.jpg", "status": "not_sent", "sent": False},
              {"path": "photos/sku7_broken.jpg", "status": "corrupt", "sent": False}]  # fmt: skip
    record = {"path": "photos/sku7_main.jpg", "status": "ok", "label": outfit, "languages": ["en", "zh"],
              "product": "photos/sku7", "images": photos}  # fmt: skip
    source = tmp_path / "out.jsonl"
    source.write_bytes(orjson.dumps(record) + b"\n")
    result = runner.invoke(app, ["export", str(source), "--format", "gmc-tsv", "-o", "-", "--image-base-url", BASE,
                                 "--root", "photos"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (item,) = list(csv.DictReader(io.StringIO(result.stdout), delimiter="\t"))
    assert item["id"].startswith("sku7-") and item["image_link"] == f"{BASE}/sku7_main.jpg"
    assert item["additional_image_link"] == f"{BASE}/sku7_back.jpg,{BASE}/sku7_extra.jpg"  # the broken one is left out
    result = runner.invoke(app, ["export", str(source), "--csv", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8-sig"))))
    assert row["scene"] == "outfit" and row["items"] == "Navy jeans (Apparel & Accessories > Clothing > Pants)"
    assert row["product"] == "photos/sku7" and row["product_images"] == "photos/sku7_main.jpg | photos/sku7_back.jpg"
