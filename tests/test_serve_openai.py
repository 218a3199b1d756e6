"""/v1/chat/completions as the `openai` SDK uses it, reuse privacy and /metrics: real HTTP, the real tiny model."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as wait_for
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra is not installed")
openai = pytest.importorskip("openai", reason="the OpenAI SDK is not installed")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx")
parser = pytest.importorskip("prometheus_client.parser", reason="the serve extra is not installed")

from qvl_label import tinymodel  # noqa: E402
from qvl_label.engine.protocol import GenerationRequest  # noqa: E402
from qvl_label.serve.chat import cut_at_stop  # noqa: E402
from qvl_label.serve.metrics import Metrics  # noqa: E402
from qvl_label.serve.service import ServeLimits  # noqa: E402
from qvl_label.serve.streaming import StopScanner, TextFeed  # noqa: E402
from qvl_label.settings import LabelSettings  # noqa: E402

from .test_serve import AUTH, KEY, OTHER, PHOTO, LiveServer, _service  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_model: tinymodel.GeneratedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The API server of tests/test_serve.py: two sequences in parallel, a key, answers up to 256 tokens."""
    tmp = tmp_path_factory.mktemp("openai")
    (tmp / "allowed").mkdir()
    limits = ServeLimits(max_body_bytes=2_000_000, max_images=4, max_queue=16, max_tokens=256)
    live = LiveServer(_service(tiny_model, tmp, LabelSettings(languages=("zh", "en")), limits, n_parallel=2), [KEY])
    yield live
    live.stop()


IMAGE = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
FIT_QUESTION = "How does this shirt fit?"
FIT_ANSWER = "It is a relaxed fit with dropped shoulders."
BODY_QUESTION = "Which body type does it suit?"


def _client(server: LiveServer) -> Any:
    return openai.OpenAI(base_url=server.url("/v1"), api_key=KEY, max_retries=0, timeout=60)


def _photo_question(text: str = "Colour?") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": IMAGE}}, {"type": "text", "text": text}],
    }


def _ask(server: LiveServer, **extra: Any) -> Any:
    return _client(server).chat.completions.create(model="qvl-label", messages=[_photo_question()], **extra)


# -- streaming ---------------------------------------------------------------------------------


def test_stream_true_answers_sse_chunks_the_sdk_iterates(server: LiveServer) -> None:
    whole = _ask(server, max_tokens=24, temperature=0)
    stream = _ask(server, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len(chunks) >= 3 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    answer_chunks = [c for c in chunks if c.choices]
    assert answer_chunks[0].choices[0].delta.role == "assistant"  # the first chunk carries the role
    assert [c.choices[0].finish_reason for c in answer_chunks[:-1]] == [None] * (len(answer_chunks) - 1)
    assert answer_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in answer_chunks)
    assert text == whole.choices[0].message.content  # greedy: the same answer, streamed
    (usage_chunk,) = [c for c in chunks if not c.choices]  # stream_options.include_usage: one last usage chunk
    assert usage_chunk.usage.completion_tokens == whole.usage.completion_tokens > 0


def _content(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def _a_stop_in(text: str) -> str:
    """Three characters from inside the answer (not its first few), to stop at."""
    stop = next((text[i : i + 3] for i in range(4, len(text) - 3) if text[i : i + 3].strip()), None)
    assert stop is not None, f"the answer is too short to pick a stop sequence from: {text!r}"
    return stop


@dataclasses.dataclass
class Held:
    """The engine's side of streamed requests, spied on: each stream's on_text hook is wrapped so
    that once text has been passed on, the engine thread waits at its next step (at most 60 s)
    until `release` is set. What the engine did then cannot race what the client saw."""

    futures: list[Future[Any]] = dataclasses.field(default_factory=list)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)
    released_in_time: list[bool] = dataclasses.field(default_factory=list)

    def wrap(self, on_text: Callable[[bytes], None]) -> Callable[[bytes], None]:
        seen = bytearray()

        def hook(piece: bytes) -> None:
            if seen.decode("utf-8", "ignore") and not self.release.is_set():
                self.released_in_time.append(self.release.wait(60))
            seen.extend(piece)
            on_text(piece)

        return hook


