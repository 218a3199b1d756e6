"""Streamed chat answers: the text the engine adds at each step, sent at once as Server-Sent Events."""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from ..engine.protocol import Generation
from ..pipeline.images import LoadedImage
from .audit import Caller
from .chat import Answer, ChatRequest, ChunkFormat, cut_at_stop
from .errors import ClientGone, ServeError
from .service import LabelService, UntilGone

Completion = asyncio.Task[tuple[Generation, LoadedImage]]
ENDPOINT = "/v1/chat/completions"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class TextFeed:
    """The engine thread's bytes, decoded on the event loop as they come; None once the generation is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def on_text(self, piece: bytes) -> None:
        """The engine's hook, on its thread. Raises RuntimeError once the loop is closed: the engine
        then ends this sequence alone."""
        self._loop.call_soon_threadsafe(self._decode, piece)

    def _decode(self, piece: bytes, final: bool = False) -> None:
        text = self._decoder.decode(piece, final)  # a character split between steps waits for its last byte
        if text:
            self._queue.put_nowait(text)

    def end(self, task: Completion) -> None:
        """The completion's task is done. Its text came first: the engine called on_text before it
        answered, and both reach the loop through call_soon_threadsafe, in order."""
        if not task.cancelled():
            task.exception()  # retrieved here, so a client gone mid-stream is not logged as a lost error
        self._decode(b"", final=True)  # an unfinished character, replaced as the whole answer's decoding does
        self._queue.put_nowait(None)

    async def next(self) -> str | None:
        return await self._queue.get()


class StopScanner:
    """The streamed text that is safe to send: a tail that could be the start of a stop sequence is
    held back, and the text ends before the first stop. What it sends, in all, is what `cut_at_stop`
    keeps of the whole answer."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        buffer = self.held + text
        cut, found = cut_at_stop(buffer, self.stops)
        unfinished = self._unfinished_start(buffer)
        if found and unfinished >= len(cut):  # no stop that starts earlier could still complete
            self.stopped, self.held = True, ""
            return cut
        self.held = buffer[unfinished:]
        return buffer[:unfinished]

    def flush(self) -> str:
        """The generation ended: what was held back, cut at a stop it holds."""
        if self.stopped:
            return ""
        text, self.stopped = cut_at_stop(self.held, self.stops)
        self.held = ""
        return text

    def _unfinished_start(self, buffer: str) -> int:
        """Where the earliest tail of `buffer` begins that is the start, not the whole, of a stop sequence."""
        longest = max((len(s) for s in self.stops), default=0)
        for start in range(max(0, len(buffer) - longest + 1), len(buffer)):
            tail = buffer[start:]
            if any(len(tail) < len(s) and s.startswith(tail) for s in self.stops):
                return start
        return len(buffer)


async def stream_chat(
    service: LabelService, asked: ChatRequest, who: Caller, until_gone: UntilGone
) -> StreamingResponse:
    """The answer as it is generated. The response starts with the first text (or the end of the
    generation): a failure before it is a normal JSON error with its status."""
    feed = TextFeed(asyncio.get_running_loop())
    task: Completion = asyncio.ensure_future(
        service.complete(
            asked.image, asked.prompt, asked.schema, asked.max_tokens, asked.temperature, who, until_gone, feed.on_text
        )
    )
    task.add_done_callback(feed.end)
    try:
        first = await feed.next()
    except BaseException:  # this handler was cancelled (the server stops): so is the generation
        task.cancel()
        raise
    if first is None:
        task.result()  # raises what ended the request before any text
    chunks = ChunkFormat(f"chatcmpl-{who.request_id}", service.model_name, int(time.time()), asked.include_usage)
    events = _events(service, asked, who, task, feed, first, chunks)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(
    service: LabelService,
    asked: ChatRequest,
    who: Caller,
    task: Completion,
    feed: TextFeed,
    first: str | None,
    chunks: ChunkFormat,
) -> AsyncIterator[bytes]:
    scanner = StopScanner(asked.stop)
    try:
        yield chunks.role()
        text = first
        while text is not None:
            if sendable := scanner.feed(text):
                yield chunks.content(sendable)
            text = await feed.next()
        if tail := scanner.flush():
            yield chunks.content(tail)
        try:
            generation, _ = task.result()
        except ServeError as exc:  # the status line is sent: the failure is the stream's last event
            service.audit_refusal(who, ENDPOINT, exc.status, exc.type)
            if not isinstance(exc, ClientGone):  # else nobody reads it
                yield chunks.error(exc.type, str(exc))
            return
        for chunk in chunks.finish(Answer.of(who.request_id, service.model_name, generation, asked.stop)):
            yield chunk
    finally:
        if not task.done():  # the client left mid-stream: the engine ends the sequence and frees its slot
            task.cancel()
            service.audit_refusal(who, ENDPOINT, ClientGone.status, ClientGone.type)
