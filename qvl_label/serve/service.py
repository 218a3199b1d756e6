"""The server's labelling service: uploads in, batch records out, over the Labeler's one engine scheduler (no HTTP)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..engine.protocol import Generation, GenerationRequest
from ..errors import UsageError
from ..labeling.prompts import MAX_QUESTION_CHARS, Prompt
from ..labeling.schema import parse_languages
from ..pipeline.images import ImageLoadError, LoadedImage
from ..pipeline.job import LabelJob, token_budgets
from ..pipeline.labeler import Labeler
from ..pipeline.products import (
    Product,
    main_first,
    product_job,
)
from ..pipeline.records import error_record
from ..pipeline.submit import Submitted
from .audit import AuditLog, Caller
from .errors import (
    BadRequest,
    ClientGone,
    EngineFailed,
    PayloadTooLarge,
    QueueFull,
    RequestTimeout,
    ShuttingDown,
    Unprocessable,
)
from .metrics import Metrics
from .paths import AllowedFolder, Upload

T = TypeVar("T")
UntilGone = Callable[[], Awaitable[None]]  # returns when the request's client has disconnected


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 20 * 1024 * 1024
    max_images: int = 16  # per request
    max_queue: int = 64  # images admitted and not yet answered, across all requests
    max_tokens: int = 2048  # the most a chat request may ask for
    request_timeout_s: float = 300.0
    max_read_bytes: int = 256 * 1024 * 1024  # server-side files (--allow-dir) one request may have read, in all


@dataclass(frozen=True)
class LabelOptions:
    languages: str | None = None  # comma-separated codes
    channel: str | None = None
    strict: bool | None = None
    question: str | None = None
    product: str | None = None  # all the request's images are photos of this one product


class LabelService:
    """Admits requests (bounded), decodes their images and submits them to the Labeler, which
    reuses cached or in-flight labels and sends the rest to its scheduler, where they share decode
    steps with every other request. A request whose client leaves or whose time runs out cancels
    what only it waited on.
    """

    def __init__(
        self,
        labeler: Labeler,
        limits: ServeLimits = ServeLimits(),
        audit: AuditLog | None = None,
        allow_dir: Path | None = None,
        model_name: str = "qvl-label",
    ) -> None:
        self.labeler = labeler
        self.limits = limits
        self.audit = audit
        self.folder = AllowedFolder(allow_dir, limits.max_images, limits.max_read_bytes)
        self.model_name = model_name
        self.metrics = Metrics()
        self.metrics.watch(self.gauges)
        self.started = time.time()
        self._executor = ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="qvl-serve")
        self._lock = threading.Lock()
        self._admitted = 0
        self._closing = False

    # -- admission -------------------------------------------------------------------------------

    def _admit(self, images: int) -> None:
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._admitted + images > self.limits.max_queue:
                rate = self.metrics.images_per_second()
                retry = 5 if rate <= 0 else min(120, max(1, math.ceil(self._admitted / rate)))
                raise QueueFull(
                    f"{self._admitted} images are queued, the limit is {self.limits.max_queue}; retry later", retry
                )
            self._admitted += images

    def _release(self, images: int) -> None:
        with self._lock:
            self._admitted -= images

    @property
    def queued_images(self) -> int:
        with self._lock:
            return self._admitted

    def close(self) -> None:
        """Refuse new requests; the Labeler (closed by its owner) cancels what the engine still holds."""
        with self._lock:
            self._closing = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.audit is not None:
            self.audit.close()

    # -- what a request asks for -----------------------------------------------------------------

    def job_for(self, options: LabelOptions) -> LabelJob:
        base = self.labeler.settings.label
        try:
            languages = parse_languages(options.languages, "lang") if options.languages else base.languages
        except UsageError as exc:
            raise Unprocessable(str(exc)) from None
        question = options.question.strip() if options.question is not None else base.question
        if question is not None and not 1 <= len(question) <= MAX_QUESTION_CHARS:
            raise Unprocessable(f"prompt takes a question of 1 to {MAX_QUESTION_CHARS} characters")
        label = dataclasses.replace(
            base,
            languages=languages,
            channel=options.channel or base.channel,
            strict=base.strict if options.strict is None else options.strict,
            question=question,
        )
        try:
            return self.labeler.job_for(label)
        except UsageError as exc:
            raise Unprocessable(str(exc)) from None

    async def read_paths(self, relatives: list[str], uploads: int) -> list[Upload]:
        """The files a request names, read on worker threads only after they are counted with its
        `uploads` and their sizes summed: a request over a limit is refused before a byte is read."""
        self.folder.check(relatives, uploads)
        return list(await asyncio.gather(*(self._in_pool(self.folder.read, r) for r in relatives)))

    # -- labelling -------------------------------------------------------------------------------

    def _decode(self, upload: Upload) -> LoadedImage | ImageLoadError:
        """The upload decoded as the Labeler decodes a batch's files (with its perceptual hash under near-dup)."""
        if upload.error is not None:
            return upload.error
        return self.labeler.load((upload.name, upload.data))[1]

    async def _in_pool(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _wait(self, futures: list[Future[T]], until_gone: UntilGone, deadline: float) -> list[T]:
        """Results of these thread futures; ClientGone or RequestTimeout when the client leaves or time runs out.

        Event-driven: nothing polls, so many waiting requests cost the engine's thread nothing.
        """
        loop = asyncio.get_running_loop()
        waiters = [_watch(loop, f) for f in futures]
        pending: set[asyncio.Future[Any]] = set(waiters)
        gone = asyncio.ensure_future(until_gone())
        try:
            while pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    limit = self.limits.request_timeout_s
                    raise RequestTimeout(f"not answered within {limit:g} s; its work was cancelled")
                _, still = await asyncio.wait({*pending, gone}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    raise ClientGone("the client disconnected")
                pending = still - {gone}
        finally:
            gone.cancel()
            for waiter in pending:  # nobody reads them now: their late results are dropped quietly
                waiter.cancel()
        return [w.result() for w in waiters]

    async def label(
        self, uploads: list[Upload], options: LabelOptions, caller: Caller, until_gone: UntilGone
    ) -> list[dict[str, Any]]:
        """One batch record per upload, in order; failures to read an image are records, as in `batch`."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        if not uploads:
            raise BadRequest("no images: send files in a multipart form, or JSON with images or paths")
        if len(uploads) > self.limits.max_images:
            raise PayloadTooLarge(f"{len(uploads)} images in one request; the limit is {self.limits.max_images}")
        job = self.job_for(options)
        if options.product is not None:
            return [await self._label_product(options.product, uploads, job, caller, until_gone, started, deadline)]
        self._admit(len(uploads))
        submitted: list[Submitted] = []
        try:
            decoded = await asyncio.gather(*(self._in_pool(self._decode, u) for u in uploads))
            records: list[dict[str, Any] | None] = [None] * len(uploads)
            waiting: list[tuple[int, Submitted]] = []
            for index, (upload, image) in enumerate(zip(uploads, decoded, strict=True)):
                if isinstance(image, ImageLoadError):
                    records[index] = error_record(upload.name, job.run, image.kind, str(image), image.sha256)
                    continue
                try:
                    item = self.labeler.submit((caller.request_id, index), upload.name, image, job)
                except RuntimeError as exc:  # SchedulerClosed too: the engine stopped or is closing
                    raise EngineFailed(f"the engine stopped: {exc}") from None
                submitted.append(item)
                waiting.append((index, item))
            answered = await self._wait([item.record for _, item in waiting], until_gone, deadline)
            for (index, item), record in zip(waiting, answered, strict=True):
                # A label another request (or the cache) made keeps its name to itself; one this
                # request made for its own earlier file may say which.
                own = item.source is None or (isinstance(item.source, tuple) and item.source[0] == caller.request_id)
                records[index] = record if own else unnamed_source(record)
        except CancelledError:
            raise EngineFailed("the engine cancelled this request (it is shutting down)") from None
        finally:
            for item in submitted:
                self.labeler.release(item)
            self._release(len(uploads))
        done = [r for r in records if r is not None]
        for record in done:
            self.metrics.image(record["status"], record["tokens"] if record["duplicate_of"] is None else None)
        self._audit(caller, "/v1/label", 200, done, started)
        return done

    async def _label_product(
        self,
        key: str,
        uploads: list[Upload],
        single: LabelJob,
        caller: Caller,
        until_gone: UntilGone,
        started: float,
        deadline: float,
    ) -> dict[str, Any]:
        """One product record from all the request's images, as `batch --group-by` makes it."""
        settings = self.labeler.settings.product
        if settings is None:
            raise Unprocessable("this server labels no products")
        names = distinct_names([u.name for u in uploads])
        job = product_job(single, settings)
        self._admit(len(uploads))
        future: Future[Generation] | None = None
        try:
            product = Product(key, main_first(names))
            given: dict[str, bytes | ImageLoadError] = {
                name: upload.error if upload.error is not None else upload.data
                for name, upload in zip(names, uploads, strict=True)
            }
            loaded = await self._in_pool(self.labeler.load_product, product, given)
            try:
                outcome = self.labeler.start_product(job, loaded)
            except RuntimeError as exc:  # SchedulerClosed too: the engine stopped or is closing
                raise EngineFailed(f"the engine stopped: {exc}") from None
            if isinstance(outcome, Future):
                future = outcome
                (generation,) = await self._wait([future], until_gone, deadline)
                record = await self._in_pool(self.labeler.shape_product, job, loaded, generation)
            else:  # no photo could be read, or the cache had the label (under another request's name)
                assert isinstance(outcome, dict)
                record = unnamed_source(outcome)
        except CancelledError:
            raise EngineFailed("the engine cancelled this request (it is shutting down)") from None
        finally:
            if future is not None and not future.done():
                self.labeler.scheduler.cancel(future)
            self._release(len(uploads))
        self.metrics.image(record["status"], record["tokens"] if record["duplicate_of"] is None else None)
        self._audit(caller, "/v1/label", 200, [record], started)
        return record

    # -- chat completions ------------------------------------------------------------------------

    async def complete(
        self,
        upload: Upload,
        prompt: Prompt,
        schema: dict[str, Any] | None,
        max_tokens: int | None,
        temperature: float | None,
        caller: Caller,
        until_gone: UntilGone,
        on_text: Callable[[bytes], None] | None = None,
    ) -> tuple[Generation, LoadedImage]:
        """One free-form (or schema-constrained) answer about one image, for /v1/chat/completions;
        `prompt` is the conversation, rendered with the image between its prefix and suffix.
        `on_text` (a stream) gets the answer's bytes from the engine's thread as they are generated."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        settings = self.labeler.engine_settings
        prefix_budget, base_budget = token_budgets(settings, prompt, 0)
        room = settings.sequence_tokens - base_budget
        ceiling = min(self.limits.max_tokens, room)
        if prefix_budget > settings.prefix_tokens or ceiling < 1:
            raise BadRequest("the messages are too long for the loaded model's context")
        if max_tokens is not None and not 1 <= max_tokens <= ceiling:
            raise BadRequest(f"max_tokens must be between 1 and {ceiling} on this server")
        self._admit(1)
        future: Future[Generation] | None = None
        try:
            image = await self._in_pool(self._decode, upload)
            if isinstance(image, ImageLoadError):
                error = PayloadTooLarge if image.kind == "too_large" else Unprocessable
                raise error(f"image: {image}")
            request = GenerationRequest(
                key=0,  # the scheduler keys requests itself
                image=image.prepared,
                prefix=prompt.prefix,
                suffix=prompt.suffix,
                schema=schema,
                max_tokens=max_tokens or ceiling,
                temperature=temperature,
                on_text=on_text,
            )
            try:
                future = self.labeler.scheduler.submit(request)
            except RuntimeError as exc:  # SchedulerClosed too: the engine stopped or is closing
                raise EngineFailed(f"the engine stopped: {exc}") from None
            (generation,) = await self._wait([future], until_gone, deadline)
        except CancelledError:
            raise EngineFailed("the engine cancelled this request (it is shutting down)") from None
        except BaseException:
            if future is not None and not future.done():
                self.labeler.scheduler.cancel(future)
            raise
        finally:
            self._release(1)
        if generation.error is not None:
            if schema is not None and "schema" in generation.error:  # the grammar compiler refused it
                raise BadRequest(f"response_format: the JSON schema cannot be used: {generation.error}")
            raise EngineFailed(f"the engine could not answer: {generation.error}")
        self.metrics.image("ok", dataclasses.asdict(generation.tokens))
        entry = {"path": upload.name, "sha256": image.sha256, "status": generation.finish_reason, "label": None}
        self._audit(caller, "/v1/chat/completions", 200, [entry], started)
        return generation, image

    # -- audit -----------------------------------------------------------------------------------

    def _audit(self, caller: Caller, endpoint: str, status: int, records: list[dict[str, Any]], started: float) -> None:
        if self.audit is not None:
            self.audit.answered(caller, endpoint, status, records, time.perf_counter() - started)

    def audit_refusal(self, caller: Caller, endpoint: str, status: int, error_type: str) -> None:
        """A request answered with an error: who asked, and why it was refused or failed."""
        if self.audit is not None:
            self.audit.refused(caller, endpoint, status, error_type)

    def gauges(self) -> dict[str, tuple[str, float]]:
        waiting, held = self.labeler.scheduler.load()
        parallel = max(1, self.labeler.engine.info.n_parallel)
        return {
            "qvl_queue_images": ("Images admitted and not yet answered.", self.queued_images),
            "qvl_engine_waiting": ("Requests waiting for an engine slot.", waiting),
            "qvl_engine_sequences": ("Requests the engine holds (started or waiting for context room).", held),
            "qvl_engine_occupancy": ("Engine slots in use, as a share of them.", min(held, parallel) / parallel),
            "qvl_engine_parallel": ("Sequences the engine decodes together.", parallel),
            "qvl_uptime_seconds": ("Seconds since the server started.", time.time() - self.started),
        }


def distinct_names(names: list[str]) -> list[str]:
    """A product's photo names, one per photo: a name given twice is numbered by position ("2:a.jpg");
    a clash the numbering itself makes (a photo already named "2:a.jpg") is a 400 naming it."""
    numbered = [f"{i + 1}:{name}" if names.count(name) > 1 else name for i, name in enumerate(names)]
    for i, name in enumerate(numbered):
        first = numbered.index(name)
        if first != i:
            raise BadRequest(f"photos {first + 1} and {i + 1} of the product are both named {name!r}; rename one")
    return numbered


def unnamed_source(record: dict[str, Any]) -> dict[str, Any]:
    """A reused record without the name its label was first made under: that name came from
    another request (or a batch run), and one client never learns another's file names."""
    duplicate = record.get("duplicate_of")
    if not duplicate:
        return record
    return {**record, "duplicate_of": {**duplicate, "path": None}}


def _watch(loop: asyncio.AbstractEventLoop, future: Future[T]) -> asyncio.Future[T]:
    """An asyncio future fed by a thread future; cancelling it leaves the thread future alone
    (asyncio.wrap_future would cancel it, and with it every other request sharing it)."""
    waiter: asyncio.Future[T] = loop.create_future()

    def copy(done: Future[T]) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.set_exception(CancelledError())
        elif done.exception() is not None:
            waiter.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            waiter.set_result(done.result())

    future.add_done_callback(lambda done: loop.call_soon_threadsafe(copy, done))
    return waiter
