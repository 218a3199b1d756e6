"""Reading finished outputs: pick one record per image across files, merge shards, flatten to CSV."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import OutputError, PipeClosed, UsageError, stdout_binary
from ..labeling.schema import ATTRIBUTE_FIELDS
from ..pipeline.records import OK
from .feeds import FeedReport, PhotoURLs, ShopIds, feed_language, group_products
from .gmc import gmc_item, write_gmc_tsv, write_gmc_xml
from .outputs import is_record
from .safe_files import replaced_atomically
from .shopify import SHOPIFY_COLUMNS, shopify_rows
from .values import as_dict as _dict
from .values import as_list as _list
from .values import as_text as _text

LIST_SEPARATOR = "; "


@dataclass
class Selection:
    """Where the chosen record of each path lives, so records are read twice rather than held in memory."""

    chosen: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # path -> (rank, file, offset, length)
    languages: list[str] = field(default_factory=list)
    torn_lines: int = 0
    records: int = 0


def _rank(record: dict[str, Any]) -> int:
    return 1 if record.get("status") == OK else 0


def select(files: list[Path]) -> Selection:
    """One record per path: an `ok` record beats a failure, and a later record beats an earlier one."""
    selection = Selection()
    for file_index, path in enumerate(files):
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with handle:
            offset = 0
            for line in handle:
                length = len(line)
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    record = None
                if not is_record(record):  # torn lines and foreign JSON are counted, never a crash
                    selection.torn_lines += bool(line.strip())
                    offset += length
                    continue
                selection.records += 1
                rank = _rank(record)
                key = record["path"]
                previous = selection.chosen.get(key)
                if previous is None or rank >= previous[0]:
                    selection.chosen[key] = (rank, file_index, offset, length)
                for lang in _list(record.get("languages")):
                    if isinstance(lang, str) and lang not in selection.languages:
                        selection.languages.append(lang)
                offset += length
    return selection


def chosen_records(files: list[Path], selection: Selection) -> Iterator[dict[str, Any]]:
    """The selected records, sorted by path."""
    handles = [path.open("rb") for path in files]
    try:
        for key in sorted(selection.chosen):
            _, file_index, offset, length = selection.chosen[key]
            handle = handles[file_index]
            handle.seek(offset)
            yield orjson.loads(handle.read(length))
    finally:
        for handle in handles:
            handle.close()


def merge(files: list[Path], output: IO[bytes]) -> Selection:
    selection = select(files)
    try:
        for record in chosen_records(files, selection):
            output.write(orjson.dumps(record) + b"\n")
    except BrokenPipeError:
        raise PipeClosed() from None
    except OSError as exc:
        raise OutputError(f"cannot write the merged output: {exc.strerror or exc}") from exc
    return selection


def csv_columns(languages: list[str]) -> list[str]:
    columns = ["path", "status", "error", "sha256", "duplicate_of", "category_id", "category"]
    columns += [f"category_{lang}" for lang in languages if lang != "en"]
    columns += ["brand", "visible_text"]
    for name in ATTRIBUTE_FIELDS:
        columns += [name, f"{name}_raw"]
    columns += ["details"]
    for lang in languages:
        columns += [f"title_{lang}", f"description_{lang}", f"selling_points_{lang}", f"tags_{lang}"]
    columns += ["compliance_flags", "scene", "items", "product", "product_images", "answer"]
    return columns


def _joined(values: Any, sep: str = LIST_SEPARATOR) -> str:
    return sep.join(_text(v) for v in _list(values) if v not in (None, ""))


def csv_row(record: dict[str, Any], languages: list[str]) -> dict[str, str]:
    """One row; a field of the wrong type (a hand-edited or foreign record) becomes its JSON text, never a crash."""
    label = _dict(record.get("label"))
    category = _dict(label.get("category"))
    duplicate = _dict(record.get("duplicate_of"))
    row = {
        "path": _text(record.get("path")),
        "status": _text(record.get("status")),
        "error": _text(record.get("error")),
        "sha256": _text(record.get("sha256")),
        "duplicate_of": _text(duplicate.get("path")),
        "category_id": _text(category.get("id")),
        "category": _joined(category.get("path"), " > "),
        "brand": _text(label.get("brand")),
        "visible_text": _joined(label.get("visible_text"), " | "),
        "answer": _text(record.get("answer")),
    }
    names = _dict(category.get("names"))
    for lang in languages:
        if lang != "en":
            row[f"category_{lang}"] = _joined(names.get(lang), " > ")
    attributes = _dict(label.get("attributes"))
    for name in ATTRIBUTE_FIELDS:
        values = [_dict(v) for v in _list(attributes.get(name))]
        row[name] = _joined([v.get("value") for v in values])
        row[f"{name}_raw"] = _joined([v.get("raw") for v in values])
    fields = _dict(_dict(label.get("details")).get("fields"))
    row["details"] = _joined([f"{k}={_joined(v) if isinstance(v, list) else _text(v)}" for k, v in fields.items()])
    copy = _dict(label.get("copy"))
    for lang in languages:
        text = _dict(copy.get(lang))
        row[f"title_{lang}"] = _text(text.get("title"))
        row[f"description_{lang}"] = _text(text.get("description"))
        row[f"selling_points_{lang}"] = _joined(text.get("selling_points"))
        row[f"tags_{lang}"] = _joined(text.get("tags"))
    # One row per record: the photo's main product (or the product of a product record). Other
    # products in the photo stay in this row, as "title (category)" entries: they have no copy of
    # their own to fill a row with.
    row["scene"] = _text(label.get("scene"))
    items = [_dict(i) for i in _list(label.get("items"))]
    row["items"] = _joined(
        [f"{_text(i.get('title'))} ({_joined(_dict(i.get('category')).get('path'), ' > ')})" for i in items], " | "
    )
    row["product"] = _text(record.get("product"))
    photos = [_dict(i) for i in _list(record.get("images"))]
    row["product_images"] = _joined([p.get("path") for p in photos if p.get("sent")], " | ")
    flags = [_dict(f) for f in _list(_dict(label.get("compliance")).get("flags"))]
    row["compliance_flags"] = _joined(
        [
            f"{_text(f.get('field'))}: {_text(f.get('text'))} ({_text(f.get('rule'))}, {_text(f.get('action'))})"
            for f in flags
        ]
    )
    return row


# Spreadsheet programs run a cell that starts with one of these as a formula (OWASP "CSV
# injection"); model text can start with any of them, so such cells get a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def export_csv(files: list[Path], target: Path | None) -> Selection:
    """UTF-8 with a BOM so Excel opens Chinese correctly; one column per attribute and per language.

    `target` None writes to stdout.
    """
    selection = select(files)
    with _text_output(target, bom=True) as out:
        _write_rows(out, files, selection, csv_columns(selection.languages))
    return selection


def _write_rows(handle: IO[str], files: list[Path], selection: Selection, columns: list[str]) -> None:
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    for record in chosen_records(files, selection):
        row = csv_row(record, selection.languages)
        writer.writerow({column: neutralise_formula(value) for column, value in row.items()})


@dataclass
class FeedOptions:
    """What a shop feed needs besides the records (the export command's options)."""

    lang: str | None = None  # None: the run's only language
    urls: PhotoURLs | None = None  # public photo URLs; None: no image links (a supplemental feed may go without)
    ids: ShopIds = field(default_factory=ShopIds)
    shop_url: str = ""  # RSS 2.0's channel link (gmc-xml)
    mapping: dict[str, str] | None = None  # Google path -> Shopify category
    vendor: str = ""


def export_feed(files: list[Path], target: Path | None, feed_format: str, options: FeedOptions) -> FeedReport:
    """A Merchant Center supplemental feed (TSV or XML) or a Shopify product CSV from the chosen records.

    The whole feed is made before a byte is written: a run-level failure (a handle clash, a photo outside
    --root) leaves no half feed, and a feed with no product is not written at all (an empty feed uploaded
    would clear what the shop had).
    """
    selection = select(files)
    lang = feed_language(options.lang, selection.languages)
    report = FeedReport()
    products = group_products(chosen_records(files, selection), options.ids, options.urls, report)
    text = io.StringIO()
    if feed_format == "shopify-csv":
        if options.urls is None:
            raise UsageError("a Shopify import needs --image-base-url https://… : its products' photos must have URLs")
        # No formula guard here (unlike --csv): Shopify would import the apostrophe as part of the text.
        writer = csv.DictWriter(text, fieldnames=SHOPIFY_COLUMNS)
        writer.writeheader()
        handles: dict[str, str] = {}
        for product in products:
            writer.writerows(
                shopify_rows(product, lang, options.urls, options.mapping, options.vendor, handles, report)
            )
    else:
        items = [i for p in products if (i := gmc_item(p, lang, options.urls, report)) is not None]
        if feed_format == "gmc-tsv":
            write_gmc_tsv(items, text, report)
        else:
            write_gmc_xml(items, text, options.shop_url)
    if report.rows:
        with _text_output(target, bom=feed_format == "shopify-csv") as out:
            out.write(text.getvalue())
    return report


@contextlib.contextmanager
def _text_output(target: Path | None, bom: bool) -> Iterator[IO[str]]:
    """A text file, or stdout when target is None; write failures become the run's output errors."""
    encoding = "utf-8-sig" if bom else "utf-8"
    try:
        if target is None:
            stream = io.TextIOWrapper(stdout_binary(), encoding=encoding, newline="", write_through=True)
            try:
                yield stream
            finally:
                stream.detach()
        else:  # checked by the command (store.safe_files), replaced only when every row is written
            with replaced_atomically(target, "") as raw:
                handle = io.TextIOWrapper(raw, encoding=encoding, newline="")
                try:
                    yield handle
                    handle.flush()
                finally:
                    handle.detach()
    except BrokenPipeError:
        raise PipeClosed() from None
    except OSError as exc:
        raise OutputError(f"cannot write {target or 'to stdout'}: {exc.strerror or exc}") from exc
