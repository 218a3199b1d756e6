"""What every shop feed shares: products from records, the shop's own ids, public image URLs, the feed's language."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UsageError
from .values import as_dict as _dict
from .values import as_list as _list
from .values import as_text as _text
from .values import csv_rows

# Our colour family ids as the colour names shops use; `multicolour` is no colour a shop accepts.
COLOR_NAMES = {"grey": "gray"}
NOT_A_COLOR = {"multicolour", "multicolor"}
AUDIENCE_GENDER = {"men": "male", "women": "female", "unisex": "unisex"}
AUDIENCE_AGE = {"baby": "infant", "kids": "kids", "men": "adult", "women": "adult", "unisex": "adult"}
G_NAMESPACE = "http://base.google.com/ns/1.0"


@dataclass
class Product:
    """One shop product: its photos' records, the first one (the main photo) giving the label."""

    id: str
    shop_id: bool  # the id is the shop's own (--ids, the primary feed), not one derived from a path
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def main(self) -> dict[str, Any]:
        return self.records[0]

    @property
    def label(self) -> dict[str, Any]:
        return _dict(self.main.get("label"))

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
    unmatched_ids: list[str] = field(default_factory=list)  # --ids paths that are no record's path
    unmapped_category: int = 0  # Shopify rows whose Product category stays empty

    @property
    def complete(self) -> bool:
        """Every record became a product in the feed: nothing left out, no --ids row unused."""
        return self.rows > 0 and not (self.not_ok or self.invalid or self.unmatched_ids)


@dataclass
class ShopIds:
    """The shop's own product ids for photos: `--ids` (photo path -> id) or the shop's primary feed (image URL or
    image file name -> id)."""

    by_path: dict[str, str] = field(default_factory=dict)  # in the file's order: a product's first photo is its main
    by_url: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, str | None] = field(default_factory=dict)  # None: several items share that file name
    used: set[str] = field(default_factory=set)

    def lookup(self, key: str, url: str | None) -> str | None:
        if key in self.by_path:
            self.used.add(key)
            return self.by_path[key]
        if url and url in self.by_url:
            return self.by_url[url]
        return self.by_name.get(PurePosixPath(key).name)

    def __bool__(self) -> bool:
        return bool(self.by_path or self.by_url)


def read_ids(path: Path) -> ShopIds:
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
            return ShopIds(by_path={row["path"]: row[key] for row in reader if row.get("path") and row.get(key)})
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None


def read_primary_feed(path: Path) -> ShopIds:
    """The shop's Merchant Center primary feed (TSV, or RSS 2.0 XML): its ids by image URL and image file name."""
    pairs: list[tuple[str, str]] = []  # (image URL, id)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the primary feed {path}: {exc}") from exc
    if text.lstrip().startswith("<"):
        try:
            root = ET.fromstring(text)  # the user's own feed file
        except ET.ParseError as exc:
            raise UsageError(f"the primary feed {path} is not well-formed XML: {exc}") from None
        for item in root.iter("item"):
            item_id = (item.findtext(f"{{{G_NAMESPACE}}}id") or "").strip()
            for tag in ("image_link", "additional_image_link"):
                pairs += [((e.text or "").strip(), item_id) for e in item.iter(f"{{{G_NAMESPACE}}}{tag}")]
    else:
        header, rows = csv_rows(text, str(path), delimiter="\t")  # not splitlines: U+2028 is text in a cell
        if "id" not in header or "image_link" not in header:
            raise UsageError(
                f"the primary feed {path} needs the columns `id` and `image_link` (a Merchant Center feed)"
            )
        for _, row in rows:
            links = [row.get("image_link") or "", *(row.get("additional_image_link") or "").split(",")]
            pairs += [(link.strip(), (row.get("id") or "").strip()) for link in links]
    ids = ShopIds()
    for url, item_id in pairs:
        if not url or not item_id:
            continue
        ids.by_url.setdefault(url, item_id)
        name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
        ids.by_name[name] = item_id if ids.by_name.get(name, item_id) == item_id else None
    if not ids.by_url:
        raise UsageError(f"the primary feed {path} holds no item with an id and an image link")
    return ids


def derived_id(path: str) -> str:
    """A stable product id from a photo's path: its name without the extension, plus a short hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(path).stem).strip("-")[:32] or "photo"
    return f"{stem}-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


@dataclass
class PhotoURLs:
    """Public URLs of the photos: --image-base-url plus each photo's path under --root."""

    base: str
    root: str | None

    def url(self, path: str) -> str:
        return self.base.rstrip("/") + "/" + urllib.parse.quote(public_path(path, self.root))


def check_base_url(url: str, option: str, allow_http: bool) -> str:
    """An absolute https URL with a host (http only when asked for), no query or fragment: paths are appended."""
    parts = urllib.parse.urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment or re.search(r"\s", url):
        http = "" if allow_http else " (http:// only with --allow-http)"
        raise UsageError(f"{option} takes an absolute https:// URL with a host{http}, not {url!r}")
    return url


