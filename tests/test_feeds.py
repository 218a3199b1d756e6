"""Shop feeds: each output parsed with a real parser (csv, xml.etree) and checked by a checker written from
the shop's specification, not from our writer.

Google Merchant Center product data specification, for a supplemental feed (an `id` plus the attributes it
updates, no empty value: nothing says an empty cell leaves the primary feed's alone): attribute names as TSV headers,
one item per line, no tabs or line breaks inside values; id 1-50 characters; structured_title and
structured_description, whose text-feed form is `digital_source_type:content` (content 1-150 and 1-5000,
quoted when it holds `:` or `"`); brand up to 70; google_product_category a taxonomy id; color up to 3
values joined by `/`, each 1-40 and together up to 100, never `multicolor`; gender male, female or
unisex; age_group newborn, infant, toddler, kids or adult; image_link an https URL up to 2000; up to 10
additional image links. XML feeds: RSS 2.0, whose channel needs title, link and description; items in
the g: namespace, structured attributes with g:digital_source_type and g:content children.

Shopify product CSV: a header row with Shopify's column names; rows of one product share a URL handle
(lower-case letters, digits, dashes), unique per product, and follow each other, the first carrying the
Title; Description is HTML; Image position a whole number; SEO title up to 70 and SEO description up to
320 characters; Status active, draft or archived; Google Shopping / Gender Female, Male or Unisex; Google
Shopping / Age group Newborn, Infant, Toddler, Kids or Adult.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
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
    "product_type", "brand", "color", "material", "pattern", "gender", "age_group", "image_link",
    "additional_image_link",
}  # fmt: skip
BASE = "https://shop.example.com/photos"
SHOP = "https://shop.example.com/"


def _label(languages: tuple[str, ...] = ("en", "zh"), **overrides: object) -> dict:
    config = load_config()
    answer = sample_answer(languages, **overrides)
    return LabelShaper(config, config.channel("generic"), languages).shape(answer)


def _write(tmp_path: Path, records: list[dict], ids: str | None = None) -> Path:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    if ids is not None:
        (tmp_path / "ids.csv").write_text(ids)
    return path


def _records(tmp_path: Path) -> Path:
    """A run in en and zh: a tee in two photos, a dress, a failed photo and a product whose title is too long."""
    tee = _label()
    dress = _label(category={"top": "Apparel & Accessories", "path": ["Clothing", "Dresses"]},
                   colors=["black", "white", "red", "navy"], audience=["women"], brand="Acme & Sons")  # fmt: skip
    dress["copy"]["en"]["title"] = 'Summer dress: "linen" look'  # a colon and quotes to escape
    dress["copy"]["en"]["description"] = "Linen\ufffe dress,\tfully lined."  # XML cannot hold U+FFFE; a tab
    long_title = _label()
    long_title["copy"]["en"]["title"] = "x" * 200  # cannot be a valid title
    records = [
        {"path": "photos/tee-front.jpg", "status": "ok", "label": tee, "languages": ["en", "zh"]},
        {"path": "photos/tee-back.jpg", "status": "ok", "label": tee, "languages": ["en", "zh"]},
        {"path": "photos/dress.jpg", "status": "ok", "label": dress, "languages": ["en", "zh"]},
        {"path": "photos/broken.jpg", "status": "corrupt", "label": None, "languages": ["en", "zh"]},
        {"path": "photos/long.jpg", "status": "ok", "label": long_title, "languages": ["en", "zh"]},
    ]
    ids = "path,id\nphotos/tee-front.jpg,TEE-1\nphotos/tee-back.jpg,TEE-1\nphotos/dress.jpg,DRESS-9\n"
    ids += "photos/long.jpg,L-1\n"
    return _write(tmp_path, records, ids)


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["export", *args])
    return result.exit_code, result.stdout, result.stderr


def _export(tmp_path: Path, feed: str, *extra: str, code: int = 1) -> tuple[str, str]:
    source = _records(tmp_path)
    exit_code, out, err = _run(str(source), "--format", feed, "-o", "-", "--lang", "en", "--image-base-url", BASE,
                               "--root", "photos", "--ids", str(tmp_path / "ids.csv"), *extra)  # fmt: skip
    assert exit_code == code, err
    return out, err


def _check_structured(value: str, limit: int) -> str:
    source, _, content = value.partition(":")
    assert source in ("default", "trained_algorithmic_media"), value
    if content.startswith('"'):
        assert content.endswith('"'), value
        content = content[1:-1].replace('""', '"')
    else:
        assert ":" not in content and '"' not in content, value
    assert 1 <= len(content) <= limit, value
    return content


def _check_gmc_item(item: dict[str, str]) -> None:
    """One item of a supplemental feed, as Merchant Center's specification has it."""
    assert set(item) <= GMC_ATTRIBUTES and len(item) >= 2  # an id and at least one attribute it updates
    assert all(value != "" for value in item.values()), item  # an empty value would clear the primary feed's
    assert 1 <= len(item["id"]) <= 50
    assert item.get("title") or item.get("structured_title")  # the issue: no item without a title of either kind
    assert item.get("description") or item.get("structured_description")
    if "structured_title" in item:
        _check_structured(item["structured_title"], 150)
    if "structured_description" in item:
        _check_structured(item["structured_description"], 5000)
    assert len(item.get("brand", "")) <= 70
    if "google_product_category" in item:
        assert int(item["google_product_category"]) in load_taxonomy().nodes
    if "color" in item:
        colors = item["color"].split("/")
        assert len(colors) <= 3 and len(item["color"]) <= 100
        assert all(1 <= len(c) <= 40 for c in colors)
        assert not {c.lower() for c in colors} & {"multicolor", "multicolour", "various", "assorted"}
    assert item.get("gender", "male") in ("male", "female", "unisex")
    assert item.get("age_group", "adult") in ("newborn", "infant", "toddler", "kids", "adult")
    links = [item[k] for k in ("image_link",) if k in item] + item.get("additional_image_link", "").split(",")
    for link in filter(None, links):
        assert link.startswith("https://") and len(link) <= 2000 and ".." not in link
    assert len([u for u in item.get("additional_image_link", "").split(",") if u]) <= 10


