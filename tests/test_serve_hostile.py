"""`qvl-label serve` against hostile clients: idle and slow connections, DNS rebinding, cross-site posts,
oversized path lists, symbolic link loops, clashing photo names, unbounded grammar caches, bad option values.

Real HTTP on loopback addresses only (127.0.0.0/8): the server is the one the command builds
(`runner.server_config`), over the real engine on the tiny model.
"""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from qvl_label import tinymodel  # noqa: E402
from qvl_label.engine.constraints import CompiledCache  # noqa: E402
from qvl_label.serve.access import Access  # noqa: E402
from qvl_label.serve.connections import ConnectionLimits  # noqa: E402
from qvl_label.serve.runner import server_config  # noqa: E402
from qvl_label.serve.service import LabelService, ServeLimits  # noqa: E402
from qvl_label.settings import LabelSettings  # noqa: E402

from .test_serve import OTHER, PHOTO, VIEWS, LiveServer, _audit, _cli, _service, _wait_for  # noqa: E402

HEADER_TIMEOUT = 1.0
PER_CLIENT = 6
MAX_CONNECTIONS = 20
READ_BUDGET = 400_000  # bytes of --allow-dir files per request: one big photo, not two


def _guarded_server(service: LabelService) -> LiveServer:
    """The command's uvicorn configuration (connection guard, Host and Origin rules) in a thread."""
    connections = ConnectionLimits(
        header_timeout_s=HEADER_TIMEOUT,
        body_idle_s=HEADER_TIMEOUT,
        keep_alive_s=1,
        max_connections=MAX_CONNECTIONS,
        max_per_client=PER_CLIENT,
    )
    access = Access.of(["labels.example"], ["https://shop.example"])
    return LiveServer(service, [], server_config(service, [], connections, access))


@pytest.fixture(scope="module")
def guarded(tiny_model: tinymodel.GeneratedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("hostile")
    allowed = tmp / "allowed"
    allowed.mkdir()
    (allowed / "photo.jpg").write_bytes(PHOTO.read_bytes())
    (allowed / "big1.jpg").write_bytes(OTHER.read_bytes())  # ~300 KB each: two are over READ_BUDGET
    (allowed / "big2.jpg").write_bytes(OTHER.read_bytes())
    (allowed / "loop-a.jpg").symlink_to(allowed / "loop-b.jpg")
    (allowed / "loop-b.jpg").symlink_to(allowed / "loop-a.jpg")
    limits = ServeLimits(
        max_body_bytes=2_000_000, max_images=4, max_queue=16, max_tokens=64, max_read_bytes=READ_BUDGET
    )
    server = _guarded_server(
        _service(tiny_model, tmp, LabelSettings(languages=("en",), max_tokens=24), limits, n_parallel=2)
    )
    yield server
    server.stop()


def _connect(server: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection from this loopback source address (127.0.0.0/8 is all loopback on Linux)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))
    return sock


