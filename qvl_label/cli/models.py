"""`models`: pinned presets listed, downloaded and located, and random-weight models made for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError, write_stdout
from ._common import model_store
from ._errors import err, run_action
from ._options import DebugOpt, OfflineOpt

models_app = typer.Typer(help="Pinned model presets: list, download, locate.", no_args_is_help=True)


STATE_STYLE = {"verified": "green", "present, not verified": "yellow", "partial": "yellow"}


@models_app.command("list")
def models_list(
    offline: OfflineOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array of presets on stdout.")] = False,
) -> None:
    """Show presets, whether they are downloaded and verified, sizes and paths."""

    def action() -> None:
        store = model_store(offline)
        presets: list[dict[str, Any]] = []
        for name, preset in store.lock.presets.items():
            states = store.state(preset)
            if all(s.verified for s in states):
                state = "verified"
            elif all(s.path for s in states):
                state = "present, not verified"
            elif any(s.path for s in states):
                state = "partial"
            else:
                state = "not downloaded"
            listed = [
                {"role": s.role, "file": s.pinned.file, "bytes": s.pinned.size, "path": str(s.path) if s.path else None}
                for s in states
            ]
            size = sum(s.pinned.size for s in states)
            presets.append(
                {"name": name, "default": name == store.lock.default, "state": state, "bytes": size, "files": listed}
            )
        if as_json:
            write_stdout(orjson.dumps(presets, option=orjson.OPT_INDENT_2) + b"\n")
            return
        table = Table(show_header=True, header_style="bold")
        for col in ("preset", "state", "size", "files"):
            table.add_column(col)
        for p in presets:
            style = STATE_STYLE.get(p["state"])
            state = f"[{style}]{p['state']}[/{style}]" if style else p["state"]
            files = "\n".join(f["path"] or f["file"] for f in p["files"])
            table.add_row(
                f"{p['name']}{' (default)' if p['default'] else ''}", state, f"{p['bytes'] / 1e9:.2f} GB", files
            )
        Console(highlight=False).print(table)

    run_action(False, action)


@models_app.command("pull")
def models_pull(
    preset: Annotated[str | None, typer.Argument(help="Preset to download (default: the lock's default).")] = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Download a preset at its pinned revision (resumes), then verify size and sha256."""

    def action() -> None:
        store = model_store(offline)
        chosen = store.lock.get(preset)
        paths = store.pull(chosen)
        err.print(f"[green]{chosen.name} verified[/green]")
        for role, path in paths.items():
            print(f"{role}\t{path}")

    run_action(debug, action)


@models_app.command("path")
def models_path(
    preset: Annotated[str | None, typer.Argument(help="Preset name (default: the lock's default).")] = None,
) -> None:
    """Print `model<TAB>path` and `mmproj<TAB>path` of a downloaded preset, for scripts."""

    def action() -> None:
        store = model_store(offline=False)  # never downloads: it only says where the files are, or that they are not
        chosen = store.lock.get(preset)
        for state in store.state(chosen):
            if state.path is None:
                raise store._missing(chosen, state.pinned)
            print(f"{state.role}\t{state.path}")

    run_action(False, action)


@models_app.command("make-random")
def models_make_random(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the two GGUF files into.")],
    shape: Annotated[
        str, typer.Option("--shape", help="tiny (a few MB), 2b or 8b (real Qwen3-VL shapes, GBs).")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Weights seed.")] = 0,
    vocab: Annotated[
        str, typer.Option("--vocab", help="bytes (small byte-level BPE, fast) or qwen (the real Qwen tokenizer).")
    ] = "bytes",
) -> None:
    """Write a random-weight Qwen3-VL model + mmproj (real architecture) for tests and benchmarks."""
    from .. import tinymodel

    def action() -> None:
        if shape not in tinymodel.SHAPES:
            raise UsageError(f"unknown shape {shape!r}; choose from {', '.join(tinymodel.SHAPES)}")
        if vocab not in tinymodel.VOCABULARIES:
            raise UsageError(f"unknown vocabulary {vocab!r}; choose from {', '.join(tinymodel.VOCABULARIES)}")
        made = tinymodel.generate(out_dir, shape, seed, vocab)
        print(f"model\t{made.model}")
        print(f"mmproj\t{made.mmproj}")

    run_action(False, action)