def _tsv_items(text: str) -> list[dict[str, str]]:
    assert "\r" not in text
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    assert all(len(row) == len(header) for row in body)
    return [dict(zip(header, row, strict=True)) for row in body]


def _xml_items(text: str) -> list[dict[str, str]]:
    root = ET.fromstring(text)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel is not None
    for required in ("title", "link", "description"):  # RSS 2.0's required channel elements
        assert (channel.findtext(required) or "").strip(), required
    items = []
    for element in channel.findall("item"):
        item: dict[str, str] = {}
        for child in element:
            name = child.tag.removeprefix(G)
            if name in ("structured_title", "structured_description"):
                source = child.findtext(f"{G}digital_source_type")
                content = child.findtext(f"{G}content") or ""
                assert source == "trained_algorithmic_media"
                item[name] = f'trained_algorithmic_media:"{content.replace(chr(34), chr(34) * 2)}"'
            elif name == "additional_image_link":
                item[name] = ",".join(filter(None, [item.get(name, ""), child.text or ""]))
            else:
                item[name] = child.text or ""
        items.append(item)
    return items


def test_gmc_tsv_is_a_supplemental_feed_by_the_specification(tmp_path: Path) -> None:
    text, stderr = _export(tmp_path, "gmc-tsv")  # a failed record and a too-long title: left out, exit 1
    items = _tsv_items(text)
    for item in items:
        _check_gmc_item(item)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {"TEE-1", "DRESS-9"}  # the shop's ids; two photos merged into one product
    tee, dress = by_id["TEE-1"], by_id["DRESS-9"]
    assert tee["image_link"] == f"{BASE}/tee-front.jpg"
    assert tee["google_product_category"] == "212" and tee["gender"] == "male" and tee["age_group"] == "adult"
    assert tee["structured_title"] == "trained_algorithmic_media:Men's red running tee"
    assert _check_structured(dress["structured_title"], 150) == 'Summer dress: "linen" look'
    assert dress["color"] == "black/white/red" and dress["gender"] == "female"
    # brand and additional_image_link: only some products have one, so the TSV leaves them out and says so
    assert "brand" not in dress and "left out of the TSV" in stderr and "brand" in stderr
    assert "1 records not ok" in stderr and "L-1" in stderr and "cannot be valid" in stderr
    assert "4 colours, the first 3 kept" in stderr


