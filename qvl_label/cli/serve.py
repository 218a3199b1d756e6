"""`serve`: the HTTP API and page over one loaded model (needs the `serve` extra)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..pipeline.labeler import Labeler
from ..settings import (
    DEFAULT_IMAGE_MAX_TOKENS,
    DEFAULT_IMAGE_MIN_TOKENS,
    DEFAULT_PRODUCT_MAX_PHOTOS,
    DEFAULT_PRODUCT_MAX_TOKENS,
    DEFAULT_SEED,
    ProductSettings,
)
from ..store.cache import DEFAULT_NEAR_DUP_DISTANCE
from ._common import default_cache_path, near_dup_setting, open_cache, sqlite_files
from ._errors import EXIT_OK, err, run_action
from ._options import (
    CacheOpt,
    ChannelOpt,
    CtxOpt,
    DebugOpt,
    GpuLayersOpt,
    GrammarOpt,
    JumpForwardOpt,
    LangOpt,
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
    SeedOpt,
    StrictOpt,
    TemplateOpt,
    TempOpt,
    ThreadsOpt,
)
from .label import build_settings

API_KEY_ENV = "QVL_LABEL_API_KEY"
# (lowest, highest) each number option accepts; the lowest is excluded where zero makes no sense.
BOUNDS: dict[str, tuple[float, float, bool]] = {  # name: (low, high, low allowed)
    "--max-body-mb": (0, 4096, False),
    "--max-read-mb": (0, 65536, False),
    "--request-timeout": (0, 86400, False),
    "--grace": (0, 3600, True),
    "--header-timeout": (0, 600, False),
    "--body-timeout": (0, 3600, False),
    "--keep-alive": (0, 600, False),
}
MISSING_EXTRA = "the server needs the serve extra: pip install 'qvl-label[serve]'"


def serve(
    host: Annotated[
        str,
        typer.Option("--host", envvar="QVL_LABEL_HOST", show_envvar=True, help="Address to listen on (loopback)."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", envvar="QVL_LABEL_PORT", show_envvar=True, help="TCP port (0: any free port, printed at start)."
        ),
    ] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            envvar=API_KEY_ENV,
            show_envvar=True,
            help="Key clients must send (Bearer or X-Api-Key); repeatable (the variable: keys separated by spaces).",
        ),
    ] = None,
    insecure_no_key: Annotated[
        bool, typer.Option("--insecure-no-key", help="Allow a non-loopback --host without an API key.")
    ] = False,
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="Append one JSON line per request to this file.")
    ] = None,
    allow_dir: Annotated[
        Path | None, typer.Option("--allow-dir", help="Let requests name image files under this folder (paths).")
    ] = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body, in MB.")] = 20.0,
    max_images: Annotated[int, typer.Option("--max-images", help="Most images in one request.")] = 16,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Most images admitted and unanswered; beyond it, 429.")
    ] = 64,
    max_chat_tokens: Annotated[
        int, typer.Option("--max-chat-tokens", help="Ceiling of max_tokens in /v1/chat/completions.")
    ] = 2048,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="Seconds before a request is cancelled (504).")
    ] = 300.0,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.")
    ] = 30.0,
    max_read_mb: Annotated[
        float, typer.Option("--max-read-mb", help="Most MB of --allow-dir files one request may have read.")
    ] = 256.0,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", help="Seconds a connection has to send a request's headers.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Longest silence, in seconds, while a request body arrives.")
    ] = 30.0,
    keep_alive: Annotated[
        float, typer.Option("--keep-alive", help="Seconds an idle kept-alive connection stays open.")
    ] = 5.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Open connections in all; beyond it 503.")
    ] = 1024,
    max_connections_per_client: Annotated[
        int, typer.Option("--max-connections-per-client", help="Open connections from one address; beyond it 429.")
    ] = 32,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host", help="Another Host name requests may use (NAME or NAME:PORT; '*': any); repeatable."
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="A web origin allowed to call the API from a browser; repeatable."),
    ] = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    near_dup: NearDupOpt = False,
    near_dup_distance: NearDupDistanceOpt = DEFAULT_NEAR_DUP_DISTANCE,
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
    product_max_tokens: ProductMaxTokensOpt = DEFAULT_PRODUCT_MAX_TOKENS,
    product_max_photos: ProductMaxPhotosOpt = DEFAULT_PRODUCT_MAX_PHOTOS,
    debug: DebugOpt = False,
) -> None:
    """Serve labels over HTTP: POST /v1/label, /v1/chat/completions, /metrics, and a page at /."""

    def action() -> int:
        try:
            from ..serve.access import Access
            from ..serve.audit import AuditLog
            from ..serve.connections import ConnectionLimits
            from ..serve.runner import bind, is_loopback
            from ..serve.runner import serve as run_server
            from ..serve.service import LabelService, ServeLimits
        except ImportError as exc:
            raise UsageError(f"{MISSING_EXTRA} ({exc.name} is not installed)") from None
        keys = [k.strip() for k in (api_key or []) if k.strip()]
        if not is_loopback(host) and not keys and not insecure_no_key:
            raise UsageError(
                f"--host {host} is reachable from other machines; give --api-key (or ${API_KEY_ENV}), "
                "or --insecure-no-key to serve without one"
            )
        if not 0 <= port <= 65535:
            raise UsageError("--port must be between 0 and 65535")
        if allow_dir is not None and not allow_dir.is_dir():
            raise UsageError(f"--allow-dir {allow_dir}: not a folder")
        for name, value in (
            ("--max-images", max_images),
            ("--max-queue", max_queue),
            ("--max-chat-tokens", max_chat_tokens),
            ("--max-connections", max_connections),
            ("--max-connections-per-client", max_connections_per_client),
        ):
            if value < 1:
                raise UsageError(f"{name} must be at least 1")
        numbers = {
            "--max-body-mb": max_body_mb,
            "--max-read-mb": max_read_mb,
            "--request-timeout": request_timeout,
            "--grace": grace,
            "--header-timeout": header_timeout,
            "--body-timeout": body_timeout,
            "--keep-alive": keep_alive,
        }
        for name, number in numbers.items():
            _check_bounds(name, number)
        distance = near_dup_setting(near_dup, near_dup_distance)
        settings = build_settings(
            preset=preset, model=model, mmproj=mmproj, offline=offline, lang=lang, channel=channel, strict=strict,
            template=template, question=None, gpu_layers=gpu_layers, ctx=ctx, threads=threads, parallel=parallel,
            image_min_tokens=image_min_tokens, image_max_tokens=image_max_tokens, max_tokens=max_tokens,
            temperature=temperature, seed=seed, grammar=grammar, jump_forward=jump_forward,
            debug=debug, product=ProductSettings(product_max_tokens, product_max_photos),
        )  # fmt: skip
        sock = bind(host, port)  # before the model loads: a taken port costs no load
        limits = ServeLimits(
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            max_images=max_images,
            max_queue=max_queue,
            max_tokens=max_chat_tokens,
            request_timeout_s=request_timeout,
            max_read_bytes=int(max_read_mb * 1024 * 1024),
        )
        connections = ConnectionLimits(
            header_timeout_s=header_timeout,
            body_idle_s=body_timeout,
            keep_alive_s=keep_alive,
            max_connections=max_connections,
            max_per_client=max_connections_per_client,
        )
        access = Access.of(allow_host or [], cors_origin or [])
        audit = None
        if audit_log is not None:  # never the model, the cache, the template: opened before the model loads
            cache_file = None if no_cache else (cache or default_cache_path())
            engine = settings.engine
            audit = AuditLog(audit_log, [engine.model_path, engine.mmproj_path, template, *sqlite_files(cache_file)])
        # Every channel a request may name, in all the server's languages: the context is sized for the largest.
        variants = [dataclasses.replace(settings.label, channel=name) for name in _channels(template)]
        with Labeler(
            settings, cache=open_cache(cache, no_cache), near_dup_distance=distance, variants=variants
        ) as labeler:
            name = settings.model_ref.preset if settings.model_ref and settings.model_ref.preset else "qvl-label"
            service = LabelService(labeler, limits, audit, allow_dir, model_name=name or "qvl-label")
            info = labeler.engine.info
            err.print(
                f"model {Path(info.model_path).name}, {info.n_parallel} parallel, context {info.n_ctx}, "
                f"languages {','.join(settings.label.languages)}" + ("" if keys else " [yellow](no API key)[/yellow]")
            )
            try:
                run_server(service, sock, keys, grace, debug, err.print, connections, access)
            finally:
                service.close()
                sock.close()
        err.print("stopped")
        return EXIT_OK

    code = run_action(debug, action)
    raise typer.Exit(code)


def _check_bounds(name: str, value: float) -> None:
    """A finite number in the option's range, else a one-line usage error (inf and nan included)."""
    low, high, low_allowed = BOUNDS[name]
    if not math.isfinite(value) or value > high or value < low or (value == low and not low_allowed):
        floor = f"from {low:g}" if low_allowed else f"above {low:g}"
        raise UsageError(f"{name} {value:g}: give a number {floor} up to {high:g}")


def _channels(template: Path | None) -> list[str]:
    from ..labeling.config import load_config

    return list(load_config(template).channels)
