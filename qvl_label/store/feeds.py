"""Shop feeds from records: Google Merchant Center (TSV and XML) and Shopify's product CSV."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape

from ..errors import UsageError
from .values import as_dict as _dict
from .values import as_list as _list
from .values import as_text as _text

# Google Merchant Center product data specification (limits in characters).
GMC_LIMITS = {"id": 50, "title": 150, "description": 5000, "product_type": 750, "color": 100, "material": 200,
              "pattern": 100, "image_link": 2000}  # fmt: skip
GMC_MAX_COLORS = 3
GMC_MAX_ADDITIONAL_IMAGES = 10
GMC_GENDERS = ("male", "female", "unisex")
GMC_AGE_GROUPS = ("newborn", "infant", "toddler", "kids", "adult")
GMC_COLUMNS = [
    "id", "title", "description", "structured_title", "structured_description", "google_product_category",
    "product_type", "color", "material", "pattern", "gender", "age_group", "image_link", "additional_image_link",
]  # fmt: skip
# Machine-written text is declared as such (Google's rule for text made with generative AI).
AI_SOURCE = "trained_algorithmic_media"

SHOPIFY_COLUMNS = [
    "Title", "URL handle", "Description", "Vendor", "Product category", "Type", "Tags", "Status",
    "Product image URL", "Image position", "Image alt text", "SEO title", "SEO description",
    "Google Shopping / Google product category", "Color (product.metafields.shopify.color-pattern)",
]  # fmt: skip
SHOPIFY_SEO_TITLE = 70
SHOPIFY_SEO_DESCRIPTION = 320
# Our colour family ids as the colour names shops use.
COLOR_NAMES = {"multicolour": "multicolor", "grey": "gray"}
AUDIENCE_GENDER = {"men": "male", "women": "female", "unisex": "unisex"}
AUDIENCE_AGE = {"baby": "infant", "kids": "kids", "men": "adult", "women": "adult", "unisex": "adult"}


@dataclass
class Product:
    """One shop product: its photos' records, the first one (the main photo) giving the label."""

    id: str
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def main(self) -> dict[str, Any]:
        return self.records[0]

    @property
    def photo_paths(self) -> list[str]:
        """Every photo of the product: a product record's readable photos (sent or not), else each record's path."""
        paths: list[str] = []
        for record in self.records:
            photos = [_dict(p) for p in _list(record.get("images"))]
            if photos:
                paths += [str(p["path"]) for p in photos if p.get("status") in ("ok", "not_sent") and p.get("path")]
            else:
                paths.append(record["path"])
        return list(dict.fromkeys(paths))


@dataclass
class FeedReport:
    rows: int = 0
    not_ok: int = 0  # records left out because their status is not ok
    invalid: list[str] = field(default_factory=list)  # "id: why" for products left out
    warnings: list[str] = field(default_factory=list)
    unmapped_category: int = 0  # Shopify rows whose Product category stays empty


def read_ids(path: Path) -> dict[str, str]:
    """A CSV of photo path -> product id (or Shopify handle): columns `path` and `id` (or `handle`).

    Rows keep their order: a product's first listed photo is its main image.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            names = reader.fieldnames or []
            key = "id" if "id" in names else "handle" if "handle" in names else None
            if "path" not in names or key is None:
                raise UsageError(f"{path} needs the columns `path` and `id` (or `handle`); it has {', '.join(names)}")
            return {row["path"]: row[key] for row in reader if row.get("path") and row.get(key)}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None


def derived_id(path: str) -> str:
    """A stable product id from a photo's path: its name without the extension, plus a short hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(path).stem).strip("-")[:32] or "photo"
    return f"{stem}-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def group_products(records: Iterator[dict[str, Any]], ids: dict[str, str], report: FeedReport) -> list[Product]:
    """Ok records grouped into products (by --ids, else one product per photo), in the order met."""
    products: dict[str, Product] = {}
    for record in records:
        if record.get("status") != "ok" or not isinstance(record.get("label"), dict):
            report.not_ok += 1
            continue
        path = record["path"]
        # a product record (batch --group-by) is a product already: its key names it unless --ids does
        key = record.get("product") if isinstance(record.get("product"), str) else None
        product_id = ids.get(path) or (ids.get(key) if key else None) or derived_id(key or path)
        products.setdefault(product_id, Product(product_id)).records.append(record)
    # The first photo listed for a product in --ids is its main image; the others follow in that order.
    position = {path: index for index, path in enumerate(ids)}
    for product in products.values():
        product.records.sort(key=lambda r: position.get(r["path"], len(position)))
    return list(products.values())


