"""Shopify's product CSV from records: rows per product, handles, Shopify's categories."""

from __future__ import annotations

import html
import re
from pathlib import Path

from ..errors import UsageError
from .feeds import FeedReport, PhotoURLs, Product, audience, category_path, clean, copy_of, cut_at_word, shop_colors
from .values import as_list as _list
from .values import as_text as _text

SHOPIFY_COLUMNS = [
    "Title", "URL handle", "Description", "Vendor", "Product category", "Type", "Tags", "Status",
    "Product image URL", "Image position", "Image alt text", "SEO title", "SEO description",
    "Google Shopping / Google product category", "Google Shopping / Gender", "Google Shopping / Age group",
    "Color (product.metafields.shopify.color-pattern)",
]  # fmt: skip
SHOPIFY_TITLE = 255
SHOPIFY_SEO_TITLE = 70
SHOPIFY_SEO_DESCRIPTION = 320
# Merchant Center's gender and age group values as Shopify's Google Shopping columns spell them.
SHOPIFY_GENDER = {"male": "Male", "female": "Female", "unisex": "Unisex"}
SHOPIFY_AGE_GROUP = {"newborn": "Newborn", "infant": "Infant", "toddler": "Toddler", "kids": "Kids", "adult": "Adult"}


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


def body_html(text: str) -> str:
    """Shopify's description is HTML: the model's text escaped, its paragraphs kept (a blank line parts two
    paragraphs, a line break stays one)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    return "".join(
        "<p>" + "<br>".join(html.escape(line.strip()) for line in p.split("\n")) + "</p>" for p in paragraphs
    )


def shopify_rows(
    product: Product,
    lang: str,
    urls: PhotoURLs,
    mapping: dict[str, str] | None,
    vendor: str,
    handles: dict[str, str],
    report: FeedReport,
) -> list[dict[str, str]]:
    """A product's rows: the first with everything, one more per further photo (the handle and the image only).

    `handles` (handle -> product id, of the products before) finds two products that would share a handle:
    Shopify would merge them on import, so the export fails naming them.
    """
    label = product.label
    copy = copy_of(label, lang)
    title = clean(_text(copy.get("title")))
    if not 1 <= len(title) <= SHOPIFY_TITLE:
        report.invalid.append(f"{product.id}: title ({lang}) empty or longer than {SHOPIFY_TITLE} characters")
        return []
    handle = handle_of(product.id)
    if handles.setdefault(handle, product.id) != product.id:
        raise UsageError(f"two products would share the Shopify handle {handle!r}: {handles[handle]!r} and "
                         f"{product.id!r} (Shopify would merge them); give them distinct ids in --ids")  # fmt: skip
    description = _text(copy.get("description"))
    path = category_path(label)
    google_path = " > ".join(path)
    shopify_category = mapping.get(google_path, "") if mapping else ""
    if not shopify_category:
        report.unmapped_category += 1
    gender, age = audience(label)
    images = [urls.url(photo) for photo in product.photo_paths]
    first = {
        "Title": title,
        "URL handle": handle,
        "Description": body_html(description),
        "Vendor": clean(_text(label.get("brand"))) or vendor,
        "Product category": shopify_category,
        "Type": path[-1] if path else "",
        "Tags": ", ".join(clean(_text(t)).replace(",", " ") for t in _list(copy.get("tags"))),
        "Status": "draft",  # machine-written listings wait for a person to publish them
        "Product image URL": images[0],
        "Image position": "1",
        "Image alt text": title,
        "SEO title": cut_at_word(title, SHOPIFY_SEO_TITLE),
        "SEO description": cut_at_word(clean(description), SHOPIFY_SEO_DESCRIPTION),
        "Google Shopping / Google product category": google_path,
        "Google Shopping / Gender": SHOPIFY_GENDER.get(gender, ""),
        "Google Shopping / Age group": SHOPIFY_AGE_GROUP.get(age, ""),
        "Color (product.metafields.shopify.color-pattern)": "; ".join(shop_colors(label)),
    }
    rows = [first]
    for position, url in enumerate(images[1:], start=2):  # more photos: rows with the handle and the image only
        rows.append({**dict.fromkeys(SHOPIFY_COLUMNS, ""), "URL handle": handle, "Product image URL": url,
                     "Image position": str(position)})  # fmt: skip
    report.rows += 1
    return rows
