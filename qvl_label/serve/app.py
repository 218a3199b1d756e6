"""The FastAPI app: routes, API keys, the body cap, one JSON error shape, and the page (the only FastAPI importer)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from .access import CORS_HEADERS, CORS_METHODS, Access
from .audit import Caller, new_request_id
from .chat import Answer, parse_chat
from .errors import (
    BadRequest,
    ClientGone,
    Forbidden,
    PayloadTooLarge,
    ServeError,
    Unauthorized,
    UnsupportedMediaType,
)
from .paths import Upload
from .service import LabelOptions, LabelService
from .streaming import stream_chat

PAGE = Path(__file__).parent / "page"
log = logging.getLogger("qvl_label.serve")
PUBLIC_PATHS = {"/health", "/", "/favicon.ico"}
ENDPOINTS = {"/", "/health", "/v1/models", "/metrics", "/v1/label", "/v1/chat/completions"}  # metrics labels
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised from the wrapped `receive` once a body passes the cap."""


class _Guard:
    """Pure ASGI middleware: Host and Origin checks, the body cap (checked on Content-Length and on
    the bytes read), the request id, per-request metrics, and the audit line of every request
    answered with an error. Pure ASGI passes `receive` through untouched otherwise."""

    def __init__(self, app: ASGIApp, service: LabelService, access: Access, debug: bool = False) -> None:
        self.app = app
        self.service = service
        self.access = access
        self.debug = debug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        limit = self.service.limits.max_body_bytes
        status = {"code": 500, "started": False}
        headers = _headers(scope)
        allowed_origin = self.access.cors_origin(headers.get("origin"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.update(code=message["status"], started=True)
                if message["status"] >= 400:  # audited before the client can see the answer
                    self._audit_refusal(scope, message["status"])
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                if allowed_origin is not None:
                    message["headers"] += [
                        (b"access-control-allow-origin", allowed_origin.encode()),
                        (b"vary", b"origin"),
                    ]
            await send(message)

        length = headers.get("content-length")
        try:
            declared = int(length) if length is not None else 0
        except ValueError:
            declared = -1
        refusal: ServeError | None = None
        why_not = self.access.host_refusal(headers.get("host"), scope.get("server"))
        why_not = why_not or self.access.origin_refusal(
            scope.get("method", ""), headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host")
        )
        if why_not is not None:
            refusal = Forbidden(why_not)
        elif declared < 0 or declared > limit:
            reason = "bad Content-Length" if declared < 0 else f"the body is over the {limit} byte limit"
            refusal = BadRequest(reason) if declared < 0 else PayloadTooLarge(reason)
        if refusal is not None:
            state["error_type"] = refusal.type
            await _error_response(refusal)(scope, receive, send_with_id)
        elif (
            allowed_origin is not None
            and scope.get("method") == "OPTIONS"
            and "access-control-request-method" in headers
        ):
            preflight = {
                "access-control-allow-methods": CORS_METHODS,
                "access-control-allow-headers": CORS_HEADERS,
                "access-control-max-age": "600",
            }
            await Response(status_code=204, headers=preflight)(scope, receive, send_with_id)
        else:
            seen = 0

            async def counted() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise BodyTooLarge(f"the body is over the {limit} byte limit")
                return message

            try:
                await self.app(scope, counted, send_with_id)
            except Exception as exc:
                # One JSON error for the client, one line in the server's log (the traceback with
                # --debug); nothing propagates to uvicorn, which would print it again.
                if self.debug:
                    log.exception("request %s failed", request_id)
                else:
                    log.error("request %s failed: %s: %s", request_id, type(exc).__name__, exc)
                state.setdefault("error_type", ServeError.type)
                if not status["started"]:
                    failure = ServeError(f"internal error ({type(exc).__name__}); request id {request_id}")
                    await _error_response(failure)(scope, receive, send_with_id)
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        self.service.metrics.request(endpoint, status["code"], time.perf_counter() - started)

    def _audit_refusal(self, scope: Scope, status: int) -> None:
        """Refused and failed requests are audited too: who was turned away, and why."""
        state = scope["state"]
        client = scope.get("client") or ("",)
        caller = Caller(state["request_id"], str(client[0]), state.get("key_id"))
        kind = state.get("error_type") or _ERROR_TYPES.get(status, "http_error")
        self.service.audit_refusal(caller, scope.get("path", ""), status, kind)


_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 422: "invalid_request", 500: ServeError.type}


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name, decoded as Latin-1; of a repeated one the first (as Starlette)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers") or []:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _error_json(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape every failure answers with."""
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def _error_response(error: ServeError) -> JSONResponse:
    return _error_json(error.status, error.type, str(error), error.headers)


def _until_gone(request: Request) -> Callable[[], Awaitable[None]]:
    """Returns when the client disconnects. Called once the body is read: uvicorn's `receive` then
    blocks until the connection closes, so nothing polls."""

    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return wait


def _who(request: Request) -> Caller:
    client = request.client.host if request.client else ""
    return Caller(request.state.request_id, client, getattr(request.state, "key_id", None))


def key_id(key: str) -> str:
    """What the audit log records of a key: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def create_app(
    service: LabelService, api_keys: list[str] | None = None, debug: bool = False, access: Access | None = None
) -> FastAPI:
    """The app; `access` names extra Host names and CORS origins (none by default: own address only)."""
    keys = [(k.encode(), key_id(k)) for k in api_keys or []]
    app = FastAPI(title="qvl-label", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    def caller(request: Request) -> Caller:
        """Who is asking; Unauthorized when keys are set and none of them matches."""
        given = request.headers.get("x-api-key", "")
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        matched: str | None = None
        for key, kid in keys:  # every key compared in constant time: the time taken says nothing
            if hmac.compare_digest(key, given.encode()):
                matched = kid
        request.state.key_id = matched
        if keys and matched is None and request.url.path not in PUBLIC_PATHS:
            raise Unauthorized()
        return _who(request)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> Response:
        request.state.error_type = exc.type  # the guard audits the refusal
        if isinstance(exc, ClientGone):
            return Response(status_code=exc.status)  # nobody reads it; the status shows in metrics
        return _error_response(exc)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> Response:
        return await serve_error(request, PayloadTooLarge(str(exc)))

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
        return await serve_error(request, ClientGone("the client disconnected while sending the body"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_json(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return _error_json(422, "invalid_request", message)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": service.model_name}

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(PAGE / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        caller(request)
        info = service.labeler.engine.info
        return {
            "object": "list",
            "data": [
                {
                    "id": service.model_name,
                    "object": "model",
                    "created": int(service.started),
                    "owned_by": "qvl-label",
                    "languages": list(service.labeler.settings.label.languages),
                    "channels": list(service.labeler.config.channels),
                    "engine": {
                        "backend": info.backend,
                        "model": Path(info.model_path).name,
                        "mmproj": Path(info.mmproj_path).name,
                        "parallel": info.n_parallel,
                        "context": info.n_ctx,
                        "gpu_offload": info.gpu_offload,
                        "grammar": info.grammar_engine,
                    },
                    "limits": {
                        "max_body_bytes": service.limits.max_body_bytes,
                        "max_images": service.limits.max_images,
                        "max_queue": service.limits.max_queue,
                        "max_tokens": service.limits.max_tokens,
                    },
                }
            ],
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        caller(request)
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/label")
    async def label(request: Request) -> Response:
        who = caller(request)
        uploads, options = await _label_input(request, service)
        records = await service.label(uploads, options, who, _until_gone(request))
        body = orjson.dumps({"request_id": who.request_id, "records": records})
        return Response(body, media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        who = caller(request)
        asked = parse_chat(await _json_body(request), decode_data)
        if asked.stream:
            return await stream_chat(service, asked, who, _until_gone(request))
        generation, _ = await service.complete(
            asked.image,
            asked.prompt,
            asked.schema,
            asked.max_tokens,
            asked.temperature,
            who,
            _until_gone(request),
        )
        answer = Answer.of(who.request_id, service.model_name, generation, asked.stop)
        return Response(orjson.dumps(answer.completion()), media_type="application/json")

    app.add_middleware(_Guard, service=service, access=access or Access(), debug=debug)
    return app


# -- request parsing ---------------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = _media_type(request)
    if content_type != "application/json":
        raise UnsupportedMediaType(f"send application/json, not {content_type or 'no content type'}")
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    return payload


def decode_data(value: str, name: str) -> bytes:
    """Base64, bare or as a data URI (`data:image/jpeg;base64,...`); remote URLs are refused."""
    if value.startswith(("http://", "https://", "ftp://", "file:")):
        raise BadRequest(f"{name}: this server never fetches URLs; send the image as base64 or a data URI")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise BadRequest(f"{name}: only base64 data URIs are accepted")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name}: not valid base64") from None


def _options(get: Callable[[str], Any]) -> LabelOptions:
    lang = get("lang")
    if isinstance(lang, list) and all(isinstance(c, str) for c in lang):
        lang = ",".join(lang)
    elif lang is not None and not isinstance(lang, str):
        raise BadRequest("lang must be a comma-separated string or a list of codes")
    strict = get("strict")
    if isinstance(strict, str):
        if strict.lower() not in {"true", "false", "1", "0", "yes", "no", "on", "off", ""}:
            raise BadRequest("strict must be true or false")
        strict = strict.lower() in {"true", "1", "yes", "on"}
    elif strict is not None and not isinstance(strict, bool):
        raise BadRequest("strict must be true or false")
    channel, prompt, product = get("channel"), get("prompt"), get("product")
    for field, value in (("channel", channel), ("prompt", prompt), ("product", product)):
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{field} must be a string")
    if product is not None and not 1 <= len(product.strip()) <= 200:
        raise BadRequest("product names the product the images show: 1 to 200 characters")
    return LabelOptions(
        languages=lang or None,
        channel=channel or None,
        strict=strict,
        question=prompt or None,
        product=product.strip() if product is not None else None,
    )


async def _label_input(request: Request, service: LabelService) -> tuple[list[Upload], LabelOptions]:
    content_type = _media_type(request)
    limit = service.limits.max_images
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=limit + 1, max_fields=64)
        except BodyTooLarge:
            raise
        except Exception as exc:  # python-multipart's and Starlette's parse errors
            raise BadRequest(f"malformed multipart body: {exc}") from None
        uploads: list[Upload] = []
        fields: dict[str, Any] = {}
        try:  # uploads over 1 MB were spooled to temporary files: closed whatever happens
            # Server-side paths are counted with the files, and refused past the limits, before any is read.
            paths = [p for k, p in form.multi_items() if k == "path" and isinstance(p, str)]
            files = sum(1 for _, value in form.multi_items() if not isinstance(value, str))
            from_paths = await service.read_paths(paths, files) if paths else []
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                else:
                    data = await value.read()
                    uploads.append(Upload(value.filename or f"{key}-{len(uploads) + 1}", data))
        finally:
            await form.close()
        return uploads + from_paths, _options(fields.get)
    if content_type == "application/json":
        payload = await _json_body(request)
        images = payload.get("images", [])
        if not isinstance(images, list):
            raise BadRequest("images must be a list")
        uploads = []
        for i, item in enumerate(images[: limit + 1]):
            name = f"image-{i + 1}"
            if isinstance(item, dict):
                name = str(item.get("name") or name)
                item = item.get("data")
            if not isinstance(item, str):
                raise BadRequest(f"images[{i}] must be a base64 string, a data URI or {{name, data}}")
            uploads.append(Upload(name, decode_data(item, f"images[{i}]")))
        paths = payload.get("paths", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadRequest("paths must be a list of strings")
        if paths:
            uploads += await service.read_paths(paths, len(uploads))
        return uploads, _options(payload.get)
    raise UnsupportedMediaType(
        f"send multipart/form-data (files) or application/json (base64 images), not {content_type or 'nothing'}"
    )
