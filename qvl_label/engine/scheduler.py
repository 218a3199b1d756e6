"""The engine's one driver: a thread that owns the model and serves `submit(request) -> Future` from many producers."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future

from .protocol import IDLE, Engine, EngineInfo, Generation, GenerationRequest, Idle


class SchedulerClosed(RuntimeError):
    """submit() after close()."""


class Scheduler:
    """One thread drives the engine (llama.cpp's context is not shared between threads).

    Requests from any thread join one continuous batch: a request waits in a queue until a
    sequence slot and context room are free, and a finished sequence's slot takes the next
    one at once, whoever submitted it. `cancel` stops a request (a running one frees its KV
    cells at the next step); `close` drains or cancels what is left, then stops the thread.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, GenerationRequest]] = deque()
        self._futures: dict[int, tuple[int, Future[Generation]]] = {}  # internal key -> (caller key, future)
        self._keys = itertools.count()
        self._outstanding = 0  # requests the engine holds (started or waiting for room)
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="qvl-engine", daemon=True)
        self._thread.start()

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    def load(self) -> tuple[int, int]:
        """(requests waiting in the queue, requests the engine holds): for a server's metrics."""
        with self._cond:
            return len(self._queue), self._outstanding

    def submit(self, request: GenerationRequest) -> Future[Generation]:
        """Thread-safe. The future's result is the Generation, with the request's own key."""
        future: Future[Generation] = Future()
        with self._cond:
            if self._closing:
                raise SchedulerClosed("the engine is closed")
            if self._error is not None:
                raise RuntimeError(f"the engine stopped: {self._error}") from self._error
            key = next(self._keys)
            self._futures[key] = (request.key, future)
            self._queue.append((key, dataclasses.replace(request, key=key)))
            self._cond.notify_all()
        return future

    def cancel(self, future: Future[Generation]) -> None:
        """Thread-safe: a waiting request is dropped, a running one ends at the next step and frees its cells."""
        if future.cancel():  # still waiting in our queue: it never reaches the engine
            with self._cond:
                self._queue = deque(item for item in self._queue if not self._is(item[0], future))
            return
        with self._cond:
            key = next((k for k, (_, f) in self._futures.items() if f is future), None)
        if key is not None:
            self.engine.cancel(key)

    def _is(self, key: int, future: Future[Generation]) -> bool:
        entry = self._futures.get(key)
        if entry is not None and entry[1] is future:
            del self._futures[key]
            return True
        return False

    def close(self, drain: bool = False) -> None:
        """Stop the thread: with drain, after every submitted request is answered; else cancel them first."""
        with self._cond:
            self._closing = True
            if not drain:
                for key, _request in self._queue:
                    entry = self._futures.pop(key, None)
                    if entry is not None:
                        entry[1].cancel()
                self._queue.clear()
                for key in list(self._futures):
                    self.engine.cancel(key)
            self._cond.notify_all()
        self._thread.join()

    # -- the scheduler thread ------------------------------------------------------------------

    def _requests(self) -> Iterator[GenerationRequest | Idle]:
        while True:
            with self._cond:
                while not self._queue and not self._closing and self._outstanding == 0:
                    self._cond.wait()
                if self._queue:
                    key, request = self._queue.popleft()
                    entry = self._futures.get(key)
                    if entry is None or not entry[1].set_running_or_notify_cancel():
                        self._futures.pop(key, None)
                        continue  # cancelled while it waited
                    self._outstanding += 1
                elif self._closing and self._outstanding == 0:
                    return
                else:
                    request = None
            yield request if request is not None else IDLE  # outside the lock: the engine decodes now

    def _run(self) -> None:
        try:
            for generation in self.engine.generate(self._requests()):
                with self._cond:
                    self._outstanding -= 1
                    entry = self._futures.pop(generation.key, None)
                if entry is None:
                    continue
                caller_key, future = entry
                if generation.finish_reason == "cancelled":
                    future.set_exception(CancelledError())
                else:
                    future.set_result(dataclasses.replace(generation, key=caller_key))
            # The engine returns only when the request stream ends (close); anything still open
            # then was never answered.
            self._fail_open(RuntimeError("the engine stopped without answering this request"))
        except BaseException as exc:  # the engine broke: every waiting producer learns it
            self._fail_open(exc)

    def _fail_open(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            entries = list(self._futures.values())
            self._futures.clear()
            self._queue.clear()
            self._cond.notify_all()
        for _, future in entries:
            if not future.done():
                future.set_exception(exc)
