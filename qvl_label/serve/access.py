"""Which Host and Origin a request may carry: DNS rebinding and cross-site form posts are refused."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # read-only: a cross-site page cannot read their answers
CORS_METHODS = "GET, POST"
CORS_HEADERS = "authorization, content-type, x-api-key"


@dataclass(frozen=True)
class Access:
    """The Host names a request may use beyond the server's own address, and the origins allowed to post.

    A request's Host must name the address the connection reached (and, on loopback, localhost,
    127.0.0.1 or [::1]) with its port or none (a local proxy's), or one of `hosts` ("name" for any
    port, "name:port", or "*" for any Host at all): a DNS-rebinding page's Host is its own name.
    A state-changing request from a browser must come from the server's own page, or from one of
    `cors_origins`, whose answers then carry CORS headers.
    """

    hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def of(cls, hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> Access:
        return cls(
            tuple(normal_host(h) for h in hosts if h.strip()),
            tuple(o.strip().rstrip("/").lower() for o in cors_origins if o.strip()),
        )

    def host_refusal(self, host: str | None, server: tuple[str, int | None] | None) -> str | None:
        """Why this Host header is refused, or None. No Host at all (HTTP/1.0) is no browser's request."""
        if host is None or "*" in self.hosts:
            return None
        name, port = split_host(host)
        if name is None:
            return f"Host {host!r} is not a host name"
        if name in self.hosts or f"{name}:{port}" in self.hosts:
            return None
        if server is not None:
            address, bound_port = server[0], server[1] or 80
            own = {_bracketed(address)} | (LOOPBACK_NAMES if _is_loopback(address) else set())
            if name in own and port in (None, bound_port):
                return None
        return f"Host {host!r} is not this server's address (start it with --allow-host NAME to accept it)"

    def origin_refusal(self, method: str, origin: str | None, fetch_site: str | None, host: str | None) -> str | None:
        """Why a browser's cross-site request is refused, or None (same origin, an allowed origin, or no browser)."""
        if method in SAFE_METHODS:
            return None
        if origin is not None:
            origin = origin.strip().rstrip("/").lower()
            if origin in self.cors_origins or (host is not None and origin == f"http://{host.lower()}"):
                return None
            return f"cross-site request from {origin!r} refused (start the server with --cors-origin to allow it)"
        if fetch_site is not None and fetch_site.strip().lower() not in {"same-origin", "none"}:
            return f"{fetch_site.strip().lower()} request refused (Sec-Fetch-Site)"
        return None

    def cors_origin(self, origin: str | None) -> str | None:
        """The origin to echo in Access-Control-Allow-Origin, when it is one the server allows."""
        if origin is None:
            return None
        normal = origin.strip().rstrip("/").lower()
        return origin.strip() if normal in self.cors_origins else None


def split_host(host: str) -> tuple[str | None, int | None]:
    """(lower-case name, port or None) of a Host header value; the name is None when it is malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name += "]"
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    elif host.count(":") == 1:
        name, _, port_text = host.partition(":")
    else:
        name, port_text = host, ""
    name = name.rstrip(".")
    if not name or (port_text and not port_text.isdigit()) or any(c in name for c in "/@ \t"):
        return None, None
    return name, int(port_text) if port_text else None


def normal_host(host: str) -> str:
    name, port = split_host(host)
    if name is None:
        return host.strip().lower()
    return f"{name}:{port}" if ":" in host.strip().lstrip("[").split("]")[-1] else name


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"
