"""The bookkeeping of one `Labeler.label` call: what is loaded, with the engine, waiting for a duplicate, ready."""

from __future__ import annotations

import functools
import queue
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..engine.protocol import Generation
from ..errors import InternalError
from .images import ImageLoadError, LoadedImage
from .records import OK, error_record, reused_record

if TYPE_CHECKING:
    from .labeler import Labeler


class RunLoop:
    """The bookkeeping of one `Labeler.label` call: what is loaded, with the engine, waiting, ready."""

    def __init__(self, labeler: Labeler, shaper: ThreadPoolExecutor, window: int) -> None:
        self.labeler = labeler
        self.shaper = shaper
        self.window = window  # originals finished more than this many records ago are forgotten
        self.ready: dict[int, Future[dict[str, Any]]] = {}
        self.in_flight: dict[int, tuple[str, LoadedImage, Future[Generation]]] = {}
        self.first_with_hash: dict[str, int] = {}
        self.finished_by_hash: dict[str, Future[dict[str, Any]]] = {}
        self.waiting: dict[int, list[tuple[int, str, LoadedImage, str, int]]] = {}
        self.near_in_flight: list[tuple[int, int, bytes]] = []  # (index, phash, colour layout) with the model
        self.near_finished: deque[tuple[int, int, bytes, Future[dict[str, Any]]]] = deque()
        self.recent: deque[tuple[int, str]] = deque()  # (index, sha256) of finished originals, oldest first
        self.completed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.lost = 0
        self.seen = 0
        self.next_out = 0

    @staticmethod
    def done(record: dict[str, Any]) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        future.set_result(record)
        return future

    def reuse(
        self, path: str, image: LoadedImage, source: Future[dict[str, Any]], match: str = "identical", distance: int = 0
    ) -> Future[dict[str, Any]]:
        run = self.labeler.run

        def build() -> dict[str, Any]:  # queued behind the source's own shaping on the single shaper thread
            original = source.result()
            return reused_record(path, run, image, original["path"], original, match, distance)

        return self.shaper.submit(build)

    def admit(self, index: int, path: str, result: LoadedImage | ImageLoadError) -> None:
        """Decide what one loaded path needs: an error record, a reused label, a wait, or the model."""
        lab = self.labeler
        self.seen = index + 1
        if isinstance(result, ImageLoadError):
            record = error_record(path, lab.run, result.kind, str(result), result.sha256, result.identity)
            self.ready[index] = self.done(record)
            return
        reused = lab.reuse_cached(path, result)
        if reused is not None:
            self.ready[index] = self.done(reused)
            return
        if result.sha256 in self.finished_by_hash:  # identical bytes labelled a moment ago
            self.ready[index] = self.reuse(path, result, self.finished_by_hash[result.sha256])
            return
        if result.sha256 in self.first_with_hash:  # identical bytes still with the model
            self.waiting.setdefault(self.first_with_hash[result.sha256], []).append(
                (index, path, result, "identical", 0)
            )
            return
        near = lab.near(result, self.near_in_flight)
        if near is not None:  # a similar photo is with the model: wait for its label
            self.waiting.setdefault(near[0], []).append((index, path, result, "near", near[1]))
            return
        finished = lab.near(result, [(i, h, c) for i, h, c, _ in self.near_finished])
        if finished is not None:
            source = next(f for i, _, _, f in self.near_finished if i == finished[0])
            if source.result()["status"] == OK:
                self.ready[index] = self.reuse(path, result, source, "near", finished[1])
                return  # (a failed original is not reused for another file: it gets its own try)
        self.first_with_hash[result.sha256] = index
        if result.phash is not None and result.colour_layout is not None:
            self.near_in_flight.append((index, result.phash, result.colour_layout))
        try:
            future = lab.scheduler.submit(lab.job.request(index, result))
        except RuntimeError:  # the engine stopped: this path gets no record, and the end of the run says so
            self.lost += 1
            self.first_with_hash.pop(result.sha256, None)
            self.near_in_flight[:] = [e for e in self.near_in_flight if e[0] != index]
            return
        self.in_flight[index] = (path, result, future)
        future.add_done_callback(functools.partial(_report_done, self.completed, index))

    def collect(self, block: bool) -> None:
        """Turn the engine's finished answers into records (shaped on the shaper thread)."""
        while self.in_flight:
            try:
                index = self.completed.get(block=block, timeout=None if block else 0)
            except queue.Empty:
                return
            block = False
            path, image, future = self.in_flight.pop(index)
            self.first_with_hash.pop(image.sha256, None)
            try:
                generation = future.result()
            except (CancelledError, Exception):  # an engine that lost the request: the invariant check says so
                self.lost += 1
                self.near_in_flight[:] = [e for e in self.near_in_flight if e[0] != index]
                self.waiting.pop(index, None)
                continue
            record = self.shaper.submit(self.labeler.shape, path, image, generation)
            self.ready[index] = record
            self.finished_by_hash[image.sha256] = record
            self.recent.append((index, image.sha256))
            for entry in self.near_in_flight:
                if entry[0] == index:
                    self.near_finished.append((*entry, record))
            # No longer with the model: a similar photo arriving later must not wait for it.
            self.near_in_flight[:] = [e for e in self.near_in_flight if e[0] != index]
            for wait_index, dup_path, dup_image, match, distance in self.waiting.pop(index, []):
                self.ready[wait_index] = self.reuse(dup_path, dup_image, record, match, distance)

    def flush(self, block: bool) -> Iterator[dict[str, Any]]:
        while self.next_out in self.ready and (block or self.ready[self.next_out].done()):
            yield self.ready.pop(self.next_out).result()
            self.next_out += 1
        self._forget_old()

    def _forget_old(self) -> None:
        """Originals finished more than `window` records ago are forgotten (the cache still has ok labels)."""
        horizon = self.next_out - self.window
        while self.recent and self.recent[0][0] < horizon:
            _, sha256 = self.recent.popleft()
            self.finished_by_hash.pop(sha256, None)
        while self.near_finished and self.near_finished[0][0] < horizon:
            self.near_finished.popleft()

    def check_complete(self) -> Iterator[dict[str, Any]]:
        if self.next_out == self.seen and not self.waiting and not self.in_flight:
            return
        # Exactly one record per input path is the promise resume, merge and export rely on.
        # Finished records still held for ordering are written first, so no work is lost.
        missing = self.seen - self.next_out - len(self.ready)
        for index in sorted(self.ready):
            yield self.ready.pop(index).result()
        raise InternalError(
            f"{missing} of {self.seen} images read got no record "
            f"({len(self.in_flight) + self.lost} lost by the engine, "
            f"{sum(map(len, self.waiting.values()))} waiting for a duplicate); "
            "the output holds every record written so far and re-running labels the rest"
        )

    def cancel_in_flight(self) -> None:
        """An early stop (Ctrl-C, a closed generator): what the engine still holds is cancelled, its cells freed."""
        for _, _, future in self.in_flight.values():
            self.labeler.scheduler.cancel(future)


def _report_done(completed: queue.SimpleQueue[int], index: int, _future: Future[Generation]) -> None:
    """Called on the engine's thread when a request ends: the labelling thread picks the index up."""
    completed.put(index)
