"""`taxonomy map` and `taxonomy search`: the category mapper on its own, for checking and fixing category data."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from ..errors import UsageError, write_stdout
from ..labeling.schema import parse_languages
from ..labeling.taxonomy import TAXONOMY_VERSION, load_taxonomy, node_record
from ..store.values import decoded_lines
from ._errors import run_action

taxonomy_app = typer.Typer(
    help=f"The Google Product Taxonomy ({TAXONOMY_VERSION}): map wording onto it, search it.", no_args_is_help=True
)
NamesOpt = Annotated[
    str, typer.Option("--names", help="Languages of the `names` in the output, e.g. zh,ja (English is `path`).")
]


@taxonomy_app.command("map")
def taxonomy_map(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help='Paths such as "Electronics > Accessories > Phone Cases"; none or - reads stdin.'),
    ] = None,
    names: NamesOpt = "zh",
) -> None:
    """Map category paths (top level first, any language) onto taxonomy nodes: one JSON line each."""

    def action() -> None:
        languages = parse_languages(names)
        taxonomy = load_taxonomy()
        source = decoded_lines(sys.stdin.buffer, "stdin") if not paths or paths == ["-"] else paths
        for line in source:
            text = line.rstrip("\n")
            if not text.strip():
                continue
            levels = text.split(">")
            try:
                category, score = taxonomy.map_path(levels)
            except (ValueError, LookupError) as exc:
                record = {"input": text, "error": str(exc)}
            else:
                record = {
                    "input": text,
                    **node_record(taxonomy, category, score, [s.strip() for s in levels], languages),
                }
            write_stdout(orjson.dumps(record) + b"\n")

    run_action(False, action)


@taxonomy_app.command("search")
def taxonomy_search(
    words: Annotated[list[str], typer.Argument(help="Words to look for, in any language the names tables cover.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many nodes to list.")] = 10,
    names: NamesOpt = "zh",
) -> None:
    """List the taxonomy nodes that best match some words: id, score, path and names, one JSON line each."""

    def action() -> None:
        if not 1 <= limit <= 100:
            raise UsageError("--limit must be between 1 and 100")
        languages = parse_languages(names)
        taxonomy = load_taxonomy()
        query = " ".join(words)
        for match in taxonomy.rank([query], limit=limit):
            record = node_record(taxonomy, match.category, match.score, [query], languages)
            write_stdout(orjson.dumps(record) + b"\n")

    run_action(False, action)
