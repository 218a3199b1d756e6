"""`lint-copy`: check text a person wrote against the compliance rules of a language and channel."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ..errors import UsageError, write_stdout
from ..labeling.compliance import EMOJI, check_text, rules_for
from ..labeling.config import load_config
from ..labeling.schema import parse_languages
from ..store.values import csv_rows, decoded_lines
from ._errors import EXIT_OK, EXIT_SOME_FAILED, run_action
from ._options import ChannelOpt, TemplateOpt


def _column_values(file: Path, column: str) -> Iterator[str]:
    """A CSV column by header name, or a JSONL field by dotted path (copy.zh.title, label.copy.en.description)."""
    try:
        if file.suffix.lower() == ".csv":
            header, rows = csv_rows(file.read_bytes().decode("utf-8-sig"), str(file))
            if column not in header:
                raise UsageError(f"{file} has no column {column!r}; its columns: {', '.join(header)}")
            for _, row in rows:
                yield row[column]
            return
        with file.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value: Any = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UsageError(f"{file} line {number} is not JSON") from None
                for part in column.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list):
                    yield from (v for v in value if isinstance(v, str))
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text") from None


def lint_copy(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to check; none (or -) reads one per line from stdin.")
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="Language of the text, whose rules apply.")] = "zh",
    channel: ChannelOpt = "generic",
    template: TemplateOpt = None,
    file: Annotated[Path | None, typer.Option("--file", help="A CSV or JSONL file to read a column of.")] = None,
    column: Annotated[
        str | None, typer.Option("--column", help="CSV header, or JSONL dotted path such as label.copy.zh.title.")
    ] = None,
    category: Annotated[
        int | None, typer.Option("--category", help="Taxonomy id of the product: medical rules skip medical goods.")
    ] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Also print the --strict rewrite of each text.")] = False,
) -> None:
    """Check copy against the compliance rules: one JSON line per text with its flags; exit 1 when any is flagged."""

    def action() -> int:
        (language,) = parse_languages(lang) if "," not in lang else (None,)
        if language is None:
            raise UsageError("--lang takes one language for lint-copy")
        config = load_config(template)
        chosen = config.channel(channel)
        if (file is None) != (column is None):
            raise UsageError("--file and --column go together")
        if file is not None and texts:
            raise UsageError("give texts as arguments or --file with --column, not both")
        ancestors: set[int] = set()
        if category is not None:
            node = config.taxonomy.nodes.get(category)
            if node is None:
                raise UsageError(f"--category {category} is not a Google Product Taxonomy id")
            ancestors = {config.taxonomy.by_path[node.path[:d]] for d in range(1, len(node.path) + 1)}
        rules = rules_for(config.rules, language, ancestors)
        if file is not None and column is not None:
            source: Iterator[str] | list[str] = _column_values(file, column)
        elif texts and texts != ["-"]:
            source = texts
        else:
            source = decoded_lines(sys.stdin.buffer, "stdin")
        flagged = 0
        for text in source:
            checked = check_text(text, rules, "text", strict=fix)
            flags = checked.flags
            if not chosen.emoji:
                for match in EMOJI.finditer(text):
                    flags.append(
                        {
                            "field": "text",
                            "span": [match.start(), match.end()],
                            "text": match.group(0),
                            "rule": f"{chosen.name}-no-emoji",
                            "kind": "emoji on a channel that does not allow them",
                            "suggestion": "remove the emoji",
                            "action": "removed" if fix else "flagged",
                        }
                    )
            record: dict[str, Any] = {"text": text, "flags": flags}
            if fix:
                fixed = EMOJI.sub("", checked.text).strip() if not chosen.emoji else checked.text
                record["fixed"] = fixed if fixed else checked.text
                record["kept"] = checked.kept
            flagged += bool(flags)
            write_stdout(orjson.dumps(record) + b"\n")
        return EXIT_SOME_FAILED if flagged else EXIT_OK

    raise typer.Exit(run_action(False, action))
