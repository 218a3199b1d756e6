"""`qvl-label serve`: the real engine on the tiny model behind real HTTP on a loopback port."""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from qvl_label import tinymodel  # noqa: E402
from qvl_label.pipeline.labeler import Labeler  # noqa: E402
from qvl_label.serve.app import create_app, key_id  # noqa: E402
from qvl_label.serve.audit import AuditLog  # noqa: E402
from qvl_label.serve.runner import bind  # noqa: E402
from qvl_label.serve.service import LabelService, ServeLimits  # noqa: E402
from qvl_label.settings import EngineSettings, LabelSettings, ProductSettings, Settings  # noqa: E402

from .conftest import AWKWARD, PRODUCTS  # noqa: E402

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
PHOTO = PRODUCTS / "Arla-Standard-Milk_Iconic.jpg"
OTHER = PRODUCTS / "wb04-blue-0.jpg"


class LiveServer:
    """uvicorn in a thread on a port the OS picked, with the app the CLI builds (or a whole given configuration)."""

    def __init__(self, service: LabelService, keys: list[str], config: uvicorn.Config | None = None) -> None:
        self.service = service
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        if config is None:
            config = uvicorn.Config(
                create_app(service, keys), log_config=None, access_log=False, h11_max_incomplete_event_size=64 * 1024
            )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()
        self.service.labeler.close()


def _service(
    model: tinymodel.GeneratedModel, tmp: Path, label: LabelSettings, limits: ServeLimits, **engine: object
) -> LabelService:
    settings = Settings(
        engine=EngineSettings(
            model_path=model.model, mmproj_path=model.mmproj, image_min_tokens=8, image_max_tokens=64, **engine
        ),  # type: ignore[arg-type]
        label=label,
        product=ProductSettings(max_tokens=192, max_photos=3),
    )
    labeler = Labeler(settings, variants=[LabelSettings(languages=("zh", "en"), channel="taobao")])
    return LabelService(labeler, limits, AuditLog(tmp / "audit.jsonl"), allow_dir=tmp / "allowed")


