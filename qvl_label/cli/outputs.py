"""`cache`, `export` and `merge`: what batch leaves behind, kept, combined and flattened."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..pipeline.batch import open_output
from ..store.cache import CacheError, LabelCache, is_sqlite_file, remove_database
from ..store.export import export_csv, merge
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


def export(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL outputs of batch (several shards allowed).")],
    csv_path: Annotated[
        Path, typer.Option("--csv", help="CSV file to write (UTF-8 with BOM, for Excel), or - for stdout.")
    ],
) -> None:
    """Flatten records to CSV: one row per image, one column per attribute and per language."""

    def action() -> None:
        to_stdout = str(csv_path) == "-"
        if not to_stdout:
            refuse_same_file(csv_path, inputs, "the CSV file")
        selection = export_csv(inputs, None if to_stdout else csv_path)
        where = "stdout" if to_stdout else csv_path
        err.print(f"{len(selection.chosen)} images written to {where} ({selection.records} records read)")
        if selection.torn_lines:
            err.print(f"[yellow]skipped {selection.torn_lines} lines that are not records[/yellow]")

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
