"""`cache`, `export` and `merge`: what batch leaves behind, kept, combined and flattened."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..pipeline.batch import open_output
from ..store.export import export_csv, merge
from ..store.outputs import refuse_same_file
from ._common import open_cache
from ._errors import err, run_action
from ._options import CacheOpt

cache_app = typer.Typer(help="The persistent label cache.", no_args_is_help=True)


@cache_app.command("stats")
def cache_stats(cache: CacheOpt = None) -> None:
    """Where the cache is, how many labels it holds and its size on disk."""

    def action() -> None:
        label_cache = open_cache(cache, False)
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
        label_cache = open_cache(cache, False)
        try:
            removed = label_cache.clear()
        finally:
            label_cache.close()
        err.print(f"removed {removed} cached labels from {label_cache.path}")

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