@pytest.fixture
def held(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    scheduler = server.service.labeler.scheduler
    spied = Held()
    submit = scheduler.submit

    def spy(request: GenerationRequest) -> Future[Any]:
        if request.on_text is None:
            return submit(request)
        future = submit(dataclasses.replace(request, on_text=spied.wrap(request.on_text)))
        spied.futures.append(future)
        return future

    monkeypatch.setattr(scheduler, "submit", spy)
    yield spied
    spied.release.set()  # never leave the engine thread waiting


def test_chunks_arrive_while_the_engine_is_still_generating(server: LiveServer, held: Held) -> None:
    whole = _ask(server, max_tokens=48, temperature=0).choices[0].message.content
    chunks = []
    in_flight_at_first_text: bool | None = None
    for chunk in _ask(server, max_tokens=48, temperature=0, stream=True):
        chunks.append(chunk)
        if in_flight_at_first_text is None and _content([chunk]):
            (future,) = held.futures  # the streamed request
            in_flight_at_first_text = not future.done()
            held.release.set()
    assert in_flight_at_first_text, "the first text came only after the generation had ended"
    assert all(held.released_in_time)  # if the engine got to wait for the client, the client let it go
    pieces = _content(chunks)
    assert len(pieces) >= 2 and "".join(pieces) == whole  # greedy: the same answer, piece by piece


def test_a_stop_sequence_cuts_the_stream(server: LiveServer) -> None:
    text = _ask(server, max_tokens=40, temperature=0).choices[0].message.content
    stop = _a_stop_in(text)
    chunks = list(_ask(server, max_tokens=40, temperature=0, stop=["never-in-it-0123", stop], stream=True))
    assert "".join(_content(chunks)) == text[: text.index(stop)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@given(
    text=st.text(alphabet="ab c", max_size=24),
    stops=st.lists(st.text(alphabet="ab c", min_size=1, max_size=4), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 24), max_size=8),
)
@example(text="xabcd", stops=["abcd", "bc"], cuts=[3])  # "bc" completes first, "abcd" starts earlier
@example(text="a ab", stops=["ab"], cuts=[1, 2, 3])  # a held "a" that turns out not to start the stop
def test_the_stream_sends_what_the_whole_answer_keeps_however_it_is_split(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    scanner = StopScanner(tuple(stops))
    bounds = [0, *sorted(min(c, len(text)) for c in cuts), len(text)]
    sent = "".join(scanner.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) + scanner.flush()
    assert (sent, scanner.stopped) == cut_at_stop(text, tuple(stops))


def test_a_character_split_between_steps_is_sent_whole() -> None:
    async def pieces(*steps: bytes) -> list[str]:
        feed = TextFeed(asyncio.get_running_loop())
        for step in steps:
            feed.on_text(step)
        generation = asyncio.ensure_future(asyncio.sleep(0))
        await generation
        feed.end(generation)  # type: ignore[arg-type]
        received: list[str] = []
        while (text := await feed.next()) is not None:
            received.append(text)
        return received

    # "né中" with its two-byte and three-byte characters split across steps; then a character cut off
    assert asyncio.run(pieces(b"n\xc3", b"\xa9\xe4\xb8", b"\xad", b"\xe4")) == ["n", "é", "中", "\ufffd"]


def test_closing_a_stream_early_cancels_its_generation(
    server: LiveServer, held: Held, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = server.service.labeler.scheduler
    cancel = scheduler.cancel

    def cancel_then_release(future: Future[Any]) -> None:
        cancel(future)
        held.release.set()  # the engine, held since the first text, sees the cancellation at its next step

    monkeypatch.setattr(scheduler, "cancel", cancel_then_release)
    stream = _ask(server, max_tokens=256, temperature=0, stream=True)
    for chunk in stream:
        if _content([chunk]):
            break
    stream.close()  # the client leaves mid-answer
    (future,) = held.futures
    assert wait_for([future], timeout=60).done, "the generation went on after the client left"
    with pytest.raises(CancelledError):
        future.result()
    assert scheduler.load() == (0, 0)  # the slot is free
    assert _ask(server, max_tokens=4).choices[0].finish_reason in {"stop", "length"}


def test_the_stream_on_the_wire_ends_with_done(server: LiveServer) -> None:
    body = {"messages": [_photo_question()], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", server.url("/v1/chat/completions"), json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1


def test_a_refused_stream_is_a_json_error_before_any_chunk(server: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError, match="n=2"):
        list(_ask(server, stream=True, n=2))


def test_a_schema_the_engine_refuses_is_a_400_for_a_stream_too(server: LiveServer) -> None:
    """The grammar compiler refuses it once the request reached the engine: the stream has not started yet."""
    body = {"messages": [_photo_question()], "max_tokens": 8, "stream": True, "response_format": ENGINE_REFUSED}
    with httpx.stream("POST", server.url("/v1/chat/completions"), json=body, headers=AUTH, timeout=60) as response:
        response.read()
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request" and "schema" in response.json()["error"]["message"]


# -- parameters the server does not implement --------------------------------------------------

PICTURE = {"type": "image_url", "image_url": {"url": IMAGE}}
INVALID_SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
# Passes the server's own checks; the grammar compiler refuses it once the engine has the request.
ENGINE_REFUSED_SCHEMA = {"type": "string", "pattern": "("}
ENGINE_REFUSED = {"type": "json_schema", "json_schema": {"name": "x", "schema": ENGINE_REFUSED_SCHEMA}}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"n": 2}, "n=2"),
        ({"tools": [TOOL]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"response_format": INVALID_SCHEMA}, "schema.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": 3}}}},
         "properties"),
        ({"temperature": True}, "temperature must be a number"),
        ({"temperature": "0.5"}, "temperature must be a number"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"top_p": 0.5}, "top_p"),
        ({"seed": 7}, "seed"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": 1}, "presence_penalty"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"extra_body": {"top_k": 5}}, "top_k"),
    ],
)  # fmt: skip
def test_parameters_not_implemented_are_400_with_a_message(server: LiveServer, extra: dict, named: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _ask(server, **{"max_tokens": 4, **extra})
    assert refused.value.status_code == 400 and named in refused.value.message


def test_no_op_values_of_those_parameters_are_accepted(server: LiveServer) -> None:
    done = _ask(server, max_tokens=4, n=1, logprobs=False, top_p=1, presence_penalty=0, frequency_penalty=0, user="u1")
    assert done.choices[0].message.role == "assistant" and len(done.choices) == 1


def test_stop_sequences_are_honoured(server: LiveServer) -> None:
    text = _ask(server, max_tokens=40, temperature=0).choices[0].message.content
    stop = _a_stop_in(text)
    cut = _ask(server, max_tokens=40, temperature=0, stop=[stop, "never-in-it-0123"])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


# -- multi-turn --------------------------------------------------------------------------------


def test_a_follow_up_question_is_rendered_as_a_conversation(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = server.service.labeler.scheduler
    sent: list[GenerationRequest] = []
    submit = scheduler.submit

    def spy(request: GenerationRequest) -> Any:
        sent.append(request)
        return submit(request)

    monkeypatch.setattr(scheduler, "submit", spy)
    messages = [
        {"role": "system", "content": "You advise shoppers."},
        _photo_question(FIT_QUESTION),
        {"role": "assistant", "content": FIT_ANSWER},
        {"role": "user", "content": BODY_QUESTION},
    ]
    answer = _client(server).chat.completions.create(model="qvl-label", messages=messages, max_tokens=8)
    assert answer.choices[0].message.role == "assistant" and answer.usage.prompt_tokens > 0
    (request,) = sent
    assert request.prefix == "<|im_start|>system\nYou advise shoppers.<|im_end|>\n<|im_start|>user\n"
    assert request.suffix == (  # Qwen's chat template: each turn with its own role; the image opens the first
        f"{FIT_QUESTION}<|im_end|>\n"
        f"<|im_start|>assistant\n{FIT_ANSWER}<|im_end|>\n"
        f"<|im_start|>user\n{BODY_QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        ([_photo_question(), {"role": "assistant", "content": "Blue."}], "last message"),
        ([_photo_question(), {"role": "tool", "content": "{}", "tool_call_id": "1"}], "tool"),
        ([{"role": "user", "content": "Hi"}, {"role": "system", "content": "late"}, _photo_question()], "system"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [PICTURE], "refusal": None},
          {"role": "user", "content": "?"}], "image_url parts in user messages"),
    ],
)  # fmt: skip
def test_conversations_the_server_cannot_render_are_400(server: LiveServer, messages: list, named: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _client(server).chat.completions.create(model="qvl-label", messages=messages, max_tokens=4)
    assert named in refused.value.message


# -- reuse across clients ----------------------------------------------------------------------


def test_a_reused_label_never_names_another_clients_file(server: LiveServer) -> None:
    data = OTHER.read_bytes() + b"openai-privacy"  # bytes no other test sent
    question = {"prompt": "What colour is it?"}  # a short answer: a full label takes minutes on a loaded CPU

    def send(*names: str) -> tuple[list[dict], str]:
        files = [("image", (name, data)) for name in names]
        response = httpx.post(server.url("/v1/label"), files=files, data=question, headers=AUTH, timeout=300)
        assert response.status_code == 200, response.text
        return response.json()["records"], response.text

    (labelled,), _ = send("secret-shirt.jpg")  # one client's file
    assert labelled["status"] == "ok" and labelled["duplicate_of"] is None  # so the cache holds its label
    (reused,), text = send("mine.jpg")  # the same bytes from another client
    assert reused["duplicate_of"] == {"path": None, "match": "identical", "distance": 0}
    assert reused["answer"] == labelled["answer"] and reused["path"] == "mine.jpg"
    assert "secret-shirt" not in text
    # within one request the client's own names still say which photo was labelled
    data += b"!"  # new bytes, not cached: the second file waits on the first one's generation
    (front, again), _ = send("front.jpg", "again.jpg")
    assert front["duplicate_of"] is None and again["duplicate_of"]["path"] == "front.jpg"


# -- /metrics ----------------------------------------------------------------------------------


def test_metrics_parse_with_prometheus_client_and_give_latency_histograms(server: LiveServer) -> None:
    _ask(server, max_tokens=4)
    text = httpx.get(server.url("/metrics"), headers=AUTH).text
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families["qvl_requests"].type == "counter"
    answered = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["qvl_requests"].samples
        if s.name == "qvl_requests_total"
    }
    assert answered[("/v1/chat/completions", "200")] >= 1
    latency = families["qvl_request_seconds"]
    assert latency.type == "histogram"
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in latency.samples
        if s.name == "qvl_request_seconds_bucket" and s.labels["endpoint"] == "/v1/chat/completions"
    ]
    total = buckets[-1][1]
    assert buckets[-1][0] == float("inf") and total >= 1
    p95 = next(bound for bound, count in buckets if count >= 0.95 * total)  # what a dashboard computes
    assert 0 < p95 <= 600
    for gauge in ("qvl_queue_images", "qvl_engine_occupancy", "qvl_images_per_second", "qvl_engine_parallel"):
        assert families[gauge].type == "gauge"
    assert families["qvl_engine_parallel"].samples[0].value == 2
    assert {s.labels["kind"] for s in families["qvl_tokens"].samples} >= {"completion", "prompt_evaluated", "image"}
    assert families["process_resident_memory_bytes"].samples[0].value > 0  # process metrics
    assert families["process_cpu_seconds"].samples[0].value > 0


def test_each_server_counts_in_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.request("/health", 200, 0.01)
    counts = [
        sum(
            s.value
            for f in parser.text_string_to_metric_families(m.render().decode())
            for s in f.samples
            if s.name == "qvl_requests_total"
        )
        for m in (first, second)
    ]
    assert counts == [1, 0]
