"""The command line: one module per command group; only this layer imports typer and rich."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import evaluate, label, lint, models, outputs, serve, system, taxonomy

app = typer.Typer(
    help="Label e-commerce product photos with a local Qwen3-VL model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(label.describe)
app.command()(label.batch)
app.command()(serve.serve)
app.add_typer(outputs.cache_app, name="cache")
app.command()(outputs.export)
app.command("merge")(outputs.merge_command)
app.command("import-review")(outputs.import_review)
app.add_typer(models.models_app, name="models")
app.command()(system.doctor)
app.command()(system.schema)
app.add_typer(taxonomy.taxonomy_app, name="taxonomy")
app.command("lint-copy")(lint.lint_copy)
app.command("eval")(evaluate.eval_command)
app.command("compare")(evaluate.compare_command)
app.command("learn")(evaluate.learn_command)
app.add_typer(evaluate.gold_app, name="gold")


def _version(value: bool) -> None:
    if value:
        print(f"qvl-label {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Label e-commerce product photos with a local Qwen3-VL model."""


def run() -> None:
    from ..entry import run as run_with_signals

    run_with_signals()
