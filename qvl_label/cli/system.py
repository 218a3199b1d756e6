"""`doctor` and `schema`: what this installation can do, and the answer shape the model is held to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__
from ..errors import EngineLoadError, write_stdout
from ..labeling.config import load_config
from ..labeling.schema import answer_schema, parse_languages, record_label_schema
from ..pipeline.records import dumps
from ..settings import EngineSettings
from ._common import model_store, state_dir
from ._errors import EXIT_OK, run_action
from ._options import ChannelOpt, DebugOpt, GpuLayersOpt, LangOpt, TemplateOpt, ThreadsOpt


def doctor(
    gpu_layers: GpuLayersOpt = -1,
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="The whole report as one JSON object on stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Check the llama.cpp build, GPU offload, model cache, and run a real inference on a tiny model."""
    from ..doctor import run_doctor

    def action() -> int:
        store = model_store(offline=True)
        probe = EngineSettings(
            model_path=Path(), mmproj_path=Path(), n_gpu_layers=gpu_layers, threads=threads, verbose=debug
        )
        report = run_doctor(store, probe)
        passed = bool(report.smoke.get("ok"))
        if as_json:
            document = {
                "version": __version__,
                "backend": report.backend,
                "state_directory": str(state_dir()),
                "presets": report.presets,
                "smoke_test": report.smoke,
            }
            write_stdout(dumps(document, pretty=True) + b"\n")
            return EXIT_OK if passed else EngineLoadError.exit_code
        out = Console(highlight=False)
        b = report.backend
        out.print(f"qvl-label         {__version__}")
        out.print(f"llama-cpp-python  {b['llama_cpp_python']}")
        offload = "[green]yes[/green]" if b["gpu_offload"] else "[yellow]no (CPU-only build)[/yellow]"
        out.print(f"GPU offload       {offload}")
        out.print(f"devices           {', '.join(b['devices']) or 'none reported'}")
        out.print(f"grammar           {b['grammar']}")
        out.print(f"state directory   {state_dir()}")
        for p in report.presets:
            mark = "verified" if p["verified"] else ("present" if p["present"] else "not downloaded")
            default = " (default)" if p["default"] else ""
            out.print(f"model {p['name']}{default}: {mark}, {p['size_gb']} GB")
        s = report.smoke
        if passed:
            out.print(
                f"[green]smoke test passed[/green]: tiny Qwen3-VL loaded in llama.cpp, image encoded into "
                f"{s['image_tokens']} tokens, {s['completion_tokens']} tokens generated under {s['grammar']} "
                f"({s['forced_tokens']} of them forced; {s['seconds']}s, "
                f"{s['threads']} thread{'' if s['threads'] == 1 else 's'}, "
                f"{s['n_gpu_layers']} GPU layers, {s['parallel']} sequences in parallel chosen from free memory)"
            )
            return EXIT_OK
        out.print(f"[red]smoke test failed[/red]: {s.get('error') or s.get('status')}")
        return EngineLoadError.exit_code  # a build that cannot run the tiny model cannot run a real one

    code = run_action(debug, action)
    raise typer.Exit(code)


def schema(
    lang: LangOpt = "zh",
    channel: ChannelOpt = "generic",
    template: TemplateOpt = None,
    record: Annotated[bool, typer.Option("--record", help="The shape of a record's label instead.")] = False,
) -> None:
    """Print the JSON Schema the model's answer is constrained to (or, with --record, the record's label)."""

    def action() -> None:
        languages = parse_languages(lang)
        if record:
            document = record_label_schema(languages)
        else:
            config = load_config(template)
            document = answer_schema(languages, config, config.channel(channel))
        write_stdout(dumps(document, pretty=True) + b"\n")

    run_action(False, action)
