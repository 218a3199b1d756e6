"""`cache`, `export` and `merge`: what batch leaves behind, kept, combined and flattened."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import UsageError
from ..pipeline.batch import open_output
from ..store.cache import CacheError, LabelCache, is_sqlite_file, remove_database
from ..store.export import export_csv, export_feed, merge
from ..store.feeds import read_ids, read_shopify_mapping
from ..store.outputs import refuse_same_file
from ._common import default_cache_path, open_cache
from ._errors import err, run_action
from ._options import CacheOpt

cache_app = typer.Typer(help="The persistent label cache.", no_args_is_help=True)


@cache_app.command("stats")
def cache_stats(cache: CacheOpt = None) -> None:
    """Where the cache is, how many labels it holds and its size on disk."""

    def action() -> None:
        target = cache or default_cache_path()
        if not target.exists():  # looking must not create a database
            print(f"path\t{target}\nlabels\t0\nruns\t0\nbytes\t0")
            err.print(f"no label cache at {target} yet")
            return
        label_cache = open_cache(target, False)
        try:
            stats = label_cache.stats()
        finally:
            label_cache.close()
        print(f"path\t{stats.path}")
        print(f"labels\t{stats.entries}")
        print(f"runs\t{stats.fingerprints}")
        print(f"bytes\t{stats.size_bytes}")

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
    lang: Annotated[str, typer.Option("--lang", help="Which language of the copy fills a shop feed.")] = "en",
    image_base_url: Annotated[
        str | None, typer.Option("--image-base-url", help="URL the photos are served under (shop feeds).")
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="Folder the photo paths are made relative to for image URLs.")
    ] = None,
    ids: Annotated[
        Path | None, typer.Option("--ids", help="CSV of `path` -> `id` (or `handle`): photos of one product merge.")
    ] = None,
    shopify_mapping: Annotated[
        Path | None, typer.Option("--shopify-mapping", help="Shopify's published Shopify->Google taxonomy mapping.")
    ] = None,
    vendor: Annotated[str, typer.Option("--vendor", help="Shopify Vendor when no brand was read.")] = "",
) -> None:
    """Flatten records to a CSV for spreadsheets, or to a shop feed: Google Merchant Center or Shopify."""

    def action() -> None:
        if feed_format not in FEED_FORMATS:
            raise UsageError(f"--format takes one of {', '.join(FEED_FORMATS)}, not {feed_format!r}")
        target = output if output is not None else csv_path
        if target is None:
            raise UsageError("give the file to write: -o FILE (or --csv FILE for the spreadsheet CSV), - for stdout")
        to_stdout = str(target) == "-"
        if not to_stdout:
            refuse_same_file(target, [*inputs, *(p for p in (ids, shopify_mapping) if p)], "the output")
        if feed_format == "csv":
            selection = export_csv(inputs, None if to_stdout else target)
            where = "stdout" if to_stdout else target
            err.print(f"{len(selection.chosen)} images written to {where} ({selection.records} records read)")
            if selection.torn_lines:
                err.print(f"[yellow]skipped {selection.torn_lines} lines that are not records[/yellow]")
            return
        if not image_base_url or not image_base_url.startswith(("http://", "https://")):
            raise UsageError("shop feeds need --image-base-url http(s)://… : the photos must have public URLs")
        report = export_feed(
            inputs, None if to_stdout else target, feed_format, lang=lang, base_url=image_base_url,
            root=str(root) if root else None, ids=read_ids(ids) if ids else {},
            mapping=read_shopify_mapping(shopify_mapping) if shopify_mapping else None, vendor=vendor,
        )  # fmt: skip
        err.print(f"{report.rows} products written ({report.not_ok} records not ok, left out)")
        for problem in report.invalid:
            err.print(f"[yellow]left out, cannot be valid: {escape(problem)}[/yellow]")
        for warning in report.warnings:
            err.print(f"[yellow]{escape(warning)}[/yellow]")
        if feed_format == "shopify-csv" and report.unmapped_category:
            reason = "no --shopify-mapping given" if shopify_mapping is None else "no unique Shopify category"
            err.print(f"Product category left empty for {report.unmapped_category} products ({reason})")

    run_action(False, action)


def merge_command(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL outputs to merge, e.g. the shards of one run.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Merged JSONL file, or - for stdout.")],
) -> None:
    """Merge outputs into one record per image (an ok record wins over a failure, a later one over an earlier)."""

    def action() -> None:
        if output != "-":
            refuse_same_file(output, inputs, "the merged output")
        stream, owned = open_output(output, append=False)
        try:
            selection = merge(inputs, stream)
        finally:
            if owned:
                stream.close()
        err.print(f"{len(selection.chosen)} images from {selection.records} records in {len(inputs)} files")
        if selection.torn_lines:
            err.print(f"[yellow]skipped {selection.torn_lines} lines that are not records[/yellow]")

    run_action(False, action)