def public_path(path: str, root: str | None) -> str:
    """The part of a photo's path that may appear in a public URL: under --root, never absolute, never `..`."""
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise UsageError(f"the photo path {path!r} holds `..`: it cannot be part of a public image URL")
    if root is None:
        if os.path.isabs(path):
            raise UsageError(f"the photo path {path!r} is absolute: give --root FOLDER, the folder the URLs start at")
        return PurePosixPath(path.replace("\\", "/")).as_posix()
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative == ".." or relative.startswith(".." + os.sep) or os.path.isabs(relative):
        raise UsageError(f"the photo {path!r} is outside --root {root!r}: its path cannot be published")
    return PurePosixPath(relative.replace(os.sep, "/")).as_posix()


def feed_language(requested: str | None, languages: list[str]) -> str:
    """The language of the feed's copy: the one asked for if the run wrote it, else the run's only language."""
    if requested is not None:
        if requested not in languages:
            have = ", ".join(languages) or "none (no record holds copy)"
            raise UsageError(f"--lang {requested}: the run wrote copy in {have}; pick one of those")
        return requested
    if len(languages) == 1:
        return languages[0]
    if not languages:
        raise UsageError("the run holds no copy in any language: nothing to put in a feed")
    raise UsageError(f"the run wrote copy in {', '.join(languages)}: pick the feed's language with --lang")


def group_products(records: Iterator[dict[str, Any]], ids: ShopIds, urls: PhotoURLs | None,
                   report: FeedReport) -> list[Product]:  # fmt: skip
    """Ok records grouped into products (by the shop's ids, else one product per photo), in the order met."""
    products: dict[str, Product] = {}
    for record in records:
        if record.get("status") != "ok" or not isinstance(record.get("label"), dict):
            report.not_ok += 1
            continue
        path = record["path"]
        # a product record (batch --group-by) is a product already: its key names it unless --ids does
        key = record.get("product") if isinstance(record.get("product"), str) else None
        url = urls.url(path) if urls else None
        shop_id = ids.lookup(path, url) or (ids.lookup(key, None) if key else None)
        product_id = shop_id or derived_id(key or path)
        products.setdefault(product_id, Product(product_id, shop_id is not None)).records.append(record)
    report.unmatched_ids = [path for path in ids.by_path if path not in ids.used]
    if ids.by_path and not ids.used:
        raise UsageError(f"no path in --ids is a path of the run (e.g. {next(iter(ids.by_path))!r}); "
                         "give the paths as batch wrote them in its records")  # fmt: skip
    # The first photo listed for a product in --ids is its main image; the others follow in that order.
    position = {path: index for index, path in enumerate(ids.by_path)}
    for product in products.values():
        product.records.sort(key=lambda r: position.get(r["path"], len(position)))
    return list(products.values())


def values(label: dict[str, Any], attribute: str) -> list[str]:
    entries = [_dict(v) for v in _list(_dict(label.get("attributes")).get(attribute))]
    return list(dict.fromkeys(str(v["value"]) for v in entries if isinstance(v.get("value"), str)))


def copy_of(label: dict[str, Any], lang: str) -> dict[str, Any]:
    return _dict(_dict(label.get("copy")).get(lang))


def shop_colors(label: dict[str, Any]) -> list[str]:
    """The label's colours as shops name them, without `multicolour` (no shop takes it as a colour)."""
    return [COLOR_NAMES.get(c, c) for c in values(label, "colors") if c not in NOT_A_COLOR]


def audience(label: dict[str, Any]) -> tuple[str, str]:
    """(gender, age group) in Merchant Center's values, empty where the label's audience says nothing."""
    found = values(label, "audience")
    gender = next((AUDIENCE_GENDER[a] for a in found if a in AUDIENCE_GENDER), "")
    age = next((AUDIENCE_AGE[a] for a in found if a in AUDIENCE_AGE), "")
    return gender, age


def category_path(label: dict[str, Any]) -> list[str]:
    return [_text(p) for p in _list(_dict(label.get("category")).get("path"))]


def joined_within(names: list[str], separator: str, limit: int) -> str:
    """Names joined while the whole stays within the limit: cut at a name boundary, never inside a name."""
    kept: list[str] = []
    for name in names:
        if len(separator.join([*kept, name])) > limit:
            break
        kept.append(name)
    return separator.join(kept)


def cut_at_word(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a space where there is one (text without spaces, e.g. Chinese, is cut
    at the limit: each character is a word there)."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    space = head.rfind(" ")
    return (head[:space] if space > 0 else text[:limit]).rstrip(" ,;:-")


def clean(text: str) -> str:
    """Tabs and line breaks would break a tab-separated row; they become spaces."""
    return re.sub(r"[\t\r\n]+", " ", text).strip()
