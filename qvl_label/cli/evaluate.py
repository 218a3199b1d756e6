"""`eval`, `compare` and `gold`: runs scored against gold, two runs side by side, gold made from a shop's feed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError, write_stdout
from ..evaluation.compare import compare
from ..evaluation.feed_gold import FeedReport, gold_entries
from ..evaluation.gold import GoldIndex, load_gold
from ..evaluation.learn import learn, remapped, to_toml
from ..evaluation.metrics import evaluate
from ..evaluation.report import render_compare_html, render_html
from ..labeling.config import load_config
from ..store.safe_files import own_jsonl, own_text, replaced_atomically
from ..store.values import read_records
from ._common import check_output_file, write_jsonl
from ._errors import err, run_action
from ._options import ChannelOpt, ForceReplaceOpt, TemplateOpt


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a batch output, streamed and type-checked (file:line: field when one is wrong)."""
    return read_records(path)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ci(interval: list[float | None]) -> str:
    low, high = interval
    return "" if low is None or high is None else f"{100 * low:.1f}–{100 * high:.1f}%"


def _tables(report: dict[str, Any]) -> list[Table]:
    overview = Table(title="records", header_style="bold")
    overview.add_column("measure")
    overview.add_column("value", justify="right")
    overview.add_row("records", str(report["records"]))
    overview.add_row("with gold", str(report["matched_with_gold"]))
    for status, share in report["statuses"].items():
        overview.add_row(f"status {status}", _pct(share))
    speed = report["speed_ms"]
    if speed["n"]:
        overview.add_row("ms per image (p50 / p95)", f"{speed['p50']:.0f} / {speed['p95']:.0f}")
    copy = report["copy"]
    overview.add_row("titles within the channel's limit", _pct(copy["within_length_limits"]["value"]))
    for lang, outcome in copy["language_script"].items():
        overview.add_row(f"copy in {lang}'s script", _pct(outcome["value"]))
    flags = copy["compliance_flags_per_100"]
    overview.add_row("compliance flags per 100 labels", "-" if flags is None else f"{flags:.1f}")

    fields = Table(title="against gold", header_style="bold")
    for column in ("field", "measure", "value", "95% CI", "n"):
        fields.add_column(column, justify="left" if column in {"field", "measure"} else "right")
    for name, outcome in report["category"].items():
        fields.add_row(
            "category", name.replace("_", " "), _pct(outcome["value"]), _ci(outcome["ci95"]), str(outcome["n"])
        )
    for name, scores in report["attributes"].items():
        micro, macro = scores["micro"], scores["macro"]
        fields.add_row(
            name, "micro P / R", f"{_pct(micro['precision'])} / {_pct(micro['recall'])}", "", str(scores["n"])
        )
        fields.add_row(name, "micro F1", _pct(micro["f1"]), _ci(micro["f1_ci95"]), str(scores["n"]))
        fields.add_row(name, "macro F1", _pct(macro["f1"]), "", str(scores["n"]))
        fields.add_row(name, "raw wording unmapped", _pct(scores["raw_unmapped"]), "", "")
    for name in ("brand", "visible_text"):
        block = report[name]
        if block["exact"]["n"]:
            n = str(block["exact"]["n"])
            fields.add_row(name, "exact", _pct(block["exact"]["value"]), _ci(block["exact"]["ci95"]), n)
            fields.add_row(name, "token F1", _pct(block["token_f1"]), _ci(block["token_f1_ci95"]), n)
    for lang, block in report["titles"].items():
        fields.add_row(f"title {lang}", "token F1", _pct(block["token_f1"]), "", str(block["n"]))
    return [overview, fields]