@pytest.fixture(scope="module")
def live(tiny_model: tinymodel.GeneratedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("serve")
    allowed = tmp / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "photo.jpg").write_bytes(OTHER.read_bytes())
    (tmp / "outside.jpg").write_bytes(PHOTO.read_bytes())
    (allowed / "escape.jpg").symlink_to(tmp / "outside.jpg")
    limits = ServeLimits(max_body_bytes=2_000_000, max_images=4, max_queue=16, max_tokens=256)
    server = LiveServer(_service(tiny_model, tmp, LabelSettings(languages=("zh", "en")), limits, n_parallel=2), [KEY])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow(tiny_model: tinymodel.GeneratedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Every answer runs 30,000 tokens (end of text banned): long enough to leave, time out or queue behind."""
    tmp = tmp_path_factory.mktemp("slow")
    (tmp / "allowed").mkdir()
    limits = ServeLimits(max_queue=1, request_timeout_s=2.0)
    label = LabelSettings(question="Describe the product.", max_tokens=30000)
    server = LiveServer(_service(tiny_model, tmp, label, limits, n_parallel=1, ignore_eos=True), [])
    yield server
    server.stop()


def _metric(server: LiveServer, name: str, headers: dict[str, str] | None = None) -> float:
    text = httpx.get(server.url("/metrics"), headers=headers or {}).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _audit(server: LiveServer) -> list[dict]:
    path = Path(server.service.audit._stream.name)  # type: ignore[union-attr]
    server.service.audit._stream.flush()  # type: ignore[union-attr]
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _still_serving(server: LiveServer) -> None:
    assert httpx.get(server.url("/health")).json()["status"] == "ok"


# -- the API -----------------------------------------------------------------------------------


def test_label_answers_batch_records_in_order_with_per_image_statuses(live: LiveServer) -> None:
    files = [
        ("image", (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")),
        ("image", ("empty.jpg", b"", "image/jpeg")),
        ("image", ("notes.jpg", b"this is text, not a photo", "image/jpeg")),
        ("image", (OTHER.name, OTHER.read_bytes(), "image/jpeg")),
    ]
    response = httpx.post(live.url("/v1/label"), files=files, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    records = body["records"]
    assert [r["path"] for r in records] == [PHOTO.name, "empty.jpg", "notes.jpg", OTHER.name]
    assert [r["status"] for r in records][1:3] == ["empty_file", "not_an_image"]
    for record in (records[0], records[3]):  # the model ran: a label, or its answer kept as data
        assert record["languages"] == ["zh", "en"] and record["tokens"]["completion"] > 0
        assert (record["status"] == "ok") == (record["label"] is not None)
    assert response.headers["x-request-id"] == body["request_id"]


def test_json_images_options_and_reuse_across_requests(live: LiveServer) -> None:
    encoded = base64.b64encode(OTHER.read_bytes()).decode()
    payload = {
        "images": [f"data:image/jpeg;base64,{encoded}", {"name": "again.jpg", "data": encoded}],
        "lang": "en",
        "channel": "taobao",
        "strict": True,
    }
    first = httpx.post(live.url("/v1/label"), json=payload, headers=AUTH, timeout=60).json()["records"]
    assert [r["path"] for r in first] == ["image-1", "again.jpg"]
    assert all(r["languages"] == ["en"] for r in first)
    assert first[0]["duplicate_of"] is None or first[0]["duplicate_of"]["path"] != "image-1"
    assert first[1]["duplicate_of"]["path"] == first[0]["path"]  # the same bytes, labelled once
    second = httpx.post(live.url("/v1/label"), json=payload, headers=AUTH, timeout=60).json()["records"]
    if first[0]["status"] == "ok":  # the label cache holds ok labels: the next request reuses them
        assert second[0]["duplicate_of"] is not None and second[0]["label"] == first[0]["label"]
    assert (
        first[0]["run"]
        != httpx.post(live.url("/v1/label"), json={**payload, "lang": "zh"}, headers=AUTH, timeout=60).json()[
            "records"
        ][0]["run"]
    )  # another language is another label


def test_a_request_may_ask_a_question_instead(live: LiveServer) -> None:
    files = [("image", (PHOTO.name, PHOTO.read_bytes()))]
    response = httpx.post(live.url("/v1/label"), files=files, data={"prompt": "What colour?"}, headers=AUTH, timeout=60)
    (record,) = response.json()["records"]
    assert record["prompt_version"] == "question-1" and record["languages"] == [] and record["label"] is None
    assert record["tokens"]["completion"] > 0


def test_the_same_photo_in_two_requests_at_once_is_labelled_once(live: LiveServer) -> None:
    data = OTHER.read_bytes() + b"two-requests"  # bytes no other test sent: nothing cached
    before = _metric(live, 'qvl_tokens_total{kind="completion"}', AUTH)
    answers: list[dict] = []

    def send(name: str) -> None:
        files = [("image", (name, data))]
        answers.append(httpx.post(live.url("/v1/label"), files=files, headers=AUTH, timeout=60).json()["records"][0])

    threads = [threading.Thread(target=send, args=(name,)) for name in ("first.jpg", "second.jpg")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (labelled,) = [r for r in answers if r["duplicate_of"] is None]
    (reused,) = [r for r in answers if r["duplicate_of"] is not None]
    assert reused["duplicate_of"]["path"] is None  # the other request's file name is not this client's to see
    assert reused["status"] == labelled["status"]
    after = _metric(live, 'qvl_tokens_total{kind="completion"}', AUTH)
    assert after - before == labelled["tokens"]["completion"]  # one generation for both requests


@pytest.mark.parametrize(
    ("payload", "status", "kind"),
    [
        ({"images": ["%%%"]}, 400, "invalid_request"),
        ({"images": ["https://example.com/a.jpg"]}, 400, "invalid_request"),
        ({"images": []}, 400, "invalid_request"),
        ({"images": ["aGk="], "lang": "xx"}, 422, "unprocessable"),
        ({"images": ["aGk="], "channel": "ebay"}, 422, "unprocessable"),
        ({"images": ["aGk="], "strict": "maybe"}, 400, "invalid_request"),
        ({"images": ["aGk="] * 5}, 413, "too_large"),
        ({"paths": ["sub/photo.jpg"], "lang": "zh,en,ja,de,fr,es,ko"}, 422, "unprocessable"),
        ({"images": ["aGk="], "prompt": "x" * 2001}, 422, "unprocessable"),
    ],
)
def test_bad_requests_are_one_json_shape(live: LiveServer, payload: dict, status: int, kind: str) -> None:
    response = httpx.post(live.url("/v1/label"), json=payload, headers=AUTH, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and error["message"] and "Traceback" not in response.text


def test_keys_guard_everything_but_health_and_the_page(live: LiveServer) -> None:
    assert httpx.get(live.url("/health")).status_code == 200
    assert httpx.get(live.url("/")).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": KEY + "x"}):
        response = httpx.get(live.url("/v1/models"), headers=headers)
        assert response.status_code == 401 and response.json()["error"]["type"] == "unauthorized"
    assert httpx.get(live.url("/v1/models"), headers={"X-Api-Key": KEY}).status_code == 200
    assert httpx.get(live.url("/metrics"), headers=AUTH).status_code == 200
    assert httpx.post(live.url("/v1/label"), json={"images": []}).status_code == 401
    refused = [e for e in _audit(live) if e["status"] == 401]
    assert refused and refused[-1]["api_key_id"] is None and refused[-1]["client"] == "127.0.0.1"


def test_models_and_metrics(live: LiveServer) -> None:
    model = httpx.get(live.url("/v1/models"), headers=AUTH).json()["data"][0]
    assert model["languages"] == ["zh", "en"] and "taobao" in model["channels"]
    assert model["engine"]["parallel"] == 2
    httpx.post(live.url("/v1/label"), files=[("image", ("x.jpg", PHOTO.read_bytes()))], headers=AUTH, timeout=60)
    text = httpx.get(live.url("/metrics"), headers=AUTH).text
    assert re.search(r'^qvl_requests_total\{endpoint="/v1/label",status="200"\} [1-9]', text, re.M)
    assert re.search(r'^qvl_images_total\{status="\w+"\} [1-9]', text, re.M)
    assert re.search(r'^qvl_tokens_total\{kind="completion"\} [1-9]', text, re.M)
    for gauge in ("qvl_queue_images", "qvl_engine_occupancy", "qvl_images_per_second", "qvl_engine_parallel"):
        assert re.search(rf"^# TYPE {gauge} gauge$", text, re.M)
    assert _metric(live, "qvl_engine_parallel", AUTH) == 2


def test_audit_log_has_one_line_per_request_and_no_image_bytes(live: LiveServer) -> None:
    response = httpx.post(
        live.url("/v1/label"), files=[("image", ("a.jpg", OTHER.read_bytes()))], headers=AUTH, timeout=60
    )
    request_id = response.json()["request_id"]
    entries = _audit(live)
    entry = next(e for e in entries if e["request_id"] == request_id)
    assert entry["api_key_id"] == key_id(KEY) and entry["client"] == "127.0.0.1"
    assert entry["images"][0]["sha256"] == response.json()["records"][0]["sha256"]
    assert set(entry["images"][0]) == {"name", "sha256", "status", "reused", "compliance_flags"}
    assert "timings_ms" in entry and entry["endpoint"] == "/v1/label"
    refused = httpx.post(live.url("/v1/label"), content=b"x", headers={**AUTH, "Content-Type": "text/plain"})
    entry = next(e for e in _audit(live) if e["request_id"] == refused.headers["x-request-id"])
    assert entry["status"] == 415 and entry["error"] == "unsupported_media_type" and entry["api_key_id"] == key_id(KEY)
    raw = Path(live.service.audit._stream.name).read_bytes()  # type: ignore[union-attr]
    assert base64.b64encode(OTHER.read_bytes()[:30]) not in raw and len(raw) < 200 * len(entries) + 100_000


# -- chat completions --------------------------------------------------------------------------


def _chat(live: LiveServer, **extra: object) -> httpx.Response:
    image = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    body = {
        "model": "qvl-label",
        "messages": [
            {"role": "system", "content": "You label products."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Title?"}, {"type": "image_url", "image_url": {"url": image}}],
            },
        ],
        **extra,
    }
    return httpx.post(live.url("/v1/chat/completions"), json=body, headers=AUTH, timeout=60)


def test_chat_completions_openai_subset_with_a_json_schema(live: LiveServer) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 20}},
        "required": ["title"],
        "additionalProperties": False,
    }
    response = _chat(live, response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    answer = json.loads(body["choices"][0]["message"]["content"])  # the grammar held the random model to it
    assert set(answer) == {"title"} and len(answer["title"]) <= 20
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    short = _chat(live, max_tokens=3, temperature=0.7).json()
    assert short["usage"]["completion_tokens"] <= 3 and short["choices"][0]["finish_reason"] in {"length", "stop"}


@pytest.mark.parametrize(
    ("extra", "status"),
    [({"max_tokens": 100000}, 400), ({"max_tokens": 0}, 400), ({"temperature": 9}, 400), ({"response_format": 1}, 400)],
)
def test_chat_limits(live: LiveServer, extra: dict, status: int) -> None:
    response = _chat(live, **extra)
    assert response.status_code == status and response.json()["error"]["type"] == "invalid_request"


def test_chat_refuses_urls_and_needs_one_image(live: LiveServer) -> None:
    remote = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/a.jpg"}}]}
    for messages in ([remote], [{"role": "user", "content": "no image"}]):
        response = httpx.post(live.url("/v1/chat/completions"), json={"messages": messages}, headers=AUTH)
        assert response.status_code == 400, response.text
    bomb = "data:image/png;base64," + base64.b64encode((AWKWARD / "bomb_65536x65536.png").read_bytes()).decode()
    message = {"role": "user", "content": [{"type": "text", "text": "?"}, {"type": "image_url", "image_url": bomb}]}
    response = httpx.post(live.url("/v1/chat/completions"), json={"messages": [message]}, headers=AUTH)
    assert response.status_code == 413 and response.json()["error"]["type"] == "too_large"


# -- limits and hostile input ------------------------------------------------------------------


def test_decompression_bomb_is_a_record_not_a_crash(live: LiveServer) -> None:
    files = [("image", ("bomb.png", (AWKWARD / "bomb_65536x65536.png").read_bytes()))]
    records = httpx.post(live.url("/v1/label"), files=files, headers=AUTH, timeout=30).json()["records"]
    assert records[0]["status"] == "too_large"
    _still_serving(live)


def test_body_cap_on_declared_and_streamed_bodies(live: LiveServer) -> None:
    big = b"\xff" * 2_100_000
    response = httpx.post(live.url("/v1/label"), files=[("image", ("big.jpg", big))], headers=AUTH)
    assert response.status_code == 413 and response.json()["error"]["type"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap counts bytes as they arrive
        for _ in range(40):
            yield b"x" * 100_000

    response = httpx.post(
        live.url("/v1/label"), content=chunks(), headers={**AUTH, "Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 413
    _still_serving(live)


def _raw(live: LiveServer, data: bytes) -> bytes:
    """What the server answers to these bytes; what it sent before a reset if it dropped the connection."""
    reply = b""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError as exc:  # reset, broken pipe or no longer connected: the server dropped it
            if not isinstance(exc, (ConnectionResetError, BrokenPipeError)) and exc.errno != errno.ENOTCONN:
                raise  # a timeout is not an answer
    return reply


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (  # multipart with a boundary that never comes
            b"POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=zzz\r\nContent-Length: 20\r\n\r\n--yyy\r\ngarbage here",
            400,
        ),
        (  # a body shorter than its Content-Length, then the client stops sending
            b"POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"images": [',
            None,
        ),
        (b"POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", 4),
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n", 400),
    ],
    ids=["malformed-multipart", "truncated-body", "huge-header", "not-http", "negative-length"],
)
def test_broken_requests_get_a_clean_4xx_or_a_closed_connection(
    live: LiveServer, request_bytes: bytes, status: int | None
) -> None:
    reply = _raw(live, request_bytes)
    if status in (None, 4):  # a 4xx, or a dropped connection
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:200]
    else:
        assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:200]  # (4: any 4xx)
        assert b"Traceback" not in reply
    _still_serving(live)


def test_wrong_content_type_unknown_route_and_method(live: LiveServer) -> None:
    response = httpx.post(live.url("/v1/label"), content=b"abc", headers={**AUTH, "Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["error"]["type"] == "unsupported_media_type"
    assert httpx.get(live.url("/nope")).json()["error"]["type"] == "not_found"
    assert httpx.get(live.url("/v1/label"), headers=AUTH).json()["error"]["type"] == "method_not_allowed"


def test_idle_connections_do_not_stop_service(live: LiveServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(200)]
    try:
        _still_serving(live)
    finally:
        for sock in idle:
            sock.close()


def test_paths_only_under_allow_dir(live: LiveServer, tmp_path: Path) -> None:
    ok = httpx.post(live.url("/v1/label"), json={"paths": ["sub/photo.jpg"]}, headers=AUTH, timeout=60)
    assert ok.status_code == 200 and ok.json()["records"][0]["path"] == "sub/photo.jpg"
    missing = httpx.post(live.url("/v1/label"), json={"paths": ["sub/none.jpg"]}, headers=AUTH, timeout=60)
    assert missing.json()["records"][0]["status"] == "not_found"
    for path in ("../outside.jpg", "/etc/passwd", "escape.jpg", "sub/../../outside.jpg"):
        response = httpx.post(live.url("/v1/label"), json={"paths": [path]}, headers=AUTH)
        assert response.status_code == 403, path


# -- cancellation, timeouts and the queue (the slow server) ------------------------------------


def _multipart(path: Path) -> bytes:
    data = path.read_bytes()
    body = b'--b\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n\r\n' + data + b"\r\n--b--\r\n"
    head = "POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_a_client_that_leaves_cancels_its_sequence(slow: LiveServer) -> None:
    sock = socket.create_connection(("127.0.0.1", slow.port))
    sock.sendall(_multipart(PHOTO))
    _wait_for(lambda: _metric(slow, "qvl_engine_sequences") == 1)
    sock.close()
    started = time.monotonic()
    _wait_for(lambda: _metric(slow, "qvl_engine_sequences") == 0, seconds=1.5)  # long before its 30,000 tokens
    assert time.monotonic() - started < 1.5
    text = httpx.get(slow.url("/metrics")).text
    assert re.search(r'qvl_requests_total\{endpoint="/v1/label",status="499"\} 1', text)


def test_a_request_past_its_timeout_is_504_and_cancelled(slow: LiveServer) -> None:
    response = httpx.post(slow.url("/v1/label"), files=[("image", ("p.jpg", OTHER.read_bytes()))], timeout=30)
    assert response.status_code == 504 and response.json()["error"]["type"] == "timeout"
    _wait_for(lambda: _metric(slow, "qvl_engine_sequences") == 0, seconds=1.5)


def test_a_full_queue_is_429_with_retry_after(slow: LiveServer) -> None:
    first: dict[str, int] = {}

    def occupy() -> None:
        reply = httpx.post(slow.url("/v1/label"), files=[("image", ("p.jpg", PHOTO.read_bytes()))], timeout=30)
        first["status"] = reply.status_code

    thread = threading.Thread(target=occupy)
    thread.start()
    _wait_for(lambda: _metric(slow, "qvl_queue_images") == 1)
    response = httpx.post(slow.url("/v1/label"), files=[("image", ("q.jpg", OTHER.read_bytes()))], timeout=30)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["type"] == "queue_full"
    thread.join()
    assert first["status"] == 504  # the slow server's own timeout ended the first one


# -- the command -------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qvl_label", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_refuses_a_public_address_without_a_key(tiny_model: tinymodel.GeneratedModel) -> None:
    model = ["--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj)]
    result = _cli("serve", "--host", "0.0.0.0", *model)
    assert result.returncode == 2 and "--api-key" in result.stderr and "Traceback" not in result.stderr
    env = {**os.environ, "QVL_LABEL_API_KEY": ""}
    assert _cli("serve", "--host", "0.0.0.0", "--port", "-1", *model, env=env).returncode == 2


def test_a_taken_port_is_one_line(tiny_model: tinymodel.GeneratedModel) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = _cli("serve", "--port", port, "--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj))
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_the_extra_the_command_names_it() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None; from qvl_label.entry import run; "
        "sys.argv = ['qvl-label', 'serve']; run()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "pip install 'qvl-label[serve]'" in result.stderr


def _served(tiny_model: tinymodel.GeneratedModel, *options: str) -> tuple[subprocess.Popen[str], int]:
    """`qvl-label serve` in a child process on a free port, the tiny model, no cache: the process and its port."""
    args = ["serve", "--port", "0", "--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj)]
    args += ["--image-max-tokens", "64", "--no-cache", *options]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qvl_label", *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match.group(1))
    raise AssertionError(f"no address announced (exit {proc.wait(30)})")


def test_near_dup_reuses_the_label_of_a_similar_photo_in_the_same_request(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.jpg"
    Image.open(PHOTO).convert("RGB").save(copy, quality=70)  # other bytes, the same picture
    proc, port = _served(tiny_model, "--near-dup")
    try:
        files = [("image", ("a.jpg", PHOTO.read_bytes())), ("image", ("b.jpg", copy.read_bytes()))]
        records = httpx.post(f"http://127.0.0.1:{port}/v1/label", files=files, timeout=120).json()["records"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert [r["path"] for r in records] == ["a.jpg", "b.jpg"]
    assert records[0]["duplicate_of"] is None
    assert records[1]["duplicate_of"]["match"] == "near" and records[1]["duplicate_of"]["path"] == "a.jpg"
    assert records[1]["label"] == records[0]["label"] and records[1]["sha256"] != records[0]["sha256"]
    result = _cli("serve", "--near-dup", "--near-dup-distance", "40", "--model", str(tiny_model.model),
                  "--mmproj", str(tiny_model.mmproj))  # fmt: skip
    assert result.returncode == 2 and "--near-dup-distance must be between 0 and 16" in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_finishes_in_flight_requests_then_exits_0(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, stop: signal.Signals
) -> None:
    proc, port = _served(tiny_model, "--audit-log", str(tmp_path / "audit.jsonl"))
    assert proc.stderr is not None
    answer: dict[str, int] = {}

    def request() -> None:
        files = [("image", (PHOTO.name, PHOTO.read_bytes())), ("image", (OTHER.name, OTHER.read_bytes()))]
        answer["status"] = httpx.post(f"http://127.0.0.1:{port}/v1/label", files=files, timeout=60).status_code

    thread = threading.Thread(target=request)
    thread.start()
    deadline = time.monotonic() + 10
    while "qvl_queue_images 0" in httpx.get(f"http://127.0.0.1:{port}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(stop)
    thread.join(60)
    rest = proc.stderr.read()
    assert proc.wait(60) == 0, rest
    assert answer["status"] == 200  # the request in flight when SIGTERM came was answered
    assert "Traceback" not in rest and "stopped" in rest
    assert proc.stdout is not None and proc.stdout.read() == ""  # logs go to stderr
    assert len((tmp_path / "audit.jsonl").read_bytes().splitlines()) == 1


def test_the_openai_sdk_talks_to_it(live: LiveServer) -> None:
    """Existing OpenAI client code pointed at the server: the SDK's own request and response types."""
    openai = pytest.importorskip("openai", reason="the OpenAI SDK is not installed")
    client = openai.OpenAI(base_url=live.url("/v1"), api_key=KEY)
    assert [m.id for m in client.models.list()] == ["qvl-label"]
    image = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 12}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="qvl-label",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Colour?"}, {"type": "image_url", "image_url": {"url": image}}],
            }
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "colour", "schema": schema}},
        max_tokens=64,
    )
    assert list(json.loads(completion.choices[0].message.content or "")) == ["colour"]
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live.url("/v1"), api_key="wrong").models.list()


