"""Connection limits uvicorn lacks: a header-read deadline, a body idle timeout, and caps per client and in all."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# Written straight to the socket: no request was parsed, so no ASGI app can answer.
_REFUSAL = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0  # from the connection (or the last answer) to a request's complete headers
    body_idle_s: float = 30.0  # longest silence while a request's body is still arriving
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this long
    max_connections: int = 1024  # open connections in all; beyond it new ones get 503 and are closed
    max_per_client: int = 32  # open connections from one client address; beyond it 429 and closed


Refused = Callable[[str, int, str], None]  # (client address, status, error type): the audit hook


class ConnectionGuard:
    """What every connection of one server shares: the count of open connections per client address."""

    def __init__(self, limits: ConnectionLimits, on_refused: Refused | None = None) -> None:
        self.limits = limits
        self.on_refused = on_refused
        self.per_client: Counter[str] = Counter()

    def admit(self, client: str, open_connections: int) -> tuple[int, str, str] | None:
        """None when the connection may stay; else (status, error type, message) for its refusal."""
        if open_connections > self.limits.max_connections:
            return 503, "too_many_connections", f"the server holds {self.limits.max_connections} connections"
        if self.per_client[client] >= self.limits.max_per_client:
            return 429, "too_many_connections", f"at most {self.limits.max_per_client} connections per client"
        self.per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the guard's limits; give it as `uvicorn.Config(http=...)`.

    uvicorn arms its keep-alive timer only after a response, so a connection that never
    sends a complete request is held forever, and its `limit_concurrency` counts idle
    connections: a few thousand silent sockets from one client shut everyone out. Here
    every connection must finish its headers in time, may not stall mid-body, and one
    client address holds at most `max_per_client` of them.
    """
    limits = guard.limits

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._counted: str | None = None
            self._header_timer: asyncio.TimerHandle | None = None
            self._body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            client = self.client[0] if self.client else ""
            refusal = guard.admit(client, len(self.connections))
            if refusal is not None:
                status, kind, message = refusal
                self._refuse(status, kind, message)
                if guard.on_refused is not None:
                    guard.on_refused(client, status, kind)
                return
            self._counted = client
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._counted is not None:
                guard.release(self._counted)
                self._counted = None
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                self._cancel_timers()
                return
            state = self.conn.their_state
            if state is not h11.IDLE and self._header_timer is not None:
                self._header_timer.cancel()  # the headers are in
                self._header_timer = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if state is h11.SEND_BODY:
                self._body_timer = self.loop.call_later(limits.body_idle_s, self._body_stalled)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # answered early (a 413) while the body still arrives: its idle timer keeps running
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            self._arm_header_timer()  # the next request on this connection has the same deadline

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._close_slow)

        def _cancel_timers(self) -> None:
            for timer in (self._header_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._body_timer = None

        def _close_slow(self) -> None:
            """No complete request headers in time: close (a client never sent one, or sends them a byte at a time)."""
            self._header_timer = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self.transport.close()

        def _body_stalled(self) -> None:
            """The body stopped arriving; while uvicorn itself paused reading, the silence is ours, not theirs."""
            self._body_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
                return
            if self.flow.read_paused:
                self._body_timer = self.loop.call_later(limits.body_idle_s, self._body_stalled)
                return
            self.transport.close()  # the app's receive() sees a disconnect: a 499 for the request

        def _refuse(self, status: int, kind: str, message: str) -> None:
            body = b'{"error":{"type":"%s","message":"%s"}}' % (kind.encode(), message.encode())
            phrase = b"Too Many Requests" if status == 429 else b"Service Unavailable"
            self.transport.write(_REFUSAL % (status, phrase, len(body), body))
            self.transport.close()

    return GuardedH11Protocol
