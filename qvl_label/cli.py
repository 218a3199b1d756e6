"""The command line: resolves settings from flags and environment, runs the core, maps errors to exit codes."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .batch import (
    RecordWriter,
    ResumeState,
    Summary,
    in_shard,
    open_output,
    parse_shard,
    read_path_list,
    run_batch,
    scan_existing,
    walk_images,
)
from .cache import DEFAULT_NEAR_DUP_DISTANCE, LabelCache
from .catalog import load_config
from .errors import OutputError, QvlError, UsageError
from .export import export_csv, merge
from .labeler import Labeler
from .models import ModelStore, load_lock
from .records import OK, dumps
from .schema import LANGUAGES, answer_schema, record_label_schema
from .settings import (
    DEFAULT_IMAGE_MAX_TOKENS,
    DEFAULT_IMAGE_MIN_TOKENS,
    DEFAULT_SEED,
    EngineSettings,
    LabelSettings,
    ModelRef,
    Settings,
)

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

app = typer.Typer(
    help="Label e-commerce product photos with a local Qwen3-VL model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Pinned model presets: list, download, locate.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def state_dir() -> Path:
    """Where qvl-label keeps its own state (verification ledger); QVL_LABEL_HOME overrides."""
    if os.environ.get("QVL_LABEL_HOME"):
        return Path(os.environ["QVL_LABEL_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qvl-label"


def _store(offline: bool) -> ModelStore:
    hf_cache = os.environ.get("QVL_LABEL_HF_CACHE")
    return ModelStore(
        load_lock(),
        state_dir(),
        hf_cache_dir=Path(hf_cache) if hf_cache else None,
        offline=offline or _env_flag("HF_HUB_OFFLINE"),
        log=lambda msg: err.print(f"[dim]{msg}[/dim]"),
    )


def _run(debug: bool, action: Callable[[], T]) -> T:
    """The one place run-level errors become a message and an exit code."""
    try:
        return action()
    except QvlError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/bold red] {exc}")
        if exc.hint:
            err.print(f"[dim]hint: {exc.hint}[/dim]")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        else:
            err.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {exc}")
            err.print("[dim]hint: run again with --debug for the traceback[/dim]")
        raise typer.Exit(EXIT_INTERNAL) from None


# -- shared options ---------------------------------------------------------------------

PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="Model preset from models.lock (default: the lock's default).")
]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="A local GGUF model file (use with --mmproj).")]
MmprojOpt = Annotated[Path | None, typer.Option("--mmproj", help="A local mmproj GGUF vision file (use with --model).")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download; use the cache (also HF_HUB_OFFLINE=1).")]
LangOpt = Annotated[str, typer.Option("--lang", help="Comma-separated languages for the listing copy, e.g. zh,en,ja.")]
GpuLayersOpt = Annotated[int, typer.Option("--gpu-layers", help="Layers to offload to the GPU; -1 = all.")]
CtxOpt = Annotated[int, typer.Option("--ctx", help="Context size in tokens; 0 = sized from the settings.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="CPU threads; 0 = all cores.")]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", help="Images decoded together in one context; 0 = automatic (memory, build).")
]
MinTokOpt = Annotated[int, typer.Option("--image-min-tokens", help="Fewest tokens an image is encoded into.")]
MaxTokOpt = Annotated[
    int, typer.Option("--image-max-tokens", help="Most tokens an image is encoded into (32x32 px each).")
]
MaxOutOpt = Annotated[int, typer.Option("--max-tokens", help="Output token limit per image; 0 = derived from --lang.")]
TempOpt = Annotated[float, typer.Option("--temperature", help="0 = greedy (deterministic).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Sampling seed when --temperature > 0.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and llama.cpp's log.")]
ChannelOpt = Annotated[
    str, typer.Option("--channel", help="Copy style: generic, taobao, jd, xiaohongshu, amazon, shopify.")
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Rewrite or drop flagged wording before output.")]
TemplateOpt = Annotated[
    Path | None, typer.Option("--template", help="TOML file adding or overriding templates, vocabularies, rules.")
]
CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="Label cache database (default: cache.sqlite in the state folder).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the persistent label cache.")]


def default_cache_path() -> Path:
    return state_dir() / "cache.sqlite"


def _open_cache(path: Path | None, disabled: bool) -> LabelCache:
    if disabled:
        return LabelCache(None)
    target = path or default_cache_path()
    try:
        return LabelCache(target)
    except (OSError, sqlite3.Error) as exc:
        raise OutputError(
            f"cannot open the label cache {target}: {exc}", hint="use --cache PATH or --no-cache"
        ) from exc


def parse_languages(value: str) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(code.strip() for code in value.split(",") if code.strip()))
    if not codes:
        raise UsageError("--lang needs at least one language code")
    unknown = [c for c in codes if c not in LANGUAGES]
    if unknown:
        raise UsageError(f"unknown language code(s) {', '.join(unknown)}; supported: {', '.join(LANGUAGES)}")
    return codes


def resolve_model(
    preset: str | None, model: Path | None, mmproj: Path | None, offline: bool
) -> tuple[Path, Path, ModelRef]:
    if (model is None) != (mmproj is None):
        raise UsageError("--model and --mmproj go together: give both files, or neither to use a preset")
    if model is not None and mmproj is not None:
        if preset:
            raise UsageError("give either --preset or --model/--mmproj, not both")
        for flag, path in (("--model", model), ("--mmproj", mmproj)):
            if not path.is_file():
                raise UsageError(f"{flag} {path}: no such file")
        ref = ModelRef(preset=None, repo=None, revision=None, model_file=model.name, mmproj_file=mmproj.name)
        return model, mmproj, ref
    store = _store(offline)
    chosen = store.lock.get(preset)
    paths = store.resolve(chosen, allow_download=True)
    return paths["model"], paths["mmproj"], store.model_ref(chosen)


def build_settings(
    *,
    preset: str | None,
    model: Path | None,
    mmproj: Path | None,
    offline: bool,
    lang: str,
    channel: str,
    strict: bool,
    template: Path | None,
    question: str | None,
    gpu_layers: int,
    ctx: int,
    threads: int,
    parallel: int,
    image_min_tokens: int,
    image_max_tokens: int,
    max_tokens: int,
    temperature: float,
    seed: int,
    debug: bool,
) -> Settings:
    languages = parse_languages(lang)
    config = load_config(template)  # checked before the model loads: a bad file or channel is a usage error
    config.channel(channel)
    if image_min_tokens == DEFAULT_IMAGE_MIN_TOKENS:
        image_min_tokens = min(image_min_tokens, image_max_tokens)  # a small --image-max-tokens alone is enough
    if parallel < 0:
        raise UsageError("--parallel must be 0 (automatic) or more")
    if not 1 <= image_min_tokens <= image_max_tokens:
        raise UsageError("--image-min-tokens must be at least 1 and at most --image-max-tokens")
    if max_tokens < 0 or ctx < 0:
        raise UsageError("--max-tokens and --ctx cannot be negative")
    model_path, mmproj_path, ref = resolve_model(preset, model, mmproj, offline)
    return Settings(
        engine=EngineSettings(
            model_path=model_path,
            mmproj_path=mmproj_path,
            n_ctx=ctx,
            n_gpu_layers=gpu_layers,
            threads=threads,
            n_parallel=parallel,
            image_min_tokens=image_min_tokens,
            image_max_tokens=image_max_tokens,
            temperature=temperature,
            seed=seed,
            verbose=debug,
        ),
        label=LabelSettings(
            languages=languages,
            question=question,
            max_tokens=max_tokens,
            channel=channel,
            strict=strict,
            template_file=template,
        ),
        model_ref=ref,
    )


_SHARED_OPTIONS = (
    "preset", "model", "mmproj", "offline", "lang", "channel", "strict", "template", "gpu_layers", "ctx", "threads",
    "parallel", "image_min_tokens", "image_max_tokens", "max_tokens", "temperature", "seed", "debug",
)  # fmt: skip


def _shared_options(values: dict[str, Any]) -> dict[str, Any]:
    """The model and engine options describe and batch both take, by name."""
    return {name: values[name] for name in _SHARED_OPTIONS}


# -- describe ---------------------------------------------------------------------------


@app.command()
def describe(
    images: Annotated[list[Path], typer.Argument(help="Image files to label.", show_default=False)],
    pretty: Annotated[bool, typer.Option("--pretty", help="Indented JSON for people.")] = False,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Ask a free-form question about each image instead.")
    ] = None,
    lang: LangOpt = "zh",
    channel: ChannelOpt = "generic",
    strict: StrictOpt = False,
    template: TemplateOpt = None,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    offline: OfflineOpt = False,
    gpu_layers: GpuLayersOpt = -1,
    ctx: CtxOpt = 0,
    threads: ThreadsOpt = 0,
    parallel: ParallelOpt = 0,
    image_min_tokens: MinTokOpt = DEFAULT_IMAGE_MIN_TOKENS,
    image_max_tokens: MaxTokOpt = DEFAULT_IMAGE_MAX_TOKENS,
    max_tokens: MaxOutOpt = 0,
    temperature: TempOpt = 0.0,
    seed: SeedOpt = DEFAULT_SEED,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Label images and print one JSON record per image on stdout."""
    shared = _shared_options(locals())

    def action() -> int:
        for path in images:
            if path.is_dir():
                raise UsageError(f"{path} is a directory; use `qvl-label batch {path} -o out.jsonl`")
            if not path.exists():
                raise UsageError(f"{path}: no such file")
        settings = build_settings(question=prompt, **shared)
        failed = 0
        with Labeler(settings, cache=_open_cache(cache, no_cache)) as labeler:
            for record in labeler.label([str(p) for p in images]):
                sys.stdout.buffer.write(dumps(record, pretty=pretty) + b"\n")
                sys.stdout.buffer.flush()
                if record["status"] != OK:
                    failed += 1
                    err.print(f"[yellow]{record['path']}: {record['status']}: {record['error']}[/yellow]")
        return EXIT_SOME_FAILED if failed else EXIT_OK

    code = _run(debug, action)
    raise typer.Exit(code)


