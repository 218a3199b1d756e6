"""Shopify's product CSV from records: rows per product, handles, Shopify's categories."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .feeds import COLOR_NAMES, FeedReport, Product, _clean, _copy, _values, image_url
from .values import as_dict as _dict
from .values import as_list as _list
from .values import as_text as _text

SHOPIFY_COLUMNS = [
    "Title", "URL handle", "Description", "Vendor", "Product category", "Type", "Tags", "Status",
    "Product image URL", "Image position", "Image alt text", "SEO title", "SEO description",
    "Google Shopping / Google product category", "Color (product.metafields.shopify.color-pattern)",
]  # fmt: skip
SHOPIFY_SEO_TITLE = 70
SHOPIFY_SEO_DESCRIPTION = 320


def read_shopify_mapping(path: Path) -> dict[str, str]:
    """Shopify's published mapping (`→ shopify path` / `⇒ google path` pairs), reversed: google path -> shopify
    path, kept only where exactly one Shopify category maps to the Google one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Shopify mapping {path}: {exc}") from exc
    reverse: dict[str, set[str]] = {}
    shopify: str | None = None
    for line in text.splitlines():
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
