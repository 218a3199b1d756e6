"""Images one at a time, for every front end: cache reuse, one generation per identical or similar image in flight."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..engine.protocol import Generation
from ..engine.scheduler import Scheduler
from .images import LoadedImage
from .job import LabelJob
from .records import OK, reused_record

Shape = Callable[[str, LoadedImage, Generation, LabelJob], dict[str, Any]]
Reuse = Callable[[str, LoadedImage, LabelJob], "dict[str, Any] | None"]
# The closest similar photo among candidates (id, perceptual hash, colour layout): (id, distance), or None.
Near = Callable[[LoadedImage, list[tuple[int, int, bytes]]], "tuple[int, int] | None"]
Digest = tuple[str, str]  # (the image's sha256, the job's fingerprint)

REMEMBERED = 1024  # failed labels kept for identical bytes of the same batch run (ok ones are in the cache)


@dataclass
class _Shared:
    """One generation that every submission of these bytes, or of a similar photo (for this job), waits on."""

    generation: Future[Generation]
    fingerprint: str
    similar: tuple[int, bytes] | None  # the photo's perceptual hash and colour layout, for near-duplicates
    record: Future[dict[str, Any]] = field(default_factory=Future)
    owner: Hashable = None  # who submitted it first: its record carries that submission's name
    refs: int = 0


@dataclass
class Submitted:
    """A submitted image: `record` is its shaped record under its own name. `source` says whose
    work it reuses: None when it made the label itself, the other submission's owner when it
    waited on that one's generation (or took its label a moment later), or `CACHED` when the
    label came from the cache."""

    record: Future[dict[str, Any]]
    source: Hashable = None
    _shared: _Shared | None = None


CACHED = "cache"


def _cached(record: Future[dict[str, Any]]) -> bool:
    """Whether a shaped record went to the label cache (ok ones do): the cache answers for it then."""
    return bool(record.result()["status"] == OK)


def done_future(record: dict[str, Any]) -> Future[dict[str, Any]]:
    """A record that needs no waiting, as a future like the others."""
    future: Future[dict[str, Any]] = Future()
    future.set_result(record)
    return future


class ItemSubmitter:
    """Thread-safe per-item labelling over the one engine scheduler, for every front end (a batch run,
    the server, a Ray actor): each `submit` returns at once with a future of the image's record;
    `release` says the caller stopped waiting, and a generation nobody waits on any more is
    cancelled (its KV cells freed).
    """

    def __init__(
        self, scheduler: Scheduler, reuse_cached: Reuse, shape: Shape, near: Near | None = None,
        remembered: int = REMEMBERED,
    ) -> None:  # fmt: skip
        self._scheduler = scheduler
        self._reuse_cached = reuse_cached
        self._shape_record = shape
        self._near = near
        self._remembered = remembered
        self._lock = threading.Lock()
        self._shared: dict[Digest, _Shared] = {}  # with the model, oldest first
        self._finished: OrderedDict[Digest, tuple[Hashable, Future[dict[str, Any]]]] = OrderedDict()
        self._shaper = ThreadPoolExecutor(1, thread_name_prefix="qvl-shape-items")

    def submit(
        self, owner: Hashable, name: str, image: LoadedImage, job: LabelJob, reuse_failures: bool = False
    ) -> Submitted:
        """The record for this image: from the cache, from a failed label just made for identical bytes
        (with `reuse_failures`), from the generation of identical bytes or (near-dup on) of a similar
        photo in flight, or a new one.

        `owner` tells submissions apart (a batch run passes its own token and the input index, the
        server its request id and the image's index). A batch run labels identical files once,
        failures too (`reuse_failures`); a server client that sends an image again after a failure
        gets a new try. RuntimeError when the engine has stopped.
        """
        cached = self._reuse_cached(name, image, job)
        if cached is not None:
            return Submitted(done_future(cached), CACHED)
        digest = (image.sha256, job.run.fingerprint)
        match, distance = "identical", 0
        with self._lock:
            finished = self._finished.get(digest) if reuse_failures else None
            if finished is not None:  # a label that did not reach the cache (a failure), made a moment ago
                source, record = finished
                return Submitted(self._reused(record, name, image, job, match, distance), source)
            shared = self._shared.get(digest)
            if shared is None and (found := self._similar_in_flight(image, job)) is not None:
                shared, distance = found
                match = "near"
            if shared is None:
                future = self._scheduler.submit(job.request(0, image))
                layout = image.colour_layout
                similar = None if image.phash is None or layout is None else (image.phash, layout)
                shared = _Shared(future, job.run.fingerprint, similar, owner=owner)
                self._shared[digest] = shared
                future.add_done_callback(lambda _: self._answered(digest, shared, name, image, job))
            shared.refs += 1
        if shared.owner == owner:
            return Submitted(shared.record, None, shared)
        return Submitted(self._reused(shared.record, name, image, job, match, distance), shared.owner, shared)

    def _similar_in_flight(self, image: LoadedImage, job: LabelJob) -> tuple[_Shared, int] | None:
        """The closest similar photo with the model for this job, and its distance (the lock is held)."""
        if self._near is None:
            return None
        waiting = [(s, s.similar) for s in self._shared.values() if s.fingerprint == job.run.fingerprint and s.similar]
        found = self._near(image, [(i, *similar) for i, (_, similar) in enumerate(waiting)])
        return None if found is None else (waiting[found[0]][0], found[1])

    def _reused(
        self, original: Future[dict[str, Any]], name: str, image: LoadedImage, job: LabelJob, match: str, distance: int
    ) -> Future[dict[str, Any]]:
        """A future of the original's record under this image's own name, once the original's is set."""
        mine: Future[dict[str, Any]] = Future()

        def as_mine(done: Future[dict[str, Any]]) -> None:
            if done.cancelled():
                mine.cancel()
            elif done.exception() is not None:
                mine.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                record = done.result()
                mine.set_result(reused_record(name, job.run, image, record["path"], record, match, distance))

        original.add_done_callback(as_mine)
        return mine

    def _answered(self, digest: Digest, shared: _Shared, name: str, image: LoadedImage, job: LabelJob) -> None:
        """On the engine's thread when a generation ends: its shaping is queued on the shaper thread."""
        try:
            self._shaper.submit(self._shape, digest, shared, name, image, job)
        except RuntimeError:  # closed: the Labeler is shutting down and nobody will read the record
            shared.record.cancel()
            self._settle(digest, shared)

    def _shape(self, digest: Digest, shared: _Shared, name: str, image: LoadedImage, job: LabelJob) -> None:
        """On the shaper thread when the engine answers: the record (cached when ok), for every waiter.

        The entry moves to the finished ones only once the record is set (and an ok one cached):
        an identical image submitted meanwhile finds one or the other, never neither."""
        try:
            shared.record.set_result(self._shape_record(name, image, shared.generation.result(), job))
        except CancelledError:
            shared.record.cancel()
        except Exception as exc:  # an engine or shaping failure reaches every waiter as one error
            shared.record.set_exception(exc)
        finally:
            self._settle(digest, shared)

    def _settle(self, digest: Digest, shared: _Shared) -> None:
        """A generation's record is set: it leaves the in-flight ones; a failed label is remembered."""
        with self._lock:
            if self._shared.get(digest) is shared:
                del self._shared[digest]
            if not shared.record.cancelled() and shared.record.exception() is None and not _cached(shared.record):
                self._finished[digest] = (shared.owner, shared.record)
                while len(self._finished) > self._remembered:
                    self._finished.popitem(last=False)

    def release(self, submitted: Submitted) -> None:
        """The caller stops waiting: the generation is cancelled once nobody waits on it."""
        shared = submitted._shared
        if shared is None:
            return
        with self._lock:
            shared.refs -= 1
            abandoned = shared.refs == 0 and not shared.record.done()
        if abandoned:
            self._scheduler.cancel(shared.generation)

    def close(self) -> None:
        self._shaper.shutdown(wait=False, cancel_futures=True)