# -- batch ------------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool, total: int | None) -> Iterator[Callable[[dict[str, Any], Summary], None]]:
    if not enabled:
        yield lambda _r, _s: None
        return
    columns = [
        TextColumn("[bold]labelling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("label", total=total, rate="-", failed=0)

        def update(_record: dict[str, Any], summary: Summary) -> None:
            elapsed = summary.elapsed()
            rate = f"{summary.processed / elapsed:.2f}" if elapsed > 0 else "-"
            progress.update(task, completed=summary.processed + summary.skipped, rate=rate, failed=summary.failed)

        yield update


@contextmanager
def _graceful_interrupt(quiet: bool) -> Iterator[threading.Event]:
    """First Ctrl-C: finish the record in hand and stop cleanly. Second: stop at once."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # started with SIGINT ignored (nohup, background job): keep it so
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if not quiet:
            err.print("stopping after the current image (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_summary(summary: Summary, output: str, resume_hint: str) -> None:
    table = Table(title="qvl-label batch summary", show_header=True, header_style="bold")
    table.add_column("status")
    table.add_column("images", justify="right")
    for status, count in sorted(summary.counts.items(), key=lambda kv: (kv[0] != OK, kv[0])):
        table.add_row(status, str(count))
    if summary.skipped:
        table.add_row("already done (skipped)", str(summary.skipped))
    if summary.reused:
        table.add_row("of which reused from a duplicate", str(summary.reused))
    err.print(table)
    elapsed = summary.elapsed()
    per_image = elapsed / summary.processed if summary.processed else 0.0
    err.print(
        f"{summary.processed} labelled in {elapsed:.1f}s ({per_image:.2f}s per image), "
        f"{summary.failed} not ok; records in {output}"
    )
    if summary.interrupted:
        err.print(f"interrupted: the output is consistent; resume with: {resume_hint}")


@app.command()
def batch(
    source: Annotated[str, typer.Argument(help="Folder to walk recursively, or - to read paths from stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="JSONL file to append to, or - for stdout.")],
    force: Annotated[bool, typer.Option("--force", help="Label again images already done in the output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", help="I/N: label only the I-th of N disjoint parts (e.g. 1/4).")
    ] = None,
    near_dup: Annotated[
        bool, typer.Option("--near-dup", help="Reuse labels of near-identical photos (re-encoded, resized, cropped).")
    ] = False,
    near_dup_distance: Annotated[
        int, typer.Option("--near-dup-distance", help="Max perceptual-hash distance (of 64 bits) for --near-dup.")
    ] = DEFAULT_NEAR_DUP_DISTANCE,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    lang: LangOpt = "zh",
    channel: ChannelOpt = "generic",
    strict: StrictOpt = False,
    template: TemplateOpt = None,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    offline: OfflineOpt = False,
    gpu_layers: GpuLayersOpt = -1,
    ctx: CtxOpt = 0,
    threads: ThreadsOpt = 0,
    parallel: ParallelOpt = 0,
    image_min_tokens: MinTokOpt = DEFAULT_IMAGE_MIN_TOKENS,
    image_max_tokens: MaxTokOpt = DEFAULT_IMAGE_MAX_TOKENS,
    max_tokens: MaxOutOpt = 0,
    temperature: TempOpt = 0.0,
    seed: SeedOpt = DEFAULT_SEED,
    debug: DebugOpt = False,
) -> None:
    """Label every image under a folder (or listed on stdin) into a JSONL file; re-running resumes."""
    shared = _shared_options(locals())

    def action() -> int:
        if source != "-" and not Path(source).exists():
            raise UsageError(f"{source}: no such file or folder")
        shard_index, shard_count = parse_shard(shard) if shard else (1, 1)
        settings = build_settings(question=None, **shared)
        # Opened before the model loads: an unwritable output costs no model load (append mode
        # changes nothing in an existing file).
        stream, owned = open_output(output, append=True)
        try:
            label_cache = _open_cache(cache, no_cache)
            distance = near_dup_distance if near_dup else None
            labeler = Labeler(settings, cache=label_cache, near_dup_distance=distance)
        except BaseException:
            if owned:
                stream.close()
            raise
        with labeler:
            resume = scan_existing(Path(output), labeler.run.fingerprint, force) if output != "-" else ResumeState()
            if resume.repaired_bytes and not quiet:
                err.print(f"repaired a torn last line in {output} ({resume.repaired_bytes} bytes dropped)")
            if resume.done and not quiet:
                err.print(f"resuming: {len(resume.done)} images already done in {output}")
            root = None if source == "-" else source
            paths: Iterable[str] = read_path_list(sys.stdin) if root is None else walk_images(Path(root))
            if shard_count > 1:
                paths = (p for p in paths if in_shard(p, root, shard_index, shard_count))
            show_progress = not quiet and err.is_terminal
            total = None
            if show_progress and root is not None:
                total = sum(1 for p in walk_images(Path(root)) if in_shard(p, root, shard_index, shard_count))
            summary = Summary()
            try:
                writer = RecordWriter(stream, output)
                with _progress(show_progress, total) as on_record, _graceful_interrupt(quiet) as stop:
                    run_batch(labeler.label, paths, writer, resume, summary, on_record, stop.is_set)
            finally:
                if owned:
                    stream.close()
        if not quiet:
            _print_summary(summary, output, " ".join(["qvl-label", *sys.argv[1:]]))
        if summary.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if summary.failed else EXIT_OK

    code = _run(debug, action)
    raise typer.Exit(code)


# -- cache, export, merge ----------------------------------------------------------------

cache_app = typer.Typer(help="The persistent label cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(cache: CacheOpt = None) -> None:
    """Where the cache is, how many labels it holds and its size on disk."""

    def action() -> None:
        label_cache = _open_cache(cache, False)
        try:
            stats = label_cache.stats()
        finally:
            label_cache.close()
        print(f"path\t{stats.path}")
        print(f"labels\t{stats.entries}")
        print(f"runs\t{stats.fingerprints}")
        print(f"bytes\t{stats.size_bytes}")

    _run(False, action)


@cache_app.command("clear")
def cache_clear(cache: CacheOpt = None) -> None:
    """Delete every cached label."""

    def action() -> None:
        label_cache = _open_cache(cache, False)
        try:
            removed = label_cache.clear()
        finally:
            label_cache.close()
        err.print(f"removed {removed} cached labels from {label_cache.path}")

    _run(False, action)


@app.command()
def export(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL outputs of batch (several shards allowed).")],
    csv_path: Annotated[Path, typer.Option("--csv", help="CSV file to write (UTF-8 with BOM, for Excel).")],
) -> None:
    """Flatten records to CSV: one row per image, one column per attribute and per language."""

    def action() -> None:
        selection = export_csv(inputs, csv_path)
        err.print(f"{len(selection.chosen)} images written to {csv_path} ({selection.records} records read)")
        if selection.torn_lines:
            err.print(f"[yellow]skipped {selection.torn_lines} unreadable lines[/yellow]")

    _run(False, action)


@app.command("merge")
def merge_command(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL outputs to merge, e.g. the shards of one run.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Merged JSONL file, or - for stdout.")],
) -> None:
    """Merge outputs into one record per image (an ok record wins over a failure, a later one over an earlier)."""

    def action() -> None:
        if output != "-" and Path(output).resolve() in {p.resolve() for p in inputs}:
            raise UsageError("the merged output must not be one of the inputs")
        stream, owned = open_output(output, append=False)
        try:
            selection = merge(inputs, stream)
        finally:
            if owned:
                stream.close()
        err.print(f"{len(selection.chosen)} images from {selection.records} records in {len(inputs)} files")

    _run(False, action)


# -- models -----------------------------------------------------------------------------


@models_app.command("list")
def models_list(offline: OfflineOpt = False) -> None:
    """Show presets, whether they are downloaded and verified, sizes and paths."""

    def action() -> None:
        store = _store(offline)
        table = Table(show_header=True, header_style="bold")
        for col in ("preset", "state", "size", "files"):
            table.add_column(col)
        for name, preset in store.lock.presets.items():
            states = store.state(preset)
            if all(s.verified for s in states):
                state = "[green]verified[/green]"
            elif all(s.path for s in states):
                state = "[yellow]present, not verified[/yellow]"
            elif any(s.path for s in states):
                state = "[yellow]partial[/yellow]"
            else:
                state = "not downloaded"
            size = f"{sum(s.pinned.size for s in states) / 1e9:.2f} GB"
            files = "\n".join(str(s.path) if s.path else s.pinned.file for s in states)
            label = f"{name}{' (default)' if name == store.lock.default else ''}"
            table.add_row(label, state, size, files)
        Console(highlight=False).print(table)

    _run(False, action)


@models_app.command("pull")
def models_pull(
    preset: Annotated[str | None, typer.Argument(help="Preset to download (default: the lock's default).")] = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Download a preset at its pinned revision (resumes), then verify size and sha256."""

    def action() -> None:
        store = _store(offline)
        chosen = store.lock.get(preset)
        paths = store.pull(chosen)
        err.print(f"[green]{chosen.name} verified[/green]")
        for role, path in paths.items():
            print(f"{role}\t{path}")

    _run(debug, action)


@models_app.command("path")
def models_path(
    preset: Annotated[str | None, typer.Argument(help="Preset name (default: the lock's default).")] = None,
) -> None:
    """Print `model<TAB>path` and `mmproj<TAB>path` of a downloaded preset, for scripts."""

    def action() -> None:
        store = _store(offline=True)
        chosen = store.lock.get(preset)
        for state in store.state(chosen):
            if state.path is None:
                raise store._missing(chosen, state.pinned)
            print(f"{state.role}\t{state.path}")

    _run(False, action)


@models_app.command("make-random")
def models_make_random(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the two GGUF files into.")],
    shape: Annotated[
        str, typer.Option("--shape", help="tiny (a few MB), 2b or 8b (real Qwen3-VL shapes, GBs).")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Weights seed.")] = 0,
) -> None:
    """Write a random-weight Qwen3-VL model + mmproj (real architecture) for tests and benchmarks."""
    from . import tinymodel

    def action() -> None:
        if shape not in tinymodel.SHAPES:
            raise UsageError(f"unknown shape {shape!r}; choose from {', '.join(tinymodel.SHAPES)}")
        made = tinymodel.generate(out_dir, shape, seed)
        print(f"model\t{made.model}")
        print(f"mmproj\t{made.mmproj}")

    _run(False, action)


# -- doctor, schema -----------------------------------------------------------------------


@app.command()
def doctor(
    gpu_layers: GpuLayersOpt = -1,
    threads: ThreadsOpt = 0,
    debug: DebugOpt = False,
) -> None:
    """Check the llama.cpp build, GPU offload, model cache, and run a real inference on a tiny model."""
    from .doctor import run_doctor

    def action() -> int:
        store = _store(offline=True)
        probe = EngineSettings(
            model_path=Path(), mmproj_path=Path(), n_gpu_layers=gpu_layers, threads=threads, verbose=debug
        )
        report = run_doctor(store, probe)
        out = Console(highlight=False)
        b = report.backend
        out.print(f"qvl-label         {__version__}")
        out.print(f"llama-cpp-python  {b['llama_cpp_python']}")
        offload = "[green]yes[/green]" if b["gpu_offload"] else "[yellow]no (CPU-only build)[/yellow]"
        out.print(f"GPU offload       {offload}")
        out.print(f"devices           {', '.join(b['devices']) or 'none reported'}")
        out.print(f"state directory   {state_dir()}")
        for p in report.presets:
            mark = "verified" if p["verified"] else ("present" if p["present"] else "not downloaded")
            default = " (default)" if p["default"] else ""
            out.print(f"model {p['name']}{default}: {mark}, {p['size_gb']} GB")
        s = report.smoke
        if s.get("ok"):
            out.print(
                f"[green]smoke test passed[/green]: tiny Qwen3-VL loaded in llama.cpp, image encoded into "
                f"{s['image_tokens']} tokens, {s['completion_tokens']} grammar-constrained tokens generated "
                f"({s['seconds']}s, {s['threads']} threads, {s['n_gpu_layers']} GPU layers)"
            )
            return EXIT_OK
        out.print(f"[red]smoke test failed[/red]: {s.get('error') or s.get('status')}")
        return EXIT_INTERNAL

    code = _run(debug, action)
    raise typer.Exit(code)


@app.command()
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
        sys.stdout.buffer.write(dumps(document, pretty=True) + b"\n")

    _run(False, action)


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
    app()
