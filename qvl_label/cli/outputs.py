"""`cache`, `export`, `merge` and `import-review`: what batch leaves behind, kept, combined, flattened, reviewed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from ..errors import OutputError, UsageError, stdout_binary, write_stdout
from ..labeling.config import load_config
from ..pipeline.records import OK
from ..store.cache import CacheError, LabelCache, is_sqlite_file, remove_database
from ..store.export import FeedOptions, chosen_records, export_csv, export_feed, merge, select
from ..store.feeds import PhotoURLs, ShopIds, check_base_url, read_ids, read_primary_feed
from ..store.labelstudio import ReviewReport, labeling_config, review_to_gold, task
from ..store.safe_files import (
    own_config_xml,
    own_header,
    own_jsonl,
    own_tasks_json,
    own_text,
    refuse_link,
    replaced_atomically,
)
from ..store.shopify import read_shopify_mapping
from ..store.values import check_records
from ._common import check_output_file, default_cache_path, open_cache, write_jsonl
from ._errors import EXIT_OK, EXIT_SOME_FAILED, err, run_action
from ._options import CacheOpt, ForceReplaceOpt

cache_app = typer.Typer(help="The persistent label cache.", no_args_is_help=True)


@cache_app.command("stats")
def cache_stats(
    cache: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of name<TAB>value lines.")] = False,
) -> None:
    """Where the cache is, how many labels it holds and its size on disk."""

    def action() -> None:
        target = cache or default_cache_path()
        numbers: dict[str, str | int] = {"path": str(target), "labels": 0, "runs": 0, "bytes": 0}
        if target.exists():  # looking must not create a database
            label_cache = open_cache(target, False)
            try:
                stats = label_cache.stats()
            finally:
                label_cache.close()
            numbers = {"path": str(stats.path), "labels": stats.entries, "runs": stats.fingerprints}
            numbers["bytes"] = stats.size_bytes
        else:
            err.print(f"no label cache at {target} yet")
        if as_json:
            write_stdout(orjson.dumps(numbers) + b"\n")
        else:
            write_stdout("".join(f"{name}\t{value}\n" for name, value in numbers.items()).encode())

    run_action(False, action)


@cache_app.command("clear")
def cache_clear(cache: CacheOpt = None) -> None:
    """Delete every cached label."""

    def action() -> None:
        target = cache or default_cache_path()
        try:
            label_cache = LabelCache(target)
            try:
                removed = label_cache.clear()
            finally:
                label_cache.close()
        except (OSError, sqlite3.Error, CacheError) as exc:
            # A damaged database: clearing must always be able to start afresh. A file that is
            # not a database at all is not ours to delete.
            if target.exists() and not is_sqlite_file(target):
                raise UsageError(f"{target} is not a label cache (not an SQLite file); it was left untouched") from exc
            remove_database(target)
            LabelCache(target).close()
            err.print(f"the label cache {target} could not be read ({exc}); it was removed and started afresh")
            return
        err.print(f"removed {removed} cached labels from {target}")

    run_action(False, action)


FEED_FORMATS = ("csv", "gmc-tsv", "gmc-xml", "shopify-csv")
# How each format's file is known as this tool's own (docs/reference/reliability.md): its header.
OWN_FEED = {
    "gmc-tsv": own_header(b"id\tstructured_title\t", b"id\ttitle\tdescription\t"),  # this version, the one before
    "gmc-xml": own_text(b'<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">'),
    "shopify-csv": own_header(b"Title,URL handle,Description,Vendor,"),
}


def export(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL outputs of batch (several shards allowed).")],
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="CSV file to write (UTF-8 with BOM, for Excel), or - for stdout.")
    ] = None,
    feed_format: Annotated[
        str,
        typer.Option("--format", help="csv (the default), gmc-tsv, gmc-xml (Google Merchant Center) or shopify-csv."),
    ] = "csv",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write, or - for stdout.")] = None,
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="Language of a shop feed's copy (default: the run's only language)."),
    ] = None,
    image_base_url: Annotated[
        str | None, typer.Option("--image-base-url", help="https:// URL the photos are served under (shop feeds).")
    ] = None,
    allow_http: Annotated[
        bool, typer.Option("--allow-http", help="Accept http:// for --image-base-url and --shop-url.")
    ] = False,
    root: Annotated[
        Path | None, typer.Option("--root", help="Folder the photo paths are made relative to for image URLs.")
    ] = None,
    ids: Annotated[
        Path | None, typer.Option("--ids", help="CSV of `path` -> `id` (or `handle`): photos of one product merge.")
    ] = None,
    primary_feed: Annotated[
        Path | None,
        typer.Option("--primary-feed", help="The shop's Merchant Center primary feed: ids matched by image."),
    ] = None,
    shop_url: Annotated[
        str | None, typer.Option("--shop-url", help="The shop's home page: the gmc-xml channel's <link>.")
    ] = None,
    shopify_mapping: Annotated[
        Path | None, typer.Option("--shopify-mapping", help="Shopify's published Shopify->Google taxonomy mapping.")
    ] = None,
    vendor: Annotated[str, typer.Option("--vendor", help="Shopify Vendor when no brand was read.")] = "",
    label_studio: Annotated[
        Path | None,
        typer.Option("--label-studio", help="Folder for a Label Studio project: config.xml and tasks.json."),
    ] = None,
    force: ForceReplaceOpt = False,
) -> None:
    """Flatten records to a CSV for spreadsheets, a shop feed (Merchant Center, Shopify) or Label Studio tasks."""

    def action() -> int:
        readable = [*inputs, ids, primary_feed, shopify_mapping]
        if label_studio is not None:
            _export_label_studio(inputs, label_studio, root, image_base_url, readable, force)
            return EXIT_OK
        if feed_format not in FEED_FORMATS:
            raise UsageError(f"--format takes one of {', '.join(FEED_FORMATS)}, not {feed_format!r}")
        if output is not None and csv_path is not None:  # one file per run: neither is silently dropped
            raise UsageError("give -o FILE or --csv FILE, not both (--csv is -o with the spreadsheet CSV format)")
        target = output if output is not None else csv_path
        if target is None:
            raise UsageError("give the file to write: -o FILE (or --csv FILE for the spreadsheet CSV), - for stdout")
        to_stdout = str(target) == "-"
        if not to_stdout:
            own = OWN_FEED[feed_format] if feed_format in OWN_FEED else own_header(b"path,status,error,sha256")
            check_output_file(target, what="the output", inputs=readable, own=own, force=force, records=inputs)
        if feed_format == "csv":
            selection = export_csv(inputs, None if to_stdout else target)
            where = "stdout" if to_stdout else target
            err.print(f"{len(selection.chosen)} images written to {where} ({selection.records} records read)")
            if selection.torn_lines:
                err.print(f"[yellow]skipped {selection.torn_lines} lines that are not records[/yellow]")
            return EXIT_OK
        code = _export_feed(inputs, None if to_stdout else target, feed_format, lang, image_base_url, allow_http,
                            root, ids, primary_feed, shop_url, shopify_mapping, vendor)  # fmt: skip
        return code

    raise typer.Exit(run_action(False, action))


def _export_feed(
    inputs: list[Path], target: Path | None, feed_format: str, lang: str | None, image_base_url: str | None,
    allow_http: bool, root: Path | None, ids: Path | None, primary_feed: Path | None, shop_url: str | None,
    shopify_mapping: Path | None, vendor: str,
) -> int:  # fmt: skip
    """A shop feed; exit 1 when a record or product was left out or an --ids row matched no record."""
    if feed_format != "shopify-csv" and ids is None and primary_feed is None:
        raise UsageError("a Merchant Center feed from labels is a supplemental feed, keyed by the shop's own ids: "
                         "give --ids CSV (photo path -> id) or --primary-feed FILE (ids matched by image)")  # fmt: skip
    if feed_format == "shopify-csv" and image_base_url is None:
        raise UsageError("a Shopify import needs --image-base-url https://… : its products' photos must have URLs")
    if feed_format == "gmc-xml" and shop_url is None:
        raise UsageError("gmc-xml needs --shop-url https://… : RSS 2.0 requires the channel's <link>")
    urls = None
    if image_base_url is not None:
        urls = PhotoURLs(check_base_url(image_base_url, "--image-base-url", allow_http), str(root) if root else None)
    options = FeedOptions(
        lang=lang, urls=urls,
        ids=read_ids(ids) if ids else read_primary_feed(primary_feed) if primary_feed else ShopIds(),
        shop_url=check_base_url(shop_url, "--shop-url", allow_http) if shop_url else "",
        mapping=read_shopify_mapping(shopify_mapping) if shopify_mapping else None, vendor=vendor,
    )  # fmt: skip
    report = export_feed(inputs, target, feed_format, options)
    where = "stdout" if target is None else target
    err.print(f"{report.rows} products written to {where} ({report.not_ok} records not ok, left out)")
    for problem in report.invalid:
        err.print(f"[yellow]left out, cannot be valid: {escape(problem)}[/yellow]")
    for warning in report.warnings:
        err.print(f"[yellow]{escape(warning)}[/yellow]")
    if report.unmatched_ids:
        listed = ", ".join(repr(p) for p in report.unmatched_ids[:5])
        more = f" and {len(report.unmatched_ids) - 5} more" if len(report.unmatched_ids) > 5 else ""
        err.print(f"[yellow]{len(report.unmatched_ids)} --ids paths match no record: {escape(listed)}{more}[/yellow]")
    if feed_format == "shopify-csv" and report.unmapped_category:
        reason = "no --shopify-mapping given" if shopify_mapping is None else "no unique Shopify category"
        err.print(f"Product category left empty for {report.unmapped_category} products ({reason})")
    if not report.rows:
        err.print("[bold red]error:[/bold red] no product could be written: no feed file was written")
    return EXIT_OK if report.complete else EXIT_SOME_FAILED


def _export_label_studio(
    inputs: list[Path], folder: Path, root: Path | None, base_url: str | None, readable: list[Path | None], force: bool
) -> None:
    """config.xml and tasks.json for review in Label Studio; photos as local-files URLs under --root
    (Label Studio's LOCAL_FILES_DOCUMENT_ROOT) or under --image-base-url."""
    check_records(inputs)  # a field of the wrong type: file:line: field, before anything is written
    refuse_link(folder, "the --label-studio folder")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--label-studio {folder} is not a folder; it was left untouched")
    config_file, tasks_file = folder / "config.xml", folder / "tasks.json"
    for file, own in ((config_file, own_config_xml), (tasks_file, own_tasks_json)):
        check_output_file(file, what="the output", inputs=readable, own=own, force=force, records=inputs)
    selection = select(inputs)
    records = [r for r in chosen_records(inputs, selection) if r.get("status") == OK]
    if not records:
        raise UsageError("no ok record to review")
    languages = selection.languages or ["en"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from exc
    config = labeling_config(load_config(None), records, languages)
    with replaced_atomically(config_file, "the output") as handle:
        handle.write(config.encode("utf-8"))
    tasks = [task(r, languages, str(root) if root else None, base_url) for r in records]
    with replaced_atomically(tasks_file, "the output") as handle:
        handle.write(orjson.dumps(tasks, option=orjson.OPT_INDENT_2))
    left_out = len(selection.chosen) - len(tasks)
    written = f"{len(tasks)} tasks and their labelling config written to {folder}"
    err.print(f"{written} ({left_out} records not ok, left out)")


def import_review(
    export_file: Annotated[Path, typer.Argument(help="Label Studio's JSON export of the reviewed project.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Gold JSONL to write, or - for stdout.")] = "-",
    force: ForceReplaceOpt = False,
) -> None:
    """Turn reviewed Label Studio tasks into gold for `eval`, and say what reviewers changed, field by field."""

    def action() -> None:
        if output != "-":
            check_output_file(output, what="the gold output", inputs=[export_file], own=own_jsonl, force=force)
        try:
            export_data = orjson.loads(export_file.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read {export_file}: {exc.strerror or exc}") from exc
        except orjson.JSONDecodeError:
            raise UsageError(f"{export_file} is not JSON: export the project as JSON in Label Studio") from None
        if not isinstance(export_data, list):
            raise UsageError(f"{export_file} is not a Label Studio JSON export (a list of tasks)")
        report = ReviewReport()
        gold = review_to_gold(export_data, report, str(export_file))
        write_jsonl(output, gold)
        err.print(f"{len(gold)} gold entries from {report.reviewed} reviewed of {report.tasks} tasks"
                  f" ({report.rejected_unchanged} rejected without a correction, left out)")  # fmt: skip
        if report.without_path:
            err.print(f"[yellow]left out {report.without_path} reviewed tasks without data.path: gold needs the "
                      "photo's path (tasks from export --label-studio have it)[/yellow]")  # fmt: skip
        for name in sorted(set(report.changed) | set(report.kept)):
            err.print(f"  {name}: changed in {report.changed[name]}, kept in {report.kept[name]}")

    run_action(False, action)


def merge_command(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL outputs to merge, e.g. the shards of one run.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Merged JSONL file, or - for stdout.")],
    force: ForceReplaceOpt = False,
) -> None:
    """Merge outputs into one record per image (an ok record wins over a failure, a later one over an earlier)."""

    def action() -> None:
        if output == "-":
            selection = merge(inputs, stdout_binary())
        else:
            check_output_file(output, what="the merged output", inputs=[*inputs], own=own_jsonl, force=force,
                              records=inputs)  # fmt: skip
            with replaced_atomically(output, "the merged output") as stream:
                selection = merge(inputs, stream)
        err.print(f"{len(selection.chosen)} images from {selection.records} records in {len(inputs)} files")
        if selection.torn_lines:
            err.print(f"[yellow]skipped {selection.torn_lines} lines that are not records[/yellow]")

    run_action(False, action)