def image_url(base: str, path: str, root: str | None) -> str:
    relative = Path(path).as_posix()
    if root:
        with contextlib.suppress(ValueError):  # a path outside the root keeps its own form
            relative = Path(path).relative_to(root).as_posix()
    return base.rstrip("/") + "/" + urllib.parse.quote(relative.lstrip("/"))


def _values(label: dict[str, Any], attribute: str) -> list[str]:
    entries = [_dict(v) for v in _list(_dict(label.get("attributes")).get(attribute))]
    return list(dict.fromkeys(str(v["value"]) for v in entries if isinstance(v.get("value"), str)))


def _copy(label: dict[str, Any], lang: str) -> dict[str, Any]:
    return _dict(_dict(label.get("copy")).get(lang))


def _structured(text: str) -> str:
    """A text-feed value of a structured attribute: the source type, a colon, the content (quoted if needed)."""
    content = f'"{text.replace(chr(34), chr(34) * 2)}"' if (":" in text or '"' in text) else text
    return f"{AI_SOURCE}:{content}"


def _clean(text: str) -> str:
    """Tabs and line breaks would break a tab-separated row; they become spaces."""
    return re.sub(r"[\t\r\n]+", " ", text).strip()


def gmc_item(product: Product, lang: str, base_url: str, root: str | None, report: FeedReport) -> dict[str, str] | None:
    """One GMC item, or None (and the reason in the report) when it cannot be valid."""
    label = _dict(product.main.get("label"))
    category = _dict(label.get("category"))
    copy = _copy(label, lang)
    title, description = _clean(_text(copy.get("title"))), _clean(_text(copy.get("description")))
    problems = []
    if len(product.id) > GMC_LIMITS["id"]:
        problems.append(f"id longer than {GMC_LIMITS['id']} characters")
    if not 1 <= len(title) <= GMC_LIMITS["title"]:
        problems.append(f"title ({lang}) empty or longer than {GMC_LIMITS['title']} characters")
    if len(description) > GMC_LIMITS["description"]:
        problems.append(f"description longer than {GMC_LIMITS['description']} characters")
    if not isinstance(category.get("id"), int):
        problems.append("no taxonomy id")
    images = [image_url(base_url, path, root) for path in product.photo_paths]
    if any(len(url) > GMC_LIMITS["image_link"] for url in images):
        problems.append("an image URL longer than 2000 characters")
    if problems:
        report.invalid.append(f"{product.id}: {'; '.join(problems)}")
        return None
    colors = [COLOR_NAMES.get(c, c) for c in _values(label, "colors")]
    if len(colors) > GMC_MAX_COLORS:
        report.warnings.append(f"{product.id}: {len(colors)} colours, the first {GMC_MAX_COLORS} kept (the limit)")
        colors = colors[:GMC_MAX_COLORS]
    if len(images) > 1 + GMC_MAX_ADDITIONAL_IMAGES:
        report.warnings.append(f"{product.id}: {len(images) - 1} more photos, the first 10 listed (the limit)")
    audience = _values(label, "audience")
    gender = next((AUDIENCE_GENDER[a] for a in audience if a in AUDIENCE_GENDER), "")
    age = next((AUDIENCE_AGE[a] for a in audience if a in AUDIENCE_AGE), "")
    patterns = _values(label, "patterns")
    item = {
        "id": product.id,
        "title": "",  # left empty: Google reads `title` before `structured_title`, which declares machine text
        "description": "",
        "structured_title": _structured(title),
        "structured_description": _structured(description) if description else "",
        "google_product_category": str(category["id"]),
        "product_type": " > ".join(_text(p) for p in _list(category.get("path")))[: GMC_LIMITS["product_type"]],
        "color": "/".join(colors)[: GMC_LIMITS["color"]],
        "material": "/".join(_values(label, "materials"))[: GMC_LIMITS["material"]],
        "pattern": patterns[0] if patterns else "",
        "gender": gender,
        "age_group": age,
        "image_link": images[0],
        "additional_image_link": ",".join(images[1 : 1 + GMC_MAX_ADDITIONAL_IMAGES]),
    }
    report.rows += 1
    return item


def write_gmc_tsv(items: list[dict[str, str]], out: IO[str]) -> None:
    """Merchant Center's text feed: tab-separated, values as they are (quotes belong to structured values)."""
    out.write("\t".join(GMC_COLUMNS) + "\n")
    for item in items:
        out.write("\t".join(_clean(item[c]) for c in GMC_COLUMNS) + "\n")


