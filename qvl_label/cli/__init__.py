"""The command line: one module per command group; only this layer imports typer and rich."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import evaluate, label, lint, models, outputs, serve, system, taxonomy
from ._examples import epilog

app = typer.Typer(
    help="Label e-commerce product photos with a local Qwen3-VL model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's own help layout: flags read as flags (`--pretty`, not `--pretty <bool>`), nothing in
    # square brackets is eaten as markup (`qvl-label[ray]`), and -h works on every command.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
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


def _finish_help(group: typer.Typer, prefix: str) -> None:
    """Give every command its examples and every group click's plain help layout, in one place."""
    group.rich_markup_mode = None
    for info in group.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        info.epilog = epilog(f"{prefix}{name}")
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _finish_help(sub.typer_instance, f"{prefix}{sub.name} ")


_finish_help(app, "")


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