def test_gmc_xml_is_rss_with_a_channel_and_each_products_attributes(tmp_path: Path) -> None:
    text, _ = _export(tmp_path, "gmc-xml", "--shop-url", SHOP)
    items = _xml_items(text)
    for item in items:
        _check_gmc_item(item)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {"TEE-1", "DRESS-9"}
    assert by_id["DRESS-9"]["brand"] == "Acme & Sons" and "brand" not in by_id["TEE-1"]  # per item, never empty
    assert by_id["TEE-1"]["additional_image_link"] == f"{BASE}/tee-back.jpg"
    assert _check_structured(by_id["DRESS-9"]["structured_description"], 5000) == "Linen dress, fully lined."
    code, _, stderr = _run(str(tmp_path / "out.jsonl"), "--format", "gmc-xml", "-o", "-", "--lang", "en",
                           "--ids", str(tmp_path / "ids.csv"))  # fmt: skip
    assert code == 2 and "--shop-url" in stderr


def test_colours_are_ones_merchant_center_accepts(tmp_path: Path) -> None:
    many = _label(("en",), colors=["black and white"])  # two colours in one wording: multicolour
    assert [c["value"] for c in many["attributes"]["colors"]] == ["multicolour"]
    long_names = _label(("en",))
    long_names["attributes"]["colors"] = [{"value": n, "raw": n} for n in ("a" * 40, "b" * 40, "c" * 30, "d" * 41)]
    source = _write(tmp_path, [
        {"path": "a.jpg", "status": "ok", "label": many, "languages": ["en"]},
        {"path": "b.jpg", "status": "ok", "label": long_names, "languages": ["en"]},
    ], "path,id\na.jpg,A\nb.jpg,B\n")  # fmt: skip
    code, out, err = _run(str(source), "--format", "gmc-xml", "-o", "-", "--ids", str(tmp_path / "ids.csv"),
                          "--shop-url", SHOP)  # fmt: skip
    assert code == 0, err
    by_id = {i["id"]: i for i in _xml_items(out)}
    for item in by_id.values():
        _check_gmc_item(item)
    assert "color" not in by_id["A"]  # multicolour is no colour: the primary feed's stays
    assert by_id["B"]["color"] == "a" * 40 + "/" + "b" * 40  # the third would pass 100: cut at a name boundary


def test_the_default_workflow_writes_the_runs_only_language(tmp_path: Path) -> None:
    """batch labels in zh by default: export takes zh without --lang; a language the run never wrote is a
    usage error naming the ones it has; a run in several languages asks which."""
    zh = _label(("zh",))
    source = _write(
        tmp_path, [{"path": "a.jpg", "status": "ok", "label": zh, "languages": ["zh"]}], "path,id\na.jpg,A\n"
    )
    code, out, err = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--ids", str(tmp_path / "ids.csv"))
    assert code == 0, err
    (item,) = _tsv_items(out)
    _check_gmc_item(item)
    assert _check_structured(item["structured_title"], 150) == "男士酒红色短袖运动T恤"
    code, _, err = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--ids", str(tmp_path / "ids.csv"),
                        "--lang", "en")  # fmt: skip
    assert code == 2 and "--lang en" in err and "zh" in err
    two = _write(tmp_path, [{"path": "a.jpg", "status": "ok", "label": _label(), "languages": ["en", "zh"]}])
    code, _, err = _run(str(two), "--format", "gmc-tsv", "-o", "-", "--ids", str(tmp_path / "ids.csv"))
    assert code == 2 and "en, zh" in err and "--lang" in err


def test_a_feed_with_products_left_out_or_none_does_not_exit_0(tmp_path: Path) -> None:
    source = _records(tmp_path)
    target = tmp_path / "feed.tsv"
    ids = str(tmp_path / "ids.csv")
    code, _, err = _run(str(source), "--format", "gmc-tsv", "-o", str(target), "--ids", ids, "--lang", "en")
    assert code == 1 and target.exists() and "L-1" in err  # written, but not all of it: 1
    empty, untold = _label(("en",)), _label(("en",))
    empty["copy"]["en"] = {"title": "", "description": ""}
    untold["copy"]["en"]["description"] = ""
    records = [{"path": f"{name}.jpg", "status": "ok", "label": label, "languages": ["en"]}
               for name, label in (("a", empty), ("b", untold))]  # fmt: skip
    lone = _write(tmp_path, records, "path,id\na.jpg,A\nb.jpg,B\n")
    target.unlink()
    code, _, err = _run(str(lone), "--format", "gmc-tsv", "-o", str(target), "--ids", ids)
    assert code == 1 and "no product could be written" in err and not target.exists()  # no title, no description
    assert "A: title (en) empty" in err and "B: description (en) empty" in err


