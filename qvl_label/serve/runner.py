"""Runs the app on uvicorn: binds the socket itself (a taken port is one clear error), stops gracefully on a signal."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Callable

import uvicorn

from ..errors import UsageError
from .access import Access
from .app import create_app
from .audit import Caller, new_request_id
from .connections import ConnectionGuard, ConnectionLimits, guarded_protocol
from .service import LabelService

SWITCH_INTERVAL_S = 0.0005
DEFAULT_CONNECTIONS = ConnectionLimits()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket; a UsageError (one line, exit 2) when the address is taken or unknown."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _ignore(signum: int, frame: object) -> None:
    """What runs after uvicorn's graceful stop re-raises the signal it caught: nothing (exit 0)."""


def server_config(
    service: LabelService,
    api_keys: list[str],
    connections: ConnectionLimits = DEFAULT_CONNECTIONS,
    access: Access | None = None,
    grace_s: float = 30.0,
    debug: bool = False,
) -> uvicorn.Config:
    """The uvicorn configuration the command serves with (tests serve the same one)."""

    def refused(client: str, status: int, kind: str) -> None:
        # A connection turned away before any request: audited as a refusal of no endpoint.
        service.audit_refusal(Caller(new_request_id(), client, None), "", status, kind)

    guard = ConnectionGuard(connections, refused)
    return uvicorn.Config(
        create_app(service, api_keys, debug=debug, access=access),
        http=guarded_protocol(guard),  # h11 with header and body timeouts and per-client caps
        ws="none",  # no WebSocket routes; an upgrade would hand the socket to a protocol without the guard
        log_config=None,
        timeout_graceful_shutdown=max(0, round(grace_s)),
        h11_max_incomplete_event_size=64 * 1024,  # header block cap: a huge header is a 400
        limit_concurrency=None,  # the guard caps connections; uvicorn's cap counted idle ones and went unaudited
        timeout_keep_alive=max(1, round(connections.keep_alive_s)),
        server_header=False,
    )


def serve(
    service: LabelService,
    sock: socket.socket,
    api_keys: list[str],
    grace_s: float,
    debug: bool,
    announce: Callable[[str], None],
    connections: ConnectionLimits = DEFAULT_CONNECTIONS,
    access: Access | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM: stop accepting, let in-flight requests finish within the grace
    period (then cancel them), return normally."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s", force=True)
    # The engine thread gives up the interpreter lock for every llama.cpp call and must take it
    # back; with the event loop and request threads busy it could wait up to Python's default
    # 5 ms switch interval each time, longer than a small model's whole decode step.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = uvicorn.Server(server_config(service, api_keys, connections, access, grace_s, debug))
    host, port = sock.getsockname()[:2]
    announce(f"serving on http://{host if ':' not in host else f'[{host}]'}:{port}  (Ctrl-C or SIGTERM stops)")
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