_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """Escaped, and without the code points XML 1.0 cannot hold (U+FFFE, U+FFFF)."""
    return escape(_NOT_XML.sub("", text))


def write_gmc_xml(items: list[dict[str, str]], out: IO[str], title: str = "qvl-label products") -> None:
    """RSS 2.0 with the g: namespace, as Merchant Center reads XML feeds."""
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write('<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">\n<channel>\n')
    out.write(f"<title>{escape(title)}</title>\n")
    for item in items:
        out.write("<item>\n")
        for column in GMC_COLUMNS:
            value = item[column]
            if not value:
                continue
            if column in ("structured_title", "structured_description"):
                content = value.split(":", 1)[1]
                if content.startswith('"'):
                    content = content[1:-1].replace('""', '"')
                out.write(
                    f"<g:{column}><g:digital_source_type>{AI_SOURCE}</g:digital_source_type>"
                    f"<g:content>{_xml(content)}</g:content></g:{column}>\n"
                )
            elif column == "additional_image_link":
                for link in value.split(","):
                    out.write(f"<g:additional_image_link>{_xml(link)}</g:additional_image_link>\n")
            else:
                out.write(f"<g:{column}>{_xml(value)}</g:{column}>\n")
        out.write("</item>\n")
    out.write("</channel>\n</rss>\n")


def read_shopify_mapping(path: Path) -> dict[str, str]:
    """Shopify's published mapping (`→ shopify path` / `⇒ google path` pairs), reversed: google path -> shopify
    path, kept only where exactly one Shopify category maps to the Google one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Shopify mapping {path}: {exc}") from exc
    reverse: dict[str, set[str]] = {}
    shopify: str | None = None
    for line in text.split("\n"):  # not splitlines: U+2028 is text inside a name
        line = line.strip()
        if line.startswith("→"):
            shopify = line[1:].strip()
        elif line.startswith("⇒") and shopify is not None:
            reverse.setdefault(line[1:].strip(), set()).add(shopify)
    if not reverse:
        raise UsageError(f"{path} holds no `→ shopify path` / `⇒ google path` pairs")
    return {google: next(iter(paths)) for google, paths in reverse.items() if len(paths) == 1}


def handle_of(product_id: str) -> str:
    """Shopify URL handles: lower-case letters, digits and dashes."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", product_id.lower())).strip("-") or "product"


def shopify_rows(
    product: Product,
    lang: str,
    base_url: str,
    root: str | None,
    mapping: dict[str, str] | None,
    vendor: str,
    report: FeedReport,
) -> list[dict[str, str]]:
    label = _dict(product.main.get("label"))
    category = _dict(label.get("category"))
    copy = _copy(label, lang)
    title = _clean(_text(copy.get("title")))
    if not title:
        report.invalid.append(f"{product.id}: no title ({lang})")
        return []
    description = _clean(_text(copy.get("description")))
    google_path = " > ".join(_text(p) for p in _list(category.get("path")))
    shopify_category = mapping.get(google_path, "") if mapping else ""
    if not shopify_category:
        report.unmapped_category += 1
    brand = _text(label.get("brand"))
    handle = handle_of(product.id)
    images = [image_url(base_url, path, root) for path in product.photo_paths]
    first = {
        "Title": title,
        "URL handle": handle,
        "Description": description,
        "Vendor": brand or vendor,
        "Product category": shopify_category,
        "Type": _text(_list(category.get("path"))[-1]) if _list(category.get("path")) else "",
        "Tags": ", ".join(_text(t).replace(",", " ") for t in _list(copy.get("tags"))),
        "Status": "draft",  # machine-written listings wait for a person to publish them
        "Product image URL": images[0],
        "Image position": "1",
        "Image alt text": title,
        "SEO title": title[:SHOPIFY_SEO_TITLE],
        "SEO description": description[:SHOPIFY_SEO_DESCRIPTION],
        "Google Shopping / Google product category": google_path,
        "Color (product.metafields.shopify.color-pattern)": "; ".join(
            COLOR_NAMES.get(c, c) for c in _values(label, "colors") if c != "multicolour"
        ),
    }
    rows = [first]
    for position, url in enumerate(images[1:], start=2):  # more photos: rows with the handle and the image only
        rows.append({**dict.fromkeys(SHOPIFY_COLUMNS, ""), "URL handle": handle, "Product image URL": url,
                     "Image position": str(position)})  # fmt: skip
    report.rows += 1
    return rows
