"""The bookkeeping of one `Labeler.label` call: each path's record future, in input order, and what never got one."""

from __future__ import annotations

import functools
import queue
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, Any

from ..errors import InternalError
from .images import ImageLoadError, LoadedImage
from .records import error_record
from .submit import Submitted, done_future

if TYPE_CHECKING:
    from .labeler import Labeler


class RunLoop:
    """The bookkeeping of one `Labeler.label` call over the Labeler's per-item submit path.

    Each readable image goes to `Labeler.submit` (cache, duplicates and similar photos in
    flight, the model, shaping: the path the server and Ray actors take too); this keeps the
    futures in input order and writes records as the oldest ones finish.
    """

    def __init__(self, labeler: Labeler) -> None:
        self.labeler = labeler
        self.owner = object()  # with the input index, tells this run's submissions from any other caller's
        self.ready: dict[int, Future[dict[str, Any]]] = {}  # finished, waiting for their turn
        self.pending: dict[int, Submitted] = {}  # submitted, record not yet set
        self.with_model = 0  # pending ones that wait on their own generation (not on a duplicate's)
        self.completed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.lost = 0
        self.seen = 0
        self.next_out = 0

    def admit(self, index: int, path: str, result: LoadedImage | ImageLoadError) -> None:
        """One loaded path: an error record, or the submitted image's record future."""
        lab = self.labeler
        self.seen = index + 1
        if isinstance(result, ImageLoadError):
            record = error_record(path, lab.run, result.kind, str(result), result.sha256, result.identity)
            self.ready[index] = done_future(record)
            return
        try:
            item = lab.submit((self.owner, index), path, result, reuse_failures=True)
        except RuntimeError:  # the engine stopped: this path gets no record, and the end of the run says so
            self.lost += 1
            return
        self.pending[index] = item
        self.with_model += item.source is None
        item.record.add_done_callback(functools.partial(_report_done, self.completed, index))

    def collect(self, block: bool) -> None:
        """Move the records that are set to `ready` (waiting for one first when `block`)."""
        while self.pending:
            try:
                index = self.completed.get(block=block, timeout=None if block else 0)
            except queue.Empty:
                return
            block = False
            item = self.pending.pop(index)
            self.with_model -= item.source is None
            self.labeler.release(item)
            try:
                item.record.result()
            except (CancelledError, Exception):  # an engine that lost the request: the invariant check says so
                self.lost += 1
                continue
            self.ready[index] = item.record

    def flush(self, block: bool) -> Iterator[dict[str, Any]]:
        while self.next_out in self.ready and (block or self.ready[self.next_out].done()):
            yield self.ready.pop(self.next_out).result()
            self.next_out += 1

    def check_complete(self) -> Iterator[dict[str, Any]]:
        if self.next_out == self.seen and not self.pending:
            return
        # Exactly one record per input path is the promise resume, merge and export rely on.
        # Finished records still held for ordering are written first, so no work is lost.
        missing = self.seen - self.next_out - len(self.ready)
        for index in sorted(self.ready):
            yield self.ready.pop(index).result()
        waiting = len(self.pending) - self.with_model
        raise InternalError(
            f"{missing} of {self.seen} images read got no record "
            f"({self.with_model + self.lost} lost by the engine, {waiting} waiting for a duplicate); "
            "the output holds every record written so far and re-running labels the rest"
        )

    def cancel_in_flight(self) -> None:
        """An early stop (Ctrl-C, a closed generator): what the engine still holds for this run is cancelled."""
        for item in self.pending.values():
            self.labeler.release(item)
        self.pending.clear()


def _report_done(completed: queue.SimpleQueue[int], index: int, _future: Future[dict[str, Any]]) -> None:
    """Called when a path's record is set (on the shaping thread): the labelling thread picks the index up."""
    completed.put(index)