def test_merchant_center_ids_come_from_the_shop(tmp_path: Path) -> None:
    """Without the shop's ids a supplemental feed matches nothing: --ids or --primary-feed, else a usage error.
    The primary feed's items are matched by image URL, or by image file name where that is unique."""
    label = _label(("en",))
    source = _write(tmp_path, [
        {"path": "photos/a.jpg", "status": "ok", "label": label, "languages": ["en"]},
        {"path": "photos/sub/b c.jpg", "status": "ok", "label": label, "languages": ["en"]},
        {"path": "photos/dup.jpg", "status": "ok", "label": label, "languages": ["en"]},
    ])  # fmt: skip
    code, _, err = _run(str(source), "--format", "gmc-tsv", "-o", "-")
    assert code == 2 and "supplemental" in err and "--ids" in err and "--primary-feed" in err
    primary = tmp_path / "primary.tsv"
    primary.write_text(
        "id\ttitle\tlink\tprice\tavailability\timage_link\tadditional_image_link\n"
        f"SKU-A\tA\t{SHOP}a\t9.99 USD\tin_stock\t{BASE}/a.jpg\t\n"
        f"SKU-B\tB\t{SHOP}b\t9.99 USD\tin_stock\thttps://cdn.example.net/x/b%20c.jpg\t\n"
        f"SKU-D1\tD\t{SHOP}d\t9.99 USD\tin_stock\thttps://cdn.example.net/1/dup.jpg\t\n"
        f"SKU-D2\tD\t{SHOP}d\t9.99 USD\tin_stock\thttps://cdn.example.net/2/dup.jpg\t\n"
    )
    code, out, err = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--primary-feed", str(primary),
                          "--image-base-url", BASE, "--root", "photos")  # fmt: skip
    assert code == 1  # dup.jpg names two of the shop's items: left out, said
    items = {i["id"]: i for i in _tsv_items(out)}
    assert set(items) == {"SKU-A", "SKU-B"} and "dup" in err and "no id of the shop's" in err
    rss = tmp_path / "primary.xml"
    rss.write_text(f'<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><title>s</title>'
                   f"<link>{SHOP}</link><description>d</description><item><g:id>SKU-X</g:id>"
                   f"<g:image_link>https://cdn.example.net/a.jpg</g:image_link></item></channel></rss>")  # fmt: skip
    code, out, _ = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--primary-feed", str(rss))
    assert code == 1 and [i["id"] for i in _tsv_items(out)] == ["SKU-X"]


def test_ids_that_match_no_record_are_not_silently_accepted(tmp_path: Path) -> None:
    label = _label(("en",))
    source = _write(tmp_path, [{"path": "a.jpg", "status": "ok", "label": label, "languages": ["en"]}],
                    "path,id\na.jpg,A\nmissing.jpg,M\n")  # fmt: skip
    code, out, err = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--ids", str(tmp_path / "ids.csv"))
    assert code == 1 and "1 --ids paths match no record" in err and "missing.jpg" in err
    assert [i["id"] for i in _tsv_items(out)] == ["A"]
    (tmp_path / "ids.csv").write_text("path,id\n/elsewhere/a.jpg,A\n")
    code, _, err = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--ids", str(tmp_path / "ids.csv"))
    assert code == 2 and "no path in --ids" in err


