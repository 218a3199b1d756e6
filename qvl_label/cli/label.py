"""`describe` and `batch`: label images with the model, on stdout or into a JSONL file that resumes."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..entry import started_as_cli
from ..errors import UsageError, write_stdout
from ..labeling.config import load_config
from ..labeling.prompts import MAX_QUESTION_CHARS
from ..labeling.schema import parse_languages
from ..pipeline.batch import (
    RecordWriter,
    ResumeState,
    Summary,
    in_shard,
    is_product_done,
    is_uri,
    open_output,
    parse_shard,
    read_path_list,
    run_batch,
    scan_existing,
    walk_images,
)
from ..pipeline.labeler import Labeler
from ..pipeline.products import (
    GROUP_BY,
    MAX_PRODUCT_PHOTOS,
    MAX_PRODUCT_TOKENS,
    group_by_folder,
    group_by_pattern,
    one_product,
    read_groups,
)
from ..pipeline.records import OK, dumps
from ..settings import (
    DEFAULT_IMAGE_MAX_TOKENS,
    DEFAULT_IMAGE_MIN_TOKENS,
    DEFAULT_PRODUCT_MAX_PHOTOS,
    DEFAULT_PRODUCT_MAX_TOKENS,
    DEFAULT_SEED,
    GRAMMAR_ENGINES,
    EngineSettings,
    LabelSettings,
    ModelRef,
    ProductSettings,
    Settings,
)
from ..store.cache import DEFAULT_NEAR_DUP_DISTANCE
from ..store.outputs import inspect_output, refuse_same_file, repair_tail
from ..store.safe_files import OutputLock, refuse_link
from ._common import PresetOnNode, default_cache_path, model_store, near_dup_setting, open_cache, sqlite_files
from ._errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, err, run_action
from ._options import (
    ActorsOpt,
    CacheOpt,
    ChannelOpt,
    CpusPerActorOpt,
    CtxOpt,
    DebugOpt,
    GpuLayersOpt,
    GpusPerActorOpt,
    GrammarOpt,
    GroupByOpt,
    GroupPatternOpt,
    GroupsOpt,
    JumpForwardOpt,
    LangOpt,
    MaxErroredBlocksOpt,
    MaxOutOpt,
    MaxTokOpt,
    MinTokOpt,
    MmprojOpt,
    ModelOpt,
    NearDupDistanceOpt,
    NearDupOpt,
    NoCacheOpt,
    OfflineOpt,
    ParallelOpt,
    PresetOpt,
    ProductMaxPhotosOpt,
    ProductMaxTokensOpt,
    RayAddressOpt,
    RayBatchSizeOpt,
    RayOpt,
    SeedOpt,
    StrictOpt,
    TemplateOpt,
    TempOpt,
    ThreadsOpt,
)

if TYPE_CHECKING:
    from ..dist import ray_batch

MISSING_RAY_EXTRA = "--ray needs the ray extra: pip install 'qvl-label[ray]'"


def ray_module() -> ModuleType:
    """The Ray driver, imported only for --ray: Ray takes seconds to import and is an optional extra."""
    try:
        from ..dist import ray_batch
    except ImportError as exc:
        raise UsageError(f"{MISSING_RAY_EXTRA} ({exc.name} is not installed)") from None
    return ray_batch


def check_ray_options(
    actors: int, cpus_per_actor: float, gpus_per_actor: float, batch_size: int, max_errored_blocks: int
) -> None:
    if not 1 <= actors <= 4096:
        raise UsageError("--actors must be between 1 and 4096")
    if not (math.isfinite(cpus_per_actor) and 0 < cpus_per_actor <= 1024):
        raise UsageError("--cpus-per-actor must be more than 0 (fractions share a core) and at most 1024")
    if not (math.isfinite(gpus_per_actor) and 0 <= gpus_per_actor <= 64):
        raise UsageError("--gpus-per-actor must be between 0 (CPU only) and 64; fractions share a GPU")
    if not 1 <= batch_size <= 100_000:
        raise UsageError("--ray-batch-size must be between 1 and 100000")
    if max_errored_blocks < 0:
        raise UsageError("--max-errored-blocks cannot be negative")


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
    store = model_store(offline)
    chosen = store.lock.get(preset)
    paths = store.resolve(chosen, allow_download=True)
    return paths["model"], paths["mmproj"], store.model_ref(chosen)


# Bounds every engine option is checked against before the model loads (exit 2, one line).
MAX_THREADS = 4 * (os.cpu_count() or 1)
MAX_PARALLEL = 255  # llama.cpp holds at most 256 sequences, and one holds the shared instructions
MAX_IMAGE_TOKENS = 16384
MAX_OUTPUT_TOKENS = 65536
MAX_TEMPERATURE = 5.0
MAX_SEED = 2**32 - 1


def check_engine_options(
    *,
    threads: int,
    parallel: int,
    ctx: int,
    image_min_tokens: int,
    image_max_tokens: int,
    max_tokens: int,
    temperature: float,
    seed: int,
) -> None:
    """Usage errors for values llama.cpp would crash on, hang on or silently misread."""
    if not 0 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 0 (all cores) and {MAX_THREADS} (4 per core here)")
    if not 0 <= parallel <= MAX_PARALLEL:
        raise UsageError(f"--parallel must be between 0 (automatic) and {MAX_PARALLEL}")
    if not 1 <= image_min_tokens <= image_max_tokens <= MAX_IMAGE_TOKENS:
        raise UsageError(
            f"--image-min-tokens must be at least 1 and at most --image-max-tokens, itself at most {MAX_IMAGE_TOKENS}"
        )
    if not 0 <= max_tokens <= MAX_OUTPUT_TOKENS:
        raise UsageError(f"--max-tokens must be between 0 (derived from --lang) and {MAX_OUTPUT_TOKENS}")
    if ctx < 0:
        raise UsageError("--ctx cannot be negative (0 sizes the context from the settings)")
    if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
        raise UsageError(f"--temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}")
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED}")


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
    grammar: str,
    jump_forward: bool,
    debug: bool,
    product: ProductSettings | None = None,
) -> Settings:
    languages = parse_languages(lang)
    config = load_config(template)  # checked before the model loads: a bad file or channel is a usage error
    config.channel(channel)
    if image_min_tokens == DEFAULT_IMAGE_MIN_TOKENS:
        image_min_tokens = min(image_min_tokens, image_max_tokens)  # a small --image-max-tokens alone is enough
    check_engine_options(
        threads=threads, parallel=parallel, ctx=ctx, image_min_tokens=image_min_tokens,
        image_max_tokens=image_max_tokens, max_tokens=max_tokens, temperature=temperature, seed=seed,
    )  # fmt: skip
    if grammar not in GRAMMAR_ENGINES:
        raise UsageError(f"--grammar must be one of {', '.join(GRAMMAR_ENGINES)}")
    if question is not None and not 1 <= len(question.strip()) <= MAX_QUESTION_CHARS:
        raise UsageError(f"--prompt takes a question of 1 to {MAX_QUESTION_CHARS} characters")
    if preset is not None and not preset.strip():
        raise UsageError("--preset is empty; name a preset (see `qvl-label models list`) or leave the option out")
    if product is not None:
        if not 1 <= product.max_photos <= MAX_PRODUCT_PHOTOS:
            raise UsageError(f"--product-max-photos must be between 1 and {MAX_PRODUCT_PHOTOS}")
        if not image_min_tokens <= product.max_tokens <= MAX_PRODUCT_TOKENS:
            raise UsageError(
                f"--product-max-tokens must be between --image-min-tokens ({image_min_tokens}) and {MAX_PRODUCT_TOKENS}"
            )
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
            grammar_engine=grammar,
            jump_forward=jump_forward,
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
        product=product,
    )


# -- describe ---------------------------------------------------------------------------


def describe(
    images: Annotated[list[Path], typer.Argument(help="Image files to label.", show_default=False)],
    pretty: Annotated[bool, typer.Option("--pretty", help="Indented JSON for people.")] = False,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Ask a free-form question about each image instead.")
    ] = None,
    as_product: Annotated[
        bool, typer.Option("--as-product", help="The images are photos of one product: one record from all of them.")
    ] = False,
    product_max_tokens: ProductMaxTokensOpt = DEFAULT_PRODUCT_MAX_TOKENS,
    product_max_photos: ProductMaxPhotosOpt = DEFAULT_PRODUCT_MAX_PHOTOS,
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
    grammar: GrammarOpt = "auto",
    jump_forward: JumpForwardOpt = True,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Label images and print one JSON record per image on stdout."""

    def action() -> int:
        for path in images:
            if path.is_dir():
                raise UsageError(f"{path} is a directory; use `qvl-label batch {path} -o out.jsonl`")
            if not path.exists():
                raise UsageError(f"{path}: no such file")
        if not as_product and (
            product_max_tokens != DEFAULT_PRODUCT_MAX_TOKENS or product_max_photos != DEFAULT_PRODUCT_MAX_PHOTOS
        ):
            raise UsageError("--product-max-tokens and --product-max-photos are for products: add --as-product")
        settings = build_settings(
            preset=preset, model=model, mmproj=mmproj, offline=offline, lang=lang, channel=channel, strict=strict,
            template=template, question=prompt, gpu_layers=gpu_layers, ctx=ctx, threads=threads, parallel=parallel,
            image_min_tokens=image_min_tokens, image_max_tokens=image_max_tokens, max_tokens=max_tokens,
            temperature=temperature, seed=seed, grammar=grammar, jump_forward=jump_forward,
            debug=debug, product=ProductSettings(product_max_tokens, product_max_photos) if as_product else None,
        )  # fmt: skip
        failed = 0
        with Labeler(settings, cache=open_cache(cache, no_cache)) as labeler:
            paths = [str(p) for p in images]
            records = labeler.label_products([one_product(paths)]) if as_product else labeler.label(paths)
            for record in records:
                write_stdout(dumps(record, pretty=pretty) + b"\n")
                if record["status"] != OK:
                    failed += 1
                    err.print(f"[yellow]{record['path']}: {record['status']}: {record['error']}[/yellow]")
        return EXIT_SOME_FAILED if failed else EXIT_OK

    code = run_action(debug, action)
    raise typer.Exit(code)