VIEWS = Path(__file__).parent / "fixtures" / "views"


def test_several_images_with_a_product_name_are_one_product_record(live: LiveServer) -> None:
    names = ["mh01-gray_back.jpg", "mh01-gray_main.jpg"]
    files = [("image", (name, (VIEWS / name).read_bytes())) for name in names]
    first = httpx.post(live.url("/v1/label"), files=files, data={"product": "MH01"}, headers=AUTH, timeout=60)
    assert first.status_code == 200, first.text
    (record,) = first.json()["records"]
    assert record["product"] == "MH01" and record["path"] == "mh01-gray_main.jpg"  # the main photo leads
    assert [i["path"] for i in record["images"]] == ["mh01-gray_main.jpg", "mh01-gray_back.jpg"]
    assert record["tokens"]["image"] > 0 and record["duplicate_of"] is None
    # the same photos again, as JSON with another key: the label comes from the cache, by photo hashes
    payload = {"product": "again", "images": [{"name": n, "data": base64.b64encode((VIEWS / n).read_bytes()).decode()}
                                               for n in reversed(names)]}  # fmt: skip
    (again,) = httpx.post(live.url("/v1/label"), json=payload, headers=AUTH, timeout=60).json()["records"]
    assert again["product"] == "again" and again["duplicate_of"]["path"] is None and again["tokens"] is None
    # a server-side path that cannot be read is listed; the product is labelled from the rest
    payload = {"product": "P", "paths": ["sub/photo.jpg", "sub/missing.jpg"]}
    (partial,) = httpx.post(live.url("/v1/label"), json=payload, headers=AUTH, timeout=60).json()["records"]
    assert [(i["path"], i["sent"]) for i in partial["images"]] == [("sub/photo.jpg", True), ("sub/missing.jpg", False)]
    assert partial["images"][1]["status"] == "not_found"
    bad = httpx.post(live.url("/v1/label"), json={"product": "", "paths": ["sub/photo.jpg"]}, headers=AUTH)
    assert bad.status_code == 400 and "product" in bad.json()["error"]["message"]
