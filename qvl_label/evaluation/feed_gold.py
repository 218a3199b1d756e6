"""Gold from what shops already have: a Google Merchant Center feed or a Shopify product CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..labeling.config import LabelConfig
from ..pipeline.batch import is_uri
from ..store.feeds import AUDIENCE_GENDER
from .gold import category_id

# Merchant Center: gender and age_group values -> our audience vocabulary ids (the export's mapping, reversed;
# ages the export never writes are read too).
GENDER_AUDIENCE = {gender: audience for audience, gender in AUDIENCE_GENDER.items()}
AGE_AUDIENCE = {"newborn": "baby", "infant": "baby", "toddler": "kids", "kids": "kids"}
# Several values in one cell: Merchant Center separates colours with '/', shops use ',' or ';' too.
SEPARATORS = re.compile(r"\s*[/;,]\s*")


@dataclass(frozen=True)
class FeedFormat:
    name: str
    image: tuple[str, ...]  # columns that may hold the photo's URL or path (first present), unless the user names one
    category: tuple[str, ...]  # columns tried in order
    title: str
    brand: str
    colors: str
    materials: str
    patterns: str
    gender: str
    age_group: str


GMC = FeedFormat(
    "Merchant Center", ("image_link",), ("google_product_category", "product_type"), "title", "brand", "color",
    "material", "pattern", "gender", "age_group",
)  # fmt: skip
SHOPIFY = FeedFormat(
    "Shopify", ("Product image URL", "Image Src"),
    ("Google Shopping / Google product category", "Product category", "Type"), "Title", "Vendor",
    "Color (product.metafields.shopify.color-pattern)", "Material (product.metafields.shopify.fabric)",
    "Pattern (product.metafields.shopify.pattern)", "Google Shopping / Gender", "Google Shopping / Age group",
)  # fmt: skip


@dataclass
class FeedReport:
    rows: int = 0
    written: int = 0
    without_image: int = 0
    unmapped_images: int = 0
    unknown_categories: int = 0  # category cells no taxonomy node matches: left out of the gold
    fields: dict[str, int] = field(default_factory=dict)  # how many entries got each field


def detect(header: list[str]) -> FeedFormat:
    names = {h.strip() for h in header}
    if "image_link" in names or "google_product_category" in names:
        return GMC
    if "Product image URL" in names or "Image Src" in names or "Handle" in names or "URL handle" in names:
        return SHOPIFY
    raise UsageError(
        "not a Merchant Center feed (no image_link or google_product_category column) "
        "nor a Shopify product export (no Product image URL column)"
    )


def read_rows(text: str) -> tuple[list[str], Iterator[dict[str, str]]]:
    """Header and rows of a TSV or CSV text (Merchant Center feeds are often TSV, Shopify's exports CSV)."""
    first = text.split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)  # not splitlines: U+2028 is text
    header = list(reader.fieldnames or [])
    if not header:
        raise UsageError("the feed is empty")
    return header, ({k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader)


def _split(cell: str) -> list[str]:
    return [value for value in SEPARATORS.split(cell) if value]


def map_image(value: str, mappings: list[tuple[str, str]]) -> str | None:
    """The local path a feed's image URL or path stands for: the first matching prefix mapping, or as given."""
    for prefix, local in mappings:
        if value.startswith(prefix):
            rest = value[len(prefix) :].split("?", 1)[0].lstrip("/")
            return f"{local.rstrip('/')}/{rest}" if local else rest
    if is_uri(value):
        return None  # a URL no mapping covers cannot be matched to a local record
    return value


def gold_entries(
    text: str,
    config: LabelConfig,
    image_column: str | None,
    mappings: list[tuple[str, str]],
    lang: str,
    report: FeedReport,
) -> Iterator[dict[str, Any]]:
    """One record-shaped gold line per feed row with a photo; Shopify's extra image rows are skipped."""
    header, rows = read_rows(text)
    feed = detect(header)
    column = image_column or next((c for c in feed.image if c in header), feed.image[0])
    if column not in header:
        raise UsageError(f"the feed has no column {column!r}; name the photo column with --image-column")
    for row in rows:
        report.rows += 1
        image = row.get(column, "")
        if not image:
            report.without_image += 1
            continue
        path = map_image(image, mappings)
        if path is None:
            report.unmapped_images += 1
            continue
        label: dict[str, Any] = {}
        category = next((row[c] for c in feed.category if row.get(c)), "")
        if category:
            try:  # an id, or a path in the taxonomy's words (Shopify's own taxonomy mostly shares them)
                label["category"] = {"id": category_id(config, category, f"row {report.rows + 1}")}
            except UsageError:
                report.unknown_categories += 1
        attributes = {
            name: _split(row.get(column_name, ""))
            for name, column_name in (
                ("colors", feed.colors),
                ("materials", feed.materials),
                ("patterns", feed.patterns),
            )
            if row.get(column_name)
        }
        audience = [GENDER_AUDIENCE[g] for g in [row.get(feed.gender, "").lower()] if g in GENDER_AUDIENCE]
        audience += [AGE_AUDIENCE[a] for a in [row.get(feed.age_group, "").lower()] if a in AGE_AUDIENCE]
        if audience:
            attributes["audience"] = audience
        if attributes:
            label["attributes"] = attributes
        if row.get(feed.brand):
            label["brand"] = row[feed.brand]
        if row.get(feed.title):
            label["copy"] = {lang: {"title": row[feed.title]}}
        for name in label:
            report.fields[name] = report.fields.get(name, 0) + 1
        report.written += 1
        yield {"path": path, "label": label}