# -- batch ------------------------------------------------------------------------------


def _warn(message: str) -> None:
    err.print(f"[yellow]{escape(message)}[/yellow]")


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
    """First Ctrl-C (or SIGTERM, SIGHUP): finish the record in hand and stop cleanly. Second: stop at once."""
    stop = threading.Event()
    numbers = [signal.SIGINT] + [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    # A signal the run was started with ignored (nohup, a background job) stays ignored.
    previous = {number: signal.getsignal(number) for number in numbers}
    watched = [number for number in numbers if previous[number] is not signal.SIG_IGN]

    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if not quiet:
            err.print("stopping after the current image (Ctrl-C again to stop at once)")

    for number in watched:
        signal.signal(number, handler)
    try:
        yield stop
    finally:
        for number in watched:
            signal.signal(number, previous[number])
        _pass_on(received, previous)


def _pass_on(received: list[int], previous: dict[int, Any]) -> None:
    """Tell a host program's own handlers (a test runner running the CLI in-process) of the signals the run took.

    Python's default SIGINT handler and the console script's own (qvl_label.entry) are left out: there the
    run's summary and exit code already say it. On the command line nothing is passed on: a library's handler
    installed during the run (Ray's driver exits on SIGTERM) must not replace the summary and exit 130.
    """
    if started_as_cli():
        return
    for number in dict.fromkeys(received):
        handler = previous.get(number)
        ours = getattr(handler, "__module__", "").startswith("qvl_label")
        if callable(handler) and handler is not signal.default_int_handler and not ours:
            handler(number, None)


def summary_document(summary: Summary, output: str, unit: str) -> dict[str, Any]:
    """The batch summary for scripts (`batch --json`): the same numbers the table shows."""
    return {
        "unit": unit,
        "output": output,
        "statuses": dict(sorted(summary.counts.items())),
        "labelled": summary.processed,
        "not_ok": summary.failed,
        "skipped": summary.skipped,
        "reused": summary.reused,
        "seconds": round(summary.elapsed(), 3),
        "interrupted": summary.interrupted,
    }


def _print_summary(summary: Summary, output: str, resume_hint: str, unit: str = "image") -> None:
    table = Table(title="qvl-label batch summary", show_header=True, header_style="bold")
    table.add_column("status")
    table.add_column(f"{unit}s", justify="right")
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
        f"{summary.processed} labelled in {elapsed:.1f}s ({per_image:.2f}s per {unit}), "
        f"{summary.failed} not ok; records in {output}"
    )
    if summary.interrupted:
        err.print(f"interrupted: the output is consistent; resume with: {resume_hint}")