def _closed_by_server(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing this connection; None if it is still open after `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def _client(source: str) -> Any:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30)


def _reads(server: LiveServer) -> list[str]:
    """Counts the files the service reads from --allow-dir (wraps its reader in place)."""
    folder = server.service.folder
    read: list[str] = []
    original = folder.read

    def counting(relative: str) -> Any:
        read.append(relative)
        return original(relative)

    folder.read = counting  # type: ignore[method-assign]
    return read


# -- connections -------------------------------------------------------------------------------


def test_idle_connections_from_one_client_lock_nobody_out_and_are_closed(guarded: LiveServer) -> None:
    idle = [_connect(guarded) for _ in range(PER_CLIENT + 10)]  # many more than one client may hold
    try:
        refused = [_closed_by_server(s, 5.0) for s in idle[PER_CLIENT:]]
        assert all(r is not None and r.startswith(b"HTTP/1.1 429") for r in refused), refused[:2]
        with _client("127.0.0.2") as other:  # another client is answered while they are held
            assert other.get(guarded.url("/health")).status_code == 200
        started = time.monotonic()
        held = [_closed_by_server(s, HEADER_TIMEOUT + 10) for s in idle[:PER_CLIENT]]
        assert held == [b""] * PER_CLIENT  # closed, silently, for sending no request in time
        assert time.monotonic() - started < HEADER_TIMEOUT + 5
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(guarded.url("/health")).status_code == 200  # the first client is served again
    refusals = [e for e in _audit(guarded) if e["status"] == 429 and e["error"] == "too_many_connections"]
    assert len(refusals) >= 10 and refusals[-1]["client"] == "127.0.0.1"


def test_headers_sent_a_byte_at_a_time_and_stalled_bodies_are_cut_off(guarded: LiveServer) -> None:
    slow = _connect(guarded)
    started = time.monotonic()
    try:
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n":  # never the blank line that ends them
            try:
                slow.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)  # a slow client, not a wait for the server
        assert _closed_by_server(slow, HEADER_TIMEOUT + 10) == b""
        assert time.monotonic() - started < 2 * HEADER_TIMEOUT + 5
    finally:
        slow.close()
    stalled = _connect(guarded)
    try:
        head = b"POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        stalled.sendall(head + b'Content-Length: 100\r\n\r\n{"images": [')
        assert _closed_by_server(stalled, HEADER_TIMEOUT + 10) is not None
    finally:
        stalled.close()
    # the request that waited for the rest of its body ends as 499, once the server sees the close
    _wait_for(lambda: _audit(guarded)[-1]["status"] == 499)
    assert _audit(guarded)[-1]["endpoint"] == "/v1/label"


def test_past_the_total_cap_new_connections_get_503_and_it_is_audited(guarded: LiveServer) -> None:
    sources = [f"127.0.0.{n}" for n in range(10, 10 + MAX_CONNECTIONS // PER_CLIENT + 1)]
    held = [_connect(guarded, source) for source in sources for _ in range(PER_CLIENT)]
    try:
        # All are closed in the end: the ones past the cap at once with a 503, the rest when idle too long.
        replies = [_closed_by_server(s, HEADER_TIMEOUT + 10) for s in held]
        refused = [r for r in replies if r]
        assert refused and all(r.startswith(b"HTTP/1.1 503") for r in refused), refused[:2]
        assert replies.count(b"") <= MAX_CONNECTIONS
    finally:
        for sock in held:
            sock.close()
    assert any(e["status"] == 503 and e["error"] == "too_many_connections" for e in _audit(guarded))


# -- Host and Origin ---------------------------------------------------------------------------


def test_dns_rebinding_host_names_are_refused(guarded: LiveServer) -> None:
    port = guarded.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "a@b"):
        response = httpx.get(guarded.url("/v1/models"), headers={"Host": host})
        assert response.status_code == 403 and response.json()["error"]["type"] == "forbidden", host
        assert httpx.post(guarded.url("/v1/label"), json={"images": []}, headers={"Host": host}).status_code == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", "labels.example", "labels.example:9"):
        assert httpx.get(guarded.url("/v1/models"), headers={"Host": host}).status_code == 200, host
    assert httpx.get(guarded.url("/health"), headers={"Host": f"localhost:{port + 1}"}).status_code == 403
    assert _audit(guarded)[-1]["status"] == 403


def test_cross_site_posts_are_refused_unless_the_origin_is_allowed(guarded: LiveServer) -> None:
    files = [("image", (PHOTO.name, PHOTO.read_bytes(), "image/jpeg"))]
    before = len([e for e in _audit(guarded) if e["status"] == 200])
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": f"http://localhost:{guarded.port + 1}"},
    ):
        response = httpx.post(guarded.url("/v1/label"), files=files, headers=headers, timeout=60)
        assert response.status_code == 403, headers
        assert "access-control-allow-origin" not in response.headers
    assert len([e for e in _audit(guarded) if e["status"] == 200]) == before  # nothing was labelled
    own = {"Origin": f"http://127.0.0.1:{guarded.port}", "Sec-Fetch-Site": "same-origin"}  # the page's own posts
    assert httpx.post(guarded.url("/v1/label"), files=files, headers=own, timeout=60).status_code == 200
    shop = {"Origin": "https://shop.example"}
    preflight = httpx.options(
        guarded.url("/v1/label"), headers={**shop, "Access-Control-Request-Method": "POST"}, timeout=30
    )
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    allowed = httpx.post(guarded.url("/v1/label"), json={"images": []}, headers=shop, timeout=30)
    assert allowed.status_code == 400 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert httpx.get(guarded.url("/health"), headers={"Origin": "http://evil.example"}).status_code == 200


# -- paths, products, refusals -----------------------------------------------------------------


def test_paths_are_counted_and_sized_before_any_is_read(guarded: LiveServer) -> None:
    read = _reads(guarded)
    try:
        too_many = httpx.post(guarded.url("/v1/label"), json={"paths": ["photo.jpg"] * 50}, timeout=30)
        assert too_many.status_code == 413 and "limit is 4" in too_many.json()["error"]["message"]
        form = {"path": ["photo.jpg"] * 50}
        as_form = httpx.post(guarded.url("/v1/label"), data=form, files=[("image", ("x.jpg", b"x"))], timeout=30)
        assert as_form.status_code == 413
        too_big = httpx.post(guarded.url("/v1/label"), json={"paths": ["big1.jpg", "big2.jpg"]}, timeout=30)
        assert too_big.status_code == 413 and str(READ_BUDGET) in too_big.json()["error"]["message"]
        assert read == []  # refused before a byte was read
        one = httpx.post(guarded.url("/v1/label"), json={"paths": ["big1.jpg"]}, timeout=60)
        assert one.status_code == 200 and read == ["big1.jpg"]
    finally:
        del guarded.service.folder.read  # type: ignore[method-assign]
    assert [e["status"] for e in _audit(guarded) if e["endpoint"] == "/v1/label"][-4:-1] == [413, 413, 413]


def test_a_symbolic_link_loop_is_an_unreadable_record(guarded: LiveServer) -> None:
    response = httpx.post(guarded.url("/v1/label"), json={"paths": ["loop-a.jpg", "photo.jpg"]}, timeout=60)
    assert response.status_code == 200, response.text
    loop, photo = response.json()["records"]
    assert loop["path"] == "loop-a.jpg" and loop["status"] == "unreadable"
    assert photo["path"] == "photo.jpg" and photo["status"] != "unreadable"


def test_product_photos_with_one_name_are_all_kept_or_refused_by_name(guarded: LiveServer) -> None:
    back, main = (VIEWS / "mh01-gray_back.jpg").read_bytes(), (VIEWS / "mh01-gray_main.jpg").read_bytes()
    files = [("image", ("same.jpg", back)), ("image", ("same.jpg", main))]
    response = httpx.post(guarded.url("/v1/label"), files=files, data={"product": "P1"}, timeout=60)
    assert response.status_code == 200, response.text
    (record,) = response.json()["records"]
    images = record["images"]
    assert sorted(i["path"] for i in images) == ["1:same.jpg", "2:same.jpg"]
    assert len({i["sha256"] for i in images}) == 2  # both photos, not one twice
    clash = [*files, ("image", ("2:same.jpg", (VIEWS / "mh01-gray_alt1.jpg").read_bytes()))]
    response = httpx.post(guarded.url("/v1/label"), files=clash, data={"product": "P2"}, timeout=60)
    assert response.status_code == 400 and "'2:same.jpg'" in response.json()["error"]["message"]


def test_413_and_500_are_one_json_shape_and_audited(guarded: LiveServer) -> None:
    with _connect(guarded) as sock:  # a body declared over the cap is refused before it is read
        head = "POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall(head.encode() + b"Content-Length: 9999999\r\n\r\n")
        reply = _closed_by_server(sock, 10.0) or b""
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    request_id = re.search(rb"x-request-id: (\w+)", reply).group(1).decode()  # type: ignore[union-attr]
    entry = next(e for e in _audit(guarded) if e["request_id"] == request_id)
    assert entry["status"] == 413 and entry["error"] == "too_large" and entry["endpoint"] == "/v1/label"

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    guarded.service.job_for = broken  # type: ignore[method-assign]
    try:
        failed = httpx.post(guarded.url("/v1/label"), json={"images": ["aGk="]}, timeout=30)
    finally:
        del guarded.service.job_for  # type: ignore[method-assign]
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "internal_error"
    assert "Traceback" not in failed.text and failed.headers["x-request-id"] in failed.json()["error"]["message"]
    entry = next(e for e in _audit(guarded) if e["request_id"] == failed.headers["x-request-id"])
    assert entry["status"] == 500 and entry["error"] == "internal_error"


# -- the grammar cache -------------------------------------------------------------------------


def test_the_compiled_grammar_cache_keeps_the_last_n_schemas() -> None:
    compiled: list[int] = []
    cache: CompiledCache[int] = CompiledCache(size=3)
    for n in [0, 1, 2, 0, 3, 4, 0]:  # 0 is used again each time before it would be the oldest
        cache.get({"maxLength": n}, lambda s: compiled.append(s["maxLength"]) or s["maxLength"])
    assert len(cache) == 3 and compiled == [0, 1, 2, 3, 4]
    cache.get({"maxLength": 1}, lambda s: compiled.append(s["maxLength"]) or 1)
    assert compiled[-1] == 1  # 1 had been dropped: compiled again


def test_distinct_response_formats_do_not_grow_the_server(guarded: LiveServer) -> None:
    constraints = getattr(guarded.service.labeler.engine, "_constraints", None)
    if constraints is None or not hasattr(constraints, "compiled"):
        pytest.skip("this engine keeps no compiled grammars")
    constraints.compiled.size = 2  # the bound, made small enough to pass with a few requests
    image = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    for n in range(5):
        schema = {"type": "object", "properties": {f"k{n}": {"type": "string", "maxLength": 4}}, "required": [f"k{n}"]}
        body = {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "?"}, {"type": "image_url", "image_url": image}]}
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
            "max_tokens": 24,
        }
        assert httpx.post(guarded.url("/v1/chat/completions"), json=body, timeout=60).status_code == 200
        assert len(constraints.compiled) <= 2


# -- the command's options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        ("--max-body-mb", "inf"),
        ("--grace", "inf"),
        ("--grace", "nan"),
        ("--request-timeout", "1e400"),
        ("--max-body-mb", "0"),
        ("--max-read-mb", "-1"),
        ("--header-timeout", "0"),
        ("--max-connections-per-client", "0"),
    ],
    ids=lambda o: "=".join(o),
)
def test_option_values_that_are_not_finite_and_in_range_are_one_line_exit_2(option: tuple[str, str]) -> None:
    result = _cli("serve", "--port", "0", *option)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option[0] in lines[0] and "Traceback" not in result.stderr