def _emit(report: dict[str, Any], as_json: bool, tables: list[Table], notes: list[str]) -> None:
    """The report on stdout: JSON for machines, else the tables and the example lines."""
    if as_json:
        write_stdout(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        return
    console = Console(highlight=False, soft_wrap=True)
    for table in tables:
        console.print(table)
    for note in notes:
        console.print(note, markup=False)


def _write_html(target: Path, page: str) -> None:
    with replaced_atomically(target, "the HTML report") as handle:
        handle.write(page.encode("utf-8"))
    err.print(f"report written to {target}")


# Every report's <title> starts so: how the tool knows a report of its own (docs/reference/reliability.md).
_OWN_HTML = own_text(b"<title>qvl-label ")
_OWN_TEMPLATE = own_text(b"# Learnt by `qvl-label learn`")


def eval_command(
    output: Annotated[Path, typer.Argument(help="A batch output (JSONL records).", show_default=False)],
    gold: Annotated[
        Path, typer.Option("--gold", help="Gold labels: JSONL in the record's shape, or CSV/TSV (README).")
    ],
    root: Annotated[Path | None, typer.Option("--root", help="Folder the gold's relative paths start from.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole report as JSON on stdout.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (thumbnails inline).")
    ] = None,
    worst: Annotated[int, typer.Option("--worst", help="How many of the worst examples to list.")] = 10,
    remap: Annotated[
        bool,
        typer.Option(
            "--remap", help="Map the model's wording again with --template before scoring (e.g. after learn)."
        ),
    ] = False,
    channel: ChannelOpt = "generic",
    template: TemplateOpt = None,
    force: ForceReplaceOpt = False,
) -> None:
    """Score a run's records against gold labels (category, attributes, brand, text, copy, statuses, speed)."""

    def action() -> None:
        if not output.is_file():
            raise UsageError(f"{output}: no such file")
        if worst < 0:
            raise UsageError("--worst cannot be negative")
        if html is not None:  # before the scoring: a refused report costs nothing
            check_output_file(html, what="the HTML report", inputs=[output, gold, template], own=_OWN_HTML,
                              force=force, records=[output])  # fmt: skip
        config = load_config(template)
        config.channel(channel)  # an unknown channel is a usage error before any reading
        index = GoldIndex(load_gold(gold, config), root or Path.cwd())  # relative gold paths start here
        records = remapped(_records(output), config) if remap else _records(output)
        report = evaluate(records, index, config, channel, worst).as_json()
        if report["matched_with_gold"] == 0:
            err.print("[yellow]no record matched the gold by path or sha256; is --root right?[/yellow]")
        if html is not None:
            _write_html(html, render_html(report, f"qvl-label eval: {output.name} against {gold.name}", Path.cwd()))
        notes = [f"worst: {e['path']} (fields right: {_pct(e['score'])})" for e in report["worst"]]
        _emit(report, as_json, _tables(report), notes)

    run_action(False, action)


def _compare_tables(report: dict[str, Any]) -> list[Table]:
    overview = Table(title="A and B", header_style="bold")
    for column in ("", "A", "B"):
        overview.add_column(column, justify="right" if column else "left")
    for status in sorted(set(report["statuses"]["a"]) | set(report["statuses"]["b"])):
        overview.add_row(f"status {status}", str(report["statuses"]["a"].get(status, 0)),
                         str(report["statuses"]["b"].get(status, 0)))  # fmt: skip
    speed = report["ms_per_image_p50"]
    overview.add_row("ms per image (p50)", *(f"{speed[s]:.0f}" if speed[s] is not None else "-" for s in "ab"))
    overview.add_row("photos only in this run", str(report["only_in_a"]), str(report["only_in_b"]))
    agreement = Table(title=f"agreement over {report['both_ok']} photos ok in both", header_style="bold")
    for column in ("field", "A = B", "95% CI", "n"):
        agreement.add_column(column, justify="left" if column == "field" else "right")
    for name, outcome in report["agreement"].items():
        agreement.add_row(name.replace("_", " "), _pct(outcome["value"]), _ci(outcome["ci95"]), str(outcome["n"]))
    tables = [overview, agreement]
    if report["against_gold"]:
        winners = Table(title="against gold (McNemar's exact test)", header_style="bold")
        for column in ("field", "A right", "B right", "only A", "only B", "p", "winner", "n"):
            winners.add_column(column, justify="left" if column in {"field", "winner"} else "right")
        for name, w in report["against_gold"].items():
            winners.add_row(
                name.replace("_", " "), _pct(w["a_right"]), _pct(w["b_right"]), str(w["a_only_right"]),
                str(w["b_only_right"]), f"{w['mcnemar_p']:.3g}", (w["winner"] or "").upper() or "neither",
                str(w["n"]),
            )  # fmt: skip
        tables.append(winners)
    return tables


def compare_command(
    run_a: Annotated[Path, typer.Argument(help="Run A (batch output JSONL).", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="Run B, over the same photos.", show_default=False)],
    gold: Annotated[Path | None, typer.Option("--gold", help="Gold labels: which run wins, field by field.")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Folder the gold's relative paths start from.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole comparison as JSON on stdout.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")] = None,
    examples: Annotated[int, typer.Option("--examples", help="How many differing photos to list.")] = 10,
    template: TemplateOpt = None,
    force: ForceReplaceOpt = False,
) -> None:
    """Compare two runs over the same photos (models, quantisations, prompts): agreement, differences, winners."""

    def action() -> None:
        for path in (run_a, run_b):
            if not path.is_file():
                raise UsageError(f"{path}: no such file")
        if examples < 0:
            raise UsageError("--examples cannot be negative")
        if html is not None:
            check_output_file(html, what="the HTML report", inputs=[run_a, run_b, gold, template], own=_OWN_HTML,
                              force=force, records=[run_a, run_b])  # fmt: skip
        config = load_config(template)
        index = GoldIndex(load_gold(gold, config), root or Path.cwd()) if gold is not None else None
        report = compare(_records(run_a), _records(run_b), index, config.taxonomy, examples).as_json()
        if report["both_ok"] == 0:
            err.print("[yellow]no photo is ok in both runs: are they over the same photos?[/yellow]")
        if html is not None:
            title = f"qvl-label compare: A {run_a.name}, B {run_b.name}"
            _write_html(html, render_compare_html(report, title, Path.cwd()))
        notes = [f"differ: {e['path']} ({', '.join(e['fields'])})" for e in report["disagreements"]]
        _emit(report, as_json, _compare_tables(report), notes)

    run_action(False, action)


gold_app = typer.Typer(help="Gold labels to score runs against.", no_args_is_help=True)


def _mapping(text: str) -> tuple[str, str]:
    prefix, sep, local = text.partition("=")
    if not sep or not prefix:
        raise UsageError(f"--map takes URL_PREFIX=LOCAL_DIR, not {text!r}")
    return prefix, local


@gold_app.command("from-feed")
def gold_from_feed(
    feed: Annotated[Path, typer.Argument(help="Merchant Center feed (TSV/CSV) or Shopify product CSV export.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Gold JSONL to write, or - for stdout.")] = "-",
    image_column: Annotated[
        str | None, typer.Option("--image-column", help="Column with each photo's URL or path (default per format).")
    ] = None,
    mappings: Annotated[
        list[str] | None,
        typer.Option("--map", help="URL_PREFIX=LOCAL_DIR: where the feed's image URLs are on disk (repeatable)."),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="Language of the feed's titles.")] = "en",
    template: TemplateOpt = None,
    force: ForceReplaceOpt = False,
) -> None:
    """Turn a shop's product feed into gold for `eval` (category, colours, materials, audience, brand, title)."""

    def action() -> None:
        if not feed.is_file():
            raise UsageError(f"{feed}: no such file")
        pairs = [_mapping(m) for m in mappings or []]
        if output != "-":
            check_output_file(output, what="the gold output", inputs=[feed, template], own=own_jsonl, force=force)
        config = load_config(template)
        try:
            text = feed.read_bytes().decode("utf-8-sig", errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read {feed}: {exc.strerror or exc}") from exc
        report = FeedReport()
        entries = list(gold_entries(text, config, image_column, pairs, lang, report))  # errors before any write
        write_jsonl(output, entries)
        given = ", ".join(f"{name} {count}" for name, count in sorted(report.fields.items())) or "nothing"
        err.print(f"{report.written} gold entries from {report.rows} rows; fields given: {given}")
        if report.without_image or report.unmapped_images or report.unknown_categories:
            err.print(
                f"[yellow]left out: {report.without_image} rows without a photo, {report.unmapped_images} photo URLs "
                f"no --map covers, {report.unknown_categories} categories not in the taxonomy[/yellow]"
            )

    run_action(False, action)


def learn_command(
    gold: Annotated[Path, typer.Argument(help="Reviewed gold (e.g. from import-review).", show_default=False)],
    run: Annotated[Path, typer.Option("--run", help="The batch output the reviewers saw (the model's wording).")],
    output: Annotated[str, typer.Option("-o", "--output", help="The --template TOML to write, or - for stdout.")] = "-",
    root: Annotated[Path | None, typer.Option("--root", help="Folder the gold's relative paths start from.")] = None,
    min_count: Annotated[
        int, typer.Option("--min-count", help="Keep a lesson only when reviewers taught it this many times.")
    ] = 1,
    template: TemplateOpt = None,
    force: ForceReplaceOpt = False,
) -> None:
    """Turn reviewers' corrections into a --template file: synonyms, category aliases, shop wording rules."""

    def action() -> None:
        if not run.is_file():
            raise UsageError(f"{run}: no such file")
        if min_count < 1:
            raise UsageError("--min-count must be at least 1")
        if output != "-":
            check_output_file(output, what="the template", inputs=[gold, run, template], own=_OWN_TEMPLATE,
                              force=force, records=[run])  # fmt: skip
        config = load_config(template)
        index = GoldIndex(load_gold(gold, config), root or Path.cwd())
        lessons = learn(_records(run), index, config)
        text = to_toml(lessons, f"{gold.name} against {run.name}", min_count)
        if output == "-":
            write_stdout(text.encode())
        else:
            with replaced_atomically(output, "the template") as handle:
                handle.write(text.encode("utf-8"))
        synonyms = sum(len(v) for v in lessons.synonyms.values())
        rules = sum(len(v) for v in lessons.removed.values())
        err.print(
            f"from {lessons.records} reviewed records: {synonyms} values with new synonyms, "
            f"{len(lessons.aliases)} category aliases, {rules} removed phrases"
        )
        if lessons.unusable_aliases:
            err.print(
                f"left out {lessons.unusable_aliases} category corrections the mapping cannot apply as an alias "
                "(the model's wording names a top level or a whole path the taxonomy has)"
            )

    run_action(False, action)