def test_image_urls_publish_only_paths_under_root_over_https(tmp_path: Path) -> None:
    label = _label(("en",))

    def export(path: str, *extra: str) -> tuple[int, str, str]:
        source = _write(tmp_path, [{"path": path, "status": "ok", "label": label, "languages": ["en"]}],
                        f"path,id\n{path},A\n")  # fmt: skip
        return _run(str(source), "--format", "gmc-tsv", "-o", "-", "--ids", str(tmp_path / "ids.csv"), *extra)

    code, _, err = export("/home/alice/photos/a.jpg", "--image-base-url", BASE)
    assert code == 2 and "absolute" in err and "--root" in err
    code, _, err = export("/home/alice/photos/a.jpg", "--image-base-url", BASE, "--root", "/srv/shop")
    assert code == 2 and "outside --root" in err
    code, _, err = export("photos/../../secret/a.jpg", "--image-base-url", BASE, "--root", "photos")
    assert code == 2 and "`..`" in err
    code, out, err = export("/home/alice/photos/sub/a b.jpg", "--image-base-url", BASE, "--root", "/home/alice/photos")
    assert code == 0, err
    (item,) = _tsv_items(out)
    assert item["image_link"] == f"{BASE}/sub/a%20b.jpg"
    for bad in ("http://shop.example.com/p", "https:///p", "photos/", "ftp://x.example/p", "https://x.example/p?a=1"):
        code, _, err = export("a.jpg", "--image-base-url", bad)
        assert code == 2 and "--image-base-url takes an absolute https:// URL" in err, bad
    code, out, err = export("a.jpg", "--image-base-url", "http://staging.example.com/p", "--allow-http")
    assert code == 0 and _tsv_items(out)[0]["image_link"] == "http://staging.example.com/p/a.jpg", err


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _shopify_rows(text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    seen: list[str] = []
    for row in rows:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", row["URL handle"])
        if row["URL handle"] not in seen:
            seen.append(row["URL handle"])
            assert row["Title"] and len(row["Title"]) <= 255 and row["Status"] in ("active", "draft", "archived")
        else:
            assert seen[-1] == row["URL handle"] and not row["Title"]  # rows of one product follow each other
        assert row["Image position"].isdigit() and row["Product image URL"].startswith("https://")
        assert len(row["SEO title"]) <= 70 and len(row["SEO description"]) <= 320
        assert row["Google Shopping / Gender"] in ("", "Female", "Male", "Unisex")
        assert row["Google Shopping / Age group"] in ("", "Newborn", "Infant", "Toddler", "Kids", "Adult")
        assert "multicolo" not in row["Color (product.metafields.shopify.color-pattern)"]
    return rows


def test_shopify_csv_follows_shopifys_rules(tmp_path: Path) -> None:
    mapping = tmp_path / "shopify_to_google.txt"
    mapping.write_text(
        "→ Apparel & Accessories > Clothing > Tops > T-Shirts\n⇒ Apparel & Accessories > Clothing > Shirts & Tops\n\n"
        "→ Apparel & Accessories > Clothing > Dresses\n⇒ Apparel & Accessories > Clothing > Dresses\n"
        "→ Apparel & Accessories > Clothing > Skirts & Dresses\n⇒ Apparel & Accessories > Clothing > Dresses\n"
    )
    text, stderr = _export(tmp_path, "shopify-csv", "--shopify-mapping", str(mapping), "--vendor", "Acme")
    rows = _shopify_rows(text)
    tee = [r for r in rows if r["URL handle"] == "tee-1"]
    assert [r["Image position"] for r in tee] == ["1", "2"]
    assert tee[0]["Product category"] == "Apparel & Accessories > Clothing > Tops > T-Shirts"  # unique reverse
    assert tee[0]["Google Shopping / Google product category"] == "Apparel & Accessories > Clothing > Shirts & Tops"
    assert tee[0]["Vendor"] == "Acme" and tee[0]["Color (product.metafields.shopify.color-pattern)"] == "red"
    assert tee[0]["Google Shopping / Gender"] == "Male" and tee[0]["Google Shopping / Age group"] == "Adult"
    (dress,) = [r for r in rows if r["URL handle"] == "dress-9"]
    assert dress["Product category"] == "" and dress["Google Shopping / Gender"] == "Female"  # two map: ambiguous
    assert dress["Vendor"] == "Acme & Sons"  # the brand read on the product
    assert "Product category left empty for 1 products" in stderr


def test_shopify_description_is_escaped_html_and_no_formula_guard(tmp_path: Path) -> None:
    label = _label(("en",), audience=["kids"])
    label["copy"]["en"]["title"] = "=Soft & warm kids' hoodie with a long title that runs on past seventy characters"
    label["copy"]["en"]["description"] = "Warm <b>fleece</b> & cotton.\nMachine washable.\n\n-Second paragraph."
    source = _write(tmp_path, [{"path": "a.jpg", "status": "ok", "label": label, "languages": ["en"]}])
    code, out, err = _run(str(source), "--format", "shopify-csv", "-o", "-", "--image-base-url", BASE)
    assert code == 0, err
    (row,) = _shopify_rows(out)
    assert row["Title"].startswith("=Soft")  # an import file: Shopify would keep a leading apostrophe
    parser = _Html()
    parser.feed(row["Description"])
    assert parser.tags == ["p", "br", "p"]  # the model's <b> is text, its paragraphs are kept
    assert "".join(parser.text) == "Warm <b>fleece</b> & cotton.Machine washable.-Second paragraph."
    words = row["Title"].split(" ")
    assert row["SEO title"] == " ".join(words[: len(row["SEO title"].split(" "))])  # whole words only
    assert len(row["SEO title"]) <= 70 and len(row["SEO title"]) > 60
    assert row["Google Shopping / Age group"] == "Kids"


def test_shopify_handles_stay_unique_or_the_export_fails_naming_the_clash(tmp_path: Path) -> None:
    label = _label(("en",))
    source = _write(tmp_path, [
        {"path": "a.jpg", "status": "ok", "label": label, "languages": ["en"]},
        {"path": "b.jpg", "status": "ok", "label": label, "languages": ["en"]},
    ], "path,handle\na.jpg,连衣裙-001\nb.jpg,衬衫-001\n")  # fmt: skip
    target = tmp_path / "shop.csv"
    code, _, err = _run(str(source), "--format", "shopify-csv", "-o", str(target), "--image-base-url", BASE,
                        "--ids", str(tmp_path / "ids.csv"))  # fmt: skip
    assert code == 2 and "'001'" in err and "连衣裙-001" in err and "衬衫-001" in err and not target.exists()
    (tmp_path / "ids.csv").write_text("path,handle\na.jpg,SKU A\nb.jpg,sku-a\n")
    code, _, err = _run(str(source), "--format", "shopify-csv", "-o", "-", "--image-base-url", BASE,
                        "--ids", str(tmp_path / "ids.csv"))  # fmt: skip
    assert code == 2 and "'sku-a'" in err
    code, out, err = _run(str(source), "--format", "shopify-csv", "-o", "-", "--image-base-url", BASE)
    assert code == 0, err
    assert len({r["URL handle"] for r in _shopify_rows(out)}) == 2  # ids from paths carry a hash: distinct


def test_shop_feeds_refuse_unknown_formats_and_shopify_needs_image_urls(tmp_path: Path) -> None:
    source = _records(tmp_path)
    code, _, err = _run(str(source), "--format", "shopify-csv", "-o", str(tmp_path / "f.csv"), "--lang", "en")
    assert code == 2 and "--image-base-url" in err
    code, _, err = _run(str(source), "--format", "ebay", "-o", str(tmp_path / "feed.tsv"))
    assert code == 2 and "--format takes one of" in err


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
    source = _write(tmp_path, [record], "path,id\nphotos/sku7,SKU7\n")
    code, out, err = _run(str(source), "--format", "gmc-tsv", "-o", "-", "--image-base-url", BASE, "--root",
                          "photos", "--ids", str(tmp_path / "ids.csv"), "--lang", "en")  # fmt: skip
    assert code == 0, err
    (item,) = _tsv_items(out)
    assert item["id"] == "SKU7" and item["image_link"] == f"{BASE}/sku7_main.jpg"
    assert item["additional_image_link"] == f"{BASE}/sku7_back.jpg,{BASE}/sku7_extra.jpg"  # the broken one is left out
    result = runner.invoke(app, ["export", str(source), "--csv", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8-sig"))))
    assert row["scene"] == "outfit" and row["items"] == "Navy jeans (Apparel & Accessories > Clothing > Pants)"
    assert row["product"] == "photos/sku7" and row["product_images"] == "photos/sku7_main.jpg | photos/sku7_back.jpg"