def batch(
    output: Annotated[str, typer.Option("-o", "--output", help="JSONL file to append to, or - for stdout.")],
    source: Annotated[
        str | None,
        typer.Argument(help="Folder to walk recursively, or - to read paths from stdin (not needed with --groups)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Label again images already done in the output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="The summary as one JSON object on stdout (needs -o FILE).")
    ] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", help="I/N: label only the I-th of N disjoint parts (e.g. 1/4).")
    ] = None,
    near_dup: NearDupOpt = False,
    near_dup_distance: NearDupDistanceOpt = DEFAULT_NEAR_DUP_DISTANCE,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = 1,
    cpus_per_actor: CpusPerActorOpt = 1.0,
    gpus_per_actor: GpusPerActorOpt = 0.0,
    ray_batch_size: RayBatchSizeOpt = 16,
    max_errored_blocks: MaxErroredBlocksOpt = 0,
    group_by: GroupByOpt = None,
    group_pattern: GroupPatternOpt = None,
    groups: GroupsOpt = None,
    product_max_tokens: ProductMaxTokensOpt = DEFAULT_PRODUCT_MAX_TOKENS,
    product_max_photos: ProductMaxPhotosOpt = DEFAULT_PRODUCT_MAX_PHOTOS,
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
    grammar: GrammarOpt = "auto",
    jump_forward: JumpForwardOpt = True,
    debug: DebugOpt = False,
) -> None:
    """Label every image under a folder (or listed on stdin) into a JSONL file; re-running resumes."""
    on_ray = ray or ray_address is not None

    def action() -> int:
        if group_pattern is not None and group_by not in (None, "pattern"):
            raise UsageError("--group-pattern goes with --group-by pattern")
        if group_pattern is not None:
            group_by_pattern([], group_pattern)  # a bad or too costly pattern, before any model loads
        grouping = "pattern" if group_pattern is not None and group_by is None else group_by
        if grouping is not None and grouping not in GROUP_BY:
            raise UsageError(f"--group-by must be one of {', '.join(GROUP_BY)}")
        if groups is not None and grouping is not None:
            raise UsageError("--groups names the products itself; leave --group-by and --group-pattern out")
        as_products = grouping is not None or groups is not None
        if not as_products and (
            product_max_tokens != DEFAULT_PRODUCT_MAX_TOKENS or product_max_photos != DEFAULT_PRODUCT_MAX_PHOTOS
        ):
            raise UsageError(
                "--product-max-tokens and --product-max-photos apply to products: add --group-by or --groups"
            )
        if as_products and on_ray:
            raise UsageError("products (--group-by, --groups) are labelled on this machine; leave --ray out")
        if as_json and output == "-":
            raise UsageError("--json prints the summary on stdout, where -o - writes the records: give -o FILE")
        if source is None and groups is None:
            raise UsageError("name a folder to label, - to read paths from stdin, or --groups FILE")
        if source is not None and groups is not None:
            raise UsageError("--groups lists the photos itself; leave the folder out")
        remote = source is not None and is_uri(source)
        if remote and not on_ray:
            raise UsageError(f"{source}: URIs are read by Ray's readers; add --ray")
        if source is not None and source != "-" and not remote and not Path(source).exists():
            raise UsageError(f"{source}: no such file or folder")
        products = read_groups(groups) if groups is not None else None
        dist = None
        if on_ray:
            check_ray_options(actors, cpus_per_actor, gpus_per_actor, ray_batch_size, max_errored_blocks)
            cores = os.cpu_count() or 1
            if ray_address is None and actors * cpus_per_actor > cores:  # a local cluster is this machine
                raise UsageError(
                    f"--actors {actors} x --cpus-per-actor {cpus_per_actor:g} need {actors * cpus_per_actor:g} CPUs; "
                    f"this machine has {cores} (a local Ray cluster); give fewer actors, or --ray-address"
                )
            if threads:
                raise UsageError("with --ray, each actor's threads are its --cpus-per-actor; leave --threads out")
            dist = ray_module()  # before anything is opened or loaded: a missing extra costs nothing
        else:
            ray_only = {
                "--actors": actors != 1, "--cpus-per-actor": cpus_per_actor != 1.0,
                "--gpus-per-actor": gpus_per_actor != 0.0, "--ray-batch-size": ray_batch_size != 16,
                "--max-errored-blocks": max_errored_blocks != 0,
            }  # fmt: skip
            given = [name for name, changed in ray_only.items() if changed]
            if given:
                raise UsageError(f"{', '.join(given)} only apply to Ray runs; add --ray or --ray-address")
        shard_index, shard_count = parse_shard(shard) if shard is not None else (1, 1)
        distance = near_dup_setting(near_dup, near_dup_distance)
        settings = build_settings(
            preset=preset, model=model, mmproj=mmproj, offline=offline, lang=lang, channel=channel, strict=strict,
            template=template, question=None, gpu_layers=gpu_layers, ctx=ctx, threads=threads, parallel=parallel,
            image_min_tokens=image_min_tokens, image_max_tokens=image_max_tokens, max_tokens=max_tokens,
            temperature=temperature, seed=seed, grammar=grammar, jump_forward=jump_forward,
            debug=debug, product=ProductSettings(product_max_tokens, product_max_photos) if as_products else None,
        )  # fmt: skip
        # Checked and opened before the model loads: an output that is not ours, or that is
        # one of the inputs, is refused untouched, and an unwritable one costs no model load.
        if output != "-":
            cache_path = None if no_cache else (cache or default_cache_path())
            others = [p for p in (template, settings.engine.model_path, settings.engine.mmproj_path) if p]
            others += sqlite_files(cache_path)
            if source is not None and source != "-" and not remote:
                others.append(Path(source))
            if groups is not None:
                others.append(groups)
            refuse_link(output, "the output")
            refuse_same_file(output, others, "the output")
        stream, owned = open_output(output, append=True)
        # Held until the run ends: a second run on this output is refused (exit 2), not interleaved.
        lock = OutputLock(stream, Path(output)) if owned else None
        try:
            if owned:
                tail = inspect_output(Path(output))
                repair_tail(Path(output), tail)
                if tail.cut_bytes:  # said even with --quiet: bytes were removed from the user's file
                    err.print(
                        f"repaired a torn last line in {output} ({tail.cut_bytes} bytes of an unfinished record cut)"
                    )
            label_cache = open_cache(cache, no_cache)
            labeler: Labeler | ray_batch.RayBatch
            if dist is not None:
                ray_options = dist.RayOptions(
                    address=ray_address, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                    batch_size=ray_batch_size, max_errored_blocks=max_errored_blocks, debug=debug,
                )  # fmt: skip
                # A preset is resolved again on each node, in its own cache; local files must be on a shared path.
                node_files = PresetOnNode(preset, offline) if settings.model_ref and settings.model_ref.preset else None
                labeler = dist.RayBatch(settings, ray_options, label_cache, distance, node_files, log=_warn)
            else:
                labeler = Labeler(settings, cache=label_cache, near_dup_distance=distance)
        except BaseException:
            if lock is not None:
                lock.release()
            if owned:
                stream.close()
            raise
        with labeler:
            product_job = labeler.product_job if isinstance(labeler, Labeler) else None
            fingerprint = product_job.run.fingerprint if product_job is not None else labeler.run.fingerprint
            resume = scan_existing(Path(output), fingerprint, force) if output != "-" else ResumeState()
            if resume.skipped_lines:
                err.print(f"[yellow]skipped {resume.skipped_lines} lines of {output} that are not records[/yellow]")
            if resume.done and not quiet and not as_products:
                err.print(f"resuming: {len(resume.done)} images already done in {output}")
            if resume.products and not quiet and as_products:
                err.print(f"resuming: {len(resume.products)} products already done in {output}")
            root = None if source in (None, "-") else source
            paths: Iterable[str] = ()
            if groups is not None:
                pass  # the products are listed in the --groups file
            elif root is None:
                paths = read_path_list(sys.stdin.buffer)
            elif remote:
                assert dist is not None  # a URI without --ray was refused above
                paths = dist.list_uri(root)
            else:
                paths = walk_images(Path(root))
            if as_products and products is None:  # every photo first: a product's photos may be anywhere in the walk
                listed = list(paths)
                products = group_by_folder(listed) if grouping == "folder" else group_by_pattern(listed, group_pattern)
            if products is not None and shard_count > 1:  # a product stays whole: shards split by product key
                products = [p for p in products if in_shard(p.key, None, shard_index, shard_count)]
            elif shard_count > 1:
                paths = (p for p in paths if in_shard(p, root, shard_index, shard_count))
            show_progress = not quiet and err.is_terminal
            total = None
            if show_progress and products is not None:
                total = len(products)
            elif show_progress and root is not None and not remote:
                total = sum(1 for p in walk_images(Path(root)) if in_shard(p, root, shard_index, shard_count))
            summary = Summary()
            try:
                writer = RecordWriter(stream, output)
                with _progress(show_progress, total) as on_record, _graceful_interrupt(quiet) as stop:
                    if products is not None:
                        assert isinstance(labeler, Labeler)  # products with --ray were refused above
                        run_batch(labeler.label_products, products, writer, resume, summary, on_record, stop.is_set,
                                  done=is_product_done)  # fmt: skip
                    else:
                        run_batch(labeler.label, paths, writer, resume, summary, on_record, stop.is_set)
            finally:
                if lock is not None:
                    lock.release()
                if owned:
                    stream.close()
        unit = "product" if as_products else "image"
        if as_json:
            write_stdout(dumps(summary_document(summary, output, unit)) + b"\n")
        elif not quiet:
            _print_summary(summary, output, " ".join(["qvl-label", *sys.argv[1:]]), unit)
            if hasattr(getattr(labeler, "engine", None), "run_summary"):  # the local engine (not --ray)
                err.print(labeler.engine.run_summary(debug))  # type: ignore[union-attr]
        if summary.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if summary.failed else EXIT_OK

    code = run_action(debug, action)
    raise typer.Exit(code)
