"""Google Merchant Center supplemental feeds (tab-separated text, RSS 2.0 XML) keyed by the shop's own ids."""

from __future__ import annotations

import re
from typing import IO
from xml.sax.saxutils import escape

from .feeds import (
    G_NAMESPACE,
    FeedReport,
    PhotoURLs,
    Product,
    audience,
    category_path,
    clean,
    copy_of,
    joined_within,
    shop_colors,
    values,
)
from .values import as_dict as _dict
from .values import as_text as _text

# Merchant Center product data specification (limits in characters).
GMC_LIMITS = {"id": 50, "title": 150, "description": 5000, "brand": 70, "product_type": 750, "color": 100,
              "material": 200, "pattern": 100, "image_link": 2000}  # fmt: skip
GMC_COLOR_NAME = 40  # each colour of the up to 3 joined by `/`
GMC_MAX_COLORS = 3
GMC_MAX_ADDITIONAL_IMAGES = 10
# The attributes a feed of ours can update, in this order. No title/description: the copy is machine-written,
# so it goes in structured_title/structured_description, which declare it (Google's rule for generated text).
GMC_COLUMNS = [
    "id", "structured_title", "structured_description", "brand", "google_product_category", "product_type",
    "color", "material", "pattern", "gender", "age_group", "image_link", "additional_image_link",
]  # fmt: skip
AI_SOURCE = "trained_algorithmic_media"
STRUCTURED = ("structured_title", "structured_description")


def _structured(text: str) -> str:
    """A text-feed value of a structured attribute: the source type, a colon, the content (quoted if needed)."""
    content = f'"{text.replace(chr(34), chr(34) * 2)}"' if (":" in text or '"' in text) else text
    return f"{AI_SOURCE}:{content}"


def gmc_item(product: Product, lang: str, urls: PhotoURLs | None, report: FeedReport) -> dict[str, str] | None:
    """One supplemental-feed item (only the attributes it has a value for), or None with the reason reported."""
    label = product.label
    copy = copy_of(label, lang)
    title, description = clean(_text(copy.get("title"))), clean(_text(copy.get("description")))
    problems = []
    if not product.shop_id:
        problems.append("no id of the shop's (not in --ids, not matched in --primary-feed)")
    if len(product.id) > GMC_LIMITS["id"]:
        problems.append(f"id longer than {GMC_LIMITS['id']} characters")
    if not 1 <= len(title) <= GMC_LIMITS["title"]:
        problems.append(f"title ({lang}) empty or longer than {GMC_LIMITS['title']} characters")
    if not 1 <= len(description) <= GMC_LIMITS["description"]:
        problems.append(f"description ({lang}) empty or longer than {GMC_LIMITS['description']} characters")
    images = [urls.url(path) for path in product.photo_paths] if urls else []
    if any(len(url) > GMC_LIMITS["image_link"] for url in images):
        problems.append(f"an image URL longer than {GMC_LIMITS['image_link']} characters")
    if problems:
        report.invalid.append(f"{product.id}: {'; '.join(problems)}")
        return None
    colors = [c for c in shop_colors(label) if len(c) <= GMC_COLOR_NAME]
    if len(colors) > GMC_MAX_COLORS:
        report.warnings.append(f"{product.id}: {len(colors)} colours, the first {GMC_MAX_COLORS} kept (the limit)")
    if len(images) > 1 + GMC_MAX_ADDITIONAL_IMAGES:
        extra = len(images) - 1
        report.warnings.append(f"{product.id}: {extra} more photos, the first {GMC_MAX_ADDITIONAL_IMAGES} listed")
    brand = clean(_text(label.get("brand")))
    if len(brand) > GMC_LIMITS["brand"]:
        report.warnings.append(f"{product.id}: brand longer than {GMC_LIMITS['brand']} characters, left out")
        brand = ""
    gender, age = audience(label)
    patterns = [p for p in values(label, "patterns") if len(p) <= GMC_LIMITS["pattern"]]
    category_id = _dict(label.get("category")).get("id")
    item = {
        "id": product.id,
        "structured_title": _structured(title),
        "structured_description": _structured(description),
        "brand": brand,
        "google_product_category": str(category_id) if isinstance(category_id, int) else "",
        "product_type": joined_within(category_path(label), " > ", GMC_LIMITS["product_type"]),
        "color": joined_within(colors[:GMC_MAX_COLORS], "/", GMC_LIMITS["color"]),
        "material": joined_within(values(label, "materials"), "/", GMC_LIMITS["material"]),
        "pattern": patterns[0] if patterns else "",
        "gender": gender,
        "age_group": age,
        "image_link": images[0] if images else "",
        "additional_image_link": ",".join(images[1 : 1 + GMC_MAX_ADDITIONAL_IMAGES]),
    }
    report.rows += 1
    return {name: clean(value) for name, value in item.items() if value}


def write_gmc_tsv(items: list[dict[str, str]], out: IO[str], report: FeedReport) -> None:
    """Merchant Center's text feed. Only the columns every item fills: nothing in the specification says an empty
    cell in a supplemental feed leaves the primary feed's value alone, so an attribute some items lack is left
    out, and said."""
    columns = [c for c in GMC_COLUMNS if all(c in item for item in items)]
    partial = [c for c in GMC_COLUMNS if c not in columns and any(c in item for item in items)]
    if partial:
        report.warnings.append(f"left out of the TSV, as some products have no value: {', '.join(partial)} "
                               "(gmc-xml sends each product's own attributes)")  # fmt: skip
    out.write("\t".join(columns) + "\n")
    for item in items:
        out.write("\t".join(item[c] for c in columns) + "\n")


_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """Escaped, and without the code points XML 1.0 cannot hold (U+FFFE, U+FFFF)."""
    return escape(_NOT_XML.sub("", text))


def write_gmc_xml(items: list[dict[str, str]], out: IO[str], shop_url: str) -> None:
    """RSS 2.0 with the g: namespace, as Merchant Center reads XML feeds; the channel has RSS's required title,
    link (the shop) and description."""
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(f'<rss version="2.0" xmlns:g="{G_NAMESPACE}">\n<channel>\n')
    out.write("<title>qvl-label supplemental feed</title>\n")
    out.write(f"<link>{_xml(shop_url)}</link>\n")
    out.write("<description>Product copy and attributes written by qvl-label from the shop's photos, "
              "for a Merchant Center supplemental feed</description>\n")  # fmt: skip
    for item in items:
        out.write("<item>\n")
        for column, value in item.items():
            if column in STRUCTURED:
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
