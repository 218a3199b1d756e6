"""Images one at a time from concurrent callers: cache reuse, one generation per identical image in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..engine.protocol import Generation
from ..engine.scheduler import Scheduler
from .images import LoadedImage
from .job import LabelJob
from .records import reused_record

Shape = Callable[[str, LoadedImage, Generation, LabelJob], dict[str, Any]]
Reuse = Callable[[str, LoadedImage, LabelJob], "dict[str, Any] | None"]


@dataclass
class _Shared:
    """One generation that every submission of these bytes (for this job) waits on."""

    generation: Future[Generation]
    record: Future[dict[str, Any]] = field(default_factory=Future)
    owner: Hashable = None  # who submitted it first: its record carries that submission's name
    refs: int = 0


@dataclass
class Submitted:
    """A submitted image: `record` is its shaped record under its own name. `source` says whose
    work it reuses: None when it made the label itself, the other submission's owner when it
    waited on that one's generation, or `CACHED` when the label came from the cache."""

    record: Future[dict[str, Any]]
    source: Hashable = None
    _shared: _Shared | None = None


CACHED = "cache"


class ItemSubmitter:
    """Thread-safe per-item labelling over the one engine scheduler, for callers that label images
    as they arrive (the server): each `submit` returns at once with a future; `release` says the
    caller stopped waiting, and a generation nobody waits on any more is cancelled (its KV cells freed).
    """

    def __init__(self, scheduler: Scheduler, reuse_cached: Reuse, shape: Shape) -> None:
        self._scheduler = scheduler
        self._reuse_cached = reuse_cached
        self._shape_record = shape
        self._lock = threading.Lock()
        self._shared: dict[tuple[str, str], _Shared] = {}
        self._shaper = ThreadPoolExecutor(1, thread_name_prefix="qvl-shape-items")

    def submit(self, owner: Hashable, name: str, image: LoadedImage, job: LabelJob) -> Submitted:
        """The record for these bytes: from the cache, from a generation already in flight, or a new one.

        `owner` tells submissions apart (the server passes its request id and the image's index).
        RuntimeError when the engine has stopped.
        """
        cached = self._reuse_cached(name, image, job)
        if cached is not None:
            done: Future[dict[str, Any]] = Future()
            done.set_result(cached)
            return Submitted(done, CACHED)
        key = (image.sha256, job.run.fingerprint)
        with self._lock:
            shared = self._shared.get(key)
            if shared is None:
                future = self._scheduler.submit(job.request(0, image))
                shared = _Shared(generation=future, owner=owner)
                self._shared[key] = shared
                future.add_done_callback(lambda _: self._shaper.submit(self._shape, key, shared, name, image, job))
            shared.refs += 1
        if shared.owner == owner:
            return Submitted(shared.record, None, shared)
        mine: Future[dict[str, Any]] = Future()

        def as_mine(original: Future[dict[str, Any]]) -> None:
            if original.cancelled():
                mine.cancel()
            elif original.exception() is not None:
                mine.set_exception(original.exception())  # type: ignore[arg-type]
            else:
                record = original.result()
                mine.set_result(reused_record(name, job.run, image, record["path"], record))

        shared.record.add_done_callback(as_mine)
        return Submitted(mine, shared.owner, shared)

    def _shape(self, key: tuple[str, str], shared: _Shared, name: str, image: LoadedImage, job: LabelJob) -> None:
        """On the shaper thread when the engine answers: the record (cached when ok), for every waiter.

        The entry is dropped only once the record is set (and an ok one cached): an identical
        image submitted meanwhile finds one or the other, never neither."""
        try:
            shared.record.set_result(self._shape_record(name, image, shared.generation.result(), job))
        except CancelledError:
            shared.record.cancel()
        except Exception as exc:  # an engine or shaping failure reaches every waiter as one error
            shared.record.set_exception(exc)
        finally:
            with self._lock:
                if self._shared.get(key) is shared:
                    del self._shared[key]

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
