"""The Python API: a Labeler loads the model once and turns image paths into records, in input order."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..engine.identity import content_digest
from ..engine.protocol import Engine, Generation
from ..engine.scheduler import Scheduler
from ..errors import UsageError
from ..labeling.config import load_config
from ..settings import EngineSettings, LabelSettings, Settings
from ..store.cache import MAX_COLOUR_DIFFERENCE, LabelCache
from .images import ImageLoadError, LoadedImage, colour_difference, hamming, image_from_bytes, load_image
from .job import LabelJob, build_job, sized_for, token_budgets
from .products import (
    LoadedProduct,
    Product,
    photo_budget,
    photos_sent,
    product_error_record,
    product_job,
    product_record,
    product_request,
    product_reused,
    product_sequence_tokens,
)
from .records import OK, RunContext, model_record, reused_record
from .run_loop import RunLoop
from .submit import ItemSubmitter, Submitted

# Records are produced in input order inside windows of this many paths; the window
# bounds memory when long stretches of files fail before reaching the model.
WINDOW = 1024

EngineFactory = Callable[[EngineSettings], Engine]
# What `label` takes per image: a path to read, or a name with bytes already read (a Ray
# reader's object-store file); the name is the record's path either way.
Source = str | tuple[str, bytes]
Loaded = tuple[str, LoadedImage | ImageLoadError]


def default_engine_factory(settings: EngineSettings) -> Engine:
    from ..engine.llama import LlamaCppEngine  # imported late: llama.cpp is slow to load and optional for fakes

    return LlamaCppEngine(settings)


def model_identity(settings: Settings) -> Any:
    """What names the model files in the run fingerprint."""
    ref = settings.model_ref
    e = settings.engine
    # A pinned preset is named by its repository and commit; a local pair by its content,
    # since two fine-tunes quantised alike can share file names and sizes.
    if ref and ref.revision:
        return dataclasses.asdict(ref)
    return [content_digest(p) if p.is_file() else str(p) for p in (e.model_path, e.mmproj_path)]


def plan_job(settings: Settings) -> LabelJob:
    """The job a Labeler with these settings runs, without loading the model (a Ray driver needs its fingerprint)."""
    return build_job(
        settings.label, load_config(settings.label.template_file), settings.engine, model_identity(settings),
        settings.model_ref,
    )  # fmt: skip


class Labeler:
    """Loads the model once; `label` streams one record per path.

    `variants` are other label settings (languages, channel, strict, question) that requests
    may ask for through `job_for` (the server does); the context is sized for the largest.
    """

    def __init__(
        self,
        settings: Settings,
        engine_factory: EngineFactory = default_engine_factory,
        loader_threads: int = 0,
        cache: LabelCache | None = None,
        near_dup_distance: int | None = None,
        variants: Iterable[LabelSettings] = (),
    ) -> None:
        self.settings = settings
        # Without a persistent cache an in-memory one still labels identical files once per run.
        self.cache = cache if cache is not None else LabelCache(None)
        self.near_dup_distance = near_dup_distance
        self.config = load_config(settings.label.template_file)
        self._model_identity = model_identity(settings)
        self._jobs: dict[LabelSettings, LabelJob] = {}
        self._jobs_lock = threading.Lock()
        self.job = self._build_job(settings.label)
        self.engine_settings = sized_for(settings.engine, [self.job, *map(self._build_job, variants)])
        self.product_job: LabelJob | None = None
        if settings.product is not None:  # a sequence then holds up to max_photos photos of one product
            self.product_job = product_job(self.job, settings.product)
            needed = product_sequence_tokens(self.job, settings.product, settings.engine)
            self.engine_settings = dataclasses.replace(
                self.engine_settings, sequence_tokens=max(self.engine_settings.sequence_tokens, needed)
            )
        self._loader_threads = loader_threads or min(4, max(1, (os.cpu_count() or 2) // 2))
        self.shaped = 0  # model answers turned into records
        self.shaping_seconds = 0.0  # time spent doing so (on the shaping thread)
        self.engine = engine_factory(self.engine_settings)
        self.scheduler = Scheduler(self.engine)
        self.items = ItemSubmitter(self.scheduler, self.reuse_cached, self.shape, self.near, WINDOW)
        self._max_in_flight = 2 * max(1, self.engine.info.n_parallel) + 2

    @property
    def run(self) -> RunContext:
        return self.job.run

    @property
    def max_tokens(self) -> int:
        return self.job.max_tokens

    def _build_job(self, label: LabelSettings) -> LabelJob:
        with self._jobs_lock:
            job = self._jobs.get(label)
            if job is None:
                job = build_job(label, self.config, self.settings.engine, self._model_identity, self.settings.model_ref)
                self._jobs[label] = job
            return job

    def job_for(self, label: LabelSettings) -> LabelJob:
        """The job for other label settings on the loaded model; a UsageError when it needs a larger context."""
        job = self._build_job(label)
        prefix, sequence = token_budgets(self.engine_settings, job.prompt, job.max_tokens)
        if prefix > self.engine_settings.prefix_tokens or sequence > self.engine_settings.sequence_tokens:
            raise UsageError(
                f"this request needs {sequence} tokens per image, more than the {self.engine_settings.sequence_tokens} "
                "the loaded model was sized for; ask for fewer languages or a smaller max_tokens"
            )
        return job

    def submit(
        self, owner: Hashable, name: str, image: LoadedImage, job: LabelJob | None = None, reuse_failures: bool = False
    ) -> Submitted:
        """One image: a future of its shaped record, reusing the cache, the generation of identical bytes
        or of a similar photo in flight, and (`reuse_failures`, as batch runs do) a failed label just
        made for identical bytes; `release` it when done. `label` (batch, describe, Ray actors) and
        the server all label images this way."""
        return self.items.submit(owner, name, image, job or self.job, reuse_failures)

    def release(self, submitted: Submitted) -> None:
        self.items.release(submitted)

    def close(self) -> None:
        self.items.close()
        self.scheduler.close(drain=False)
        self.engine.close()
        self.cache.close()

    def __enter__(self) -> Labeler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, source: Source) -> Loaded:
        """Read and decode one source for the model; a file that cannot be used is its ImageLoadError."""
        name = source if isinstance(source, str) else source[0]
        engine = self.engine_settings
        with_phash = self.near_dup_distance is not None
        try:
            if isinstance(source, str):
                image = load_image(Path(source), engine.image_min_tokens, engine.image_max_tokens, with_phash)
            else:
                image = image_from_bytes(source[1], engine.image_min_tokens, engine.image_max_tokens, with_phash)
        except ImageLoadError as exc:
            return name, exc
        return name, image

    def prefetched(self, sources: Iterable[Source]) -> Iterator[Loaded]:
        """Decode images in worker threads, a bounded number ahead of the model, in input order."""
        # The engine's resolved parallelism (`--parallel 0` means automatic), not the setting.
        ahead = 2 * max(1, self.engine.info.n_parallel) + self._loader_threads
        with ThreadPoolExecutor(self._loader_threads, thread_name_prefix="qvl-load") as pool:
            queue: deque[Future[Loaded]] = deque()
            try:
                for source in sources:
                    queue.append(pool.submit(self.load, source))
                    if len(queue) >= ahead:
                        yield queue.popleft().result()
                while queue:
                    yield queue.popleft().result()
            finally:
                for future in queue:
                    future.cancel()

    def label(self, sources: Iterable[Source]) -> Generator[dict[str, Any], None, None]:
        """One record per path (or named bytes), in input order."""
        return self.label_loaded(self.prefetched(sources))

    def label_loaded(self, loaded: Iterable[Loaded]) -> Generator[dict[str, Any], None, None]:
        """One record per loaded image (from `prefetched`), in input order.

        Requests go to the engine's scheduler as images load, and keep it full: a slow image
        holds back only the records after it (at most WINDOW of them), never the batch.
        Each image goes through `submit`, the per-item path every front end takes; label shaping
        (taxonomy, vocabularies, compliance, cache writes) runs on its own thread there, so the
        thread that drives llama.cpp only decodes.
        """
        run = RunLoop(self)
        try:
            for index, (path, result) in enumerate(loaded):
                run.admit(index, path, result)
                run.collect(block=False)
                # Bounded: the engine holds a few requests beyond its slots, and no more than
                # WINDOW records wait behind the oldest one still being labelled.
                while run.pending and (run.with_model >= self._max_in_flight or index + 1 - run.next_out >= WINDOW):
                    run.collect(block=True)
                    yield from run.flush(block=False)
                yield from run.flush(block=False)
            while run.pending:
                run.collect(block=True)
                yield from run.flush(block=False)
            yield from run.flush(block=True)
            yield from run.check_complete()
        finally:
            run.cancel_in_flight()

    def shape(
        self, path: str, image: LoadedImage, generation: Generation, job: LabelJob | None = None
    ) -> dict[str, Any]:
        """The labelling path after the model: parse, validate, shape (taxonomy, vocabularies,
        compliance) and cache the record; timed, for scripts/bench_pipeline.py."""
        started = time.perf_counter()
        run = (job or self.job).run
        record = model_record(path, run, image, generation)
        if record["status"] == OK:
            self.cache.put(image.sha256, run.fingerprint, record["path"], record, image.phash, image.colour_layout)
        self.shaping_seconds += time.perf_counter() - started
        self.shaped += 1
        return record

    def near(self, image: LoadedImage, candidates: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
        """(index, distance) of the closest similar photo among the candidates, if near-dup is on."""
        if self.near_dup_distance is None or image.phash is None or image.colour_layout is None:
            return None
        best: tuple[int, int] | None = None
        for index, phash, layout in candidates:
            distance = hamming(phash, image.phash)
            closer = distance <= self.near_dup_distance and (best is None or distance < best[1])
            if closer and colour_difference(layout, image.colour_layout) <= MAX_COLOUR_DIFFERENCE:
                best = (index, distance)
        return best

    def reuse_cached(self, path: str, image: LoadedImage, job: LabelJob | None = None) -> dict[str, Any] | None:
        """A record from the cache: identical bytes first, then (with near-dup on) a similar photo."""
        run = (job or self.job).run
        fingerprint = run.fingerprint
        hit = self.cache.get(image.sha256, fingerprint)
        if hit is not None:
            return reused_record(path, run, image, hit.path, hit.record)
        if self.near_dup_distance is None or image.phash is None or not image.colour_layout:
            return None
        hit = self.cache.nearest(image.phash, image.colour_layout, fingerprint, self.near_dup_distance)
        if hit is None:
            return None
        return reused_record(path, run, image, hit.path, hit.record, "near", hit.distance)

    def label_one(self, path: str) -> dict[str, Any]:
        return next(iter(self.label([path])))

    # -- products: several photos, one record ----------------------------------------------

    def load_product(self, product: Product, data: dict[str, bytes | ImageLoadError] | None = None) -> LoadedProduct:
        """Read a product's photos (or decode the bytes given for their names), each resized to its
        share of the product's image budget."""
        settings = self.settings.product
        if settings is None:
            raise UsageError("products need Settings.product (batch --group-by, describe --as-product)")
        engine = self.engine_settings
        count = photos_sent(len(product.paths), settings, engine.image_min_tokens)
        send, extra = product.paths[:count], product.paths[count:]
        budget = photo_budget(len(send), settings.max_tokens, engine.image_min_tokens, engine.image_max_tokens)
        loaded = LoadedProduct(product, [], [], list(extra))
        low = min(engine.image_min_tokens, budget)
        for path in send:
            try:
                if data is not None:
                    given = data[path]
                    if isinstance(given, ImageLoadError):  # a server-side path that could not be read
                        raise given
                    loaded.sent.append((path, image_from_bytes(given, low, budget)))
                else:
                    loaded.sent.append((path, load_image(Path(path), low, budget)))
            except ImageLoadError as exc:
                loaded.failed.append((path, exc))
        return loaded

    def label_products(self, products: Iterable[Product]) -> Generator[dict[str, Any], None, None]:
        """One record per product, in input order: the label from all its photos together.

        Identical products (the same set of photo bytes) are labelled once and reused from
        the cache; several products are with the engine at a time, as single photos are.
        """
        job = self.product_job
        if job is None:
            raise UsageError("products need Settings.product (batch --group-by, describe --as-product)")
        pending: deque[tuple[LoadedProduct, ProductOutcome]] = deque()
        submitted: set[str] = set()  # digests of the products sent to the engine in this run
        labelled: dict[str, dict[str, Any]] = {}  # digest -> the record of the product labelled first

        def finished(loaded: LoadedProduct, outcome: ProductOutcome) -> dict[str, Any]:
            if isinstance(outcome, dict):
                return outcome
            if isinstance(outcome, _SameAsEarlier):  # the same photos as a product just before it, in input order
                first = labelled[loaded.digest]
                return product_reused(job, loaded, first["product"], first)
            record = self.shape_product(job, loaded, outcome.result())
            labelled[loaded.digest] = record
            return record

        with ThreadPoolExecutor(self._loader_threads, thread_name_prefix="qvl-load") as pool:
            loads = (pool.submit(self.load_product, product) for product in products)
            ahead: deque[Future[LoadedProduct]] = deque()
            try:
                for future in loads:
                    ahead.append(future)
                    if len(ahead) < self._loader_threads + 1:
                        continue
                    yield from self._admit_product(job, ahead.popleft().result(), pending, submitted, finished)
                while ahead:
                    yield from self._admit_product(job, ahead.popleft().result(), pending, submitted, finished)
                while pending:
                    loaded, outcome = pending.popleft()
                    yield finished(loaded, outcome)
            finally:
                for future in ahead:
                    future.cancel()
                for _, outcome in pending:
                    if isinstance(outcome, Future):
                        self.scheduler.cancel(outcome)

    def reuse_cached_product(self, job: LabelJob, loaded: LoadedProduct) -> dict[str, Any] | None:
        """A record from the cache for a product with the same set of photos, if one was labelled."""
        hit = self.cache.get(loaded.digest, job.run.fingerprint)
        return None if hit is None else product_reused(job, loaded, hit.path, hit.record)

    def start_product(
        self, job: LabelJob, loaded: LoadedProduct, key: int = 0, earlier: set[str] | None = None
    ) -> ProductOutcome:
        """What a loaded product needs, for every front end: its record where no model is needed
        (no photo could be read; the same photos are in the cache), else its request, submitted.

        `earlier`, for a run over many products: the digests already sent to the engine; a
        product with the same photos as one of them takes that one's label (SAME_AS_EARLIER).
        RuntimeError when the engine has stopped.
        """
        if not loaded.sent:
            return product_error_record(job, loaded)
        reused = self.reuse_cached_product(job, loaded)
        if reused is not None:
            return reused
        if earlier is not None:
            if loaded.digest in earlier:
                return SAME_AS_EARLIER
            earlier.add(loaded.digest)
        return self.scheduler.submit(product_request(job, key, loaded))

    def shape_product(self, job: LabelJob, loaded: LoadedProduct, generation: Generation) -> dict[str, Any]:
        """The product's record from the model's answer, cached by its set of photos when ok."""
        record = product_record(job, loaded, generation)
        if record["status"] == OK:
            self.cache.put(loaded.digest, job.run.fingerprint, record["product"], record)
        return record

    def _admit_product(
        self,
        job: LabelJob,
        loaded: LoadedProduct,
        pending: deque[tuple[LoadedProduct, ProductOutcome]],
        submitted: set[str],
        finished: Callable[[LoadedProduct, ProductOutcome], dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        """Queue one loaded product (an error, a cached label or a request), then yield what is done, in order."""
        pending.append((loaded, self.start_product(job, loaded, len(pending), submitted)))
        while pending and (len(pending) > self._max_in_flight or _ready(pending[0][1])):
            first, outcome = pending.popleft()
            yield finished(first, outcome)


class _SameAsEarlier:
    """A product whose photos an earlier product of the run has: it takes that product's label."""


SAME_AS_EARLIER = _SameAsEarlier()
ProductOutcome = Future[Generation] | dict[str, Any] | _SameAsEarlier


def _ready(outcome: ProductOutcome) -> bool:
    return not isinstance(outcome, Future) or outcome.done()
