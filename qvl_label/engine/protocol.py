"""The engine protocol: prepared image + prompt + schema in, text + token counts + timings out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PreparedImage:
    """Upright 8-bit RGB pixels, already resized to the image token budget."""

    rgb: bytes
    width: int
    height: int


@dataclass(frozen=True)
class GenerationRequest:
    """One image, or several photos of one product, to run through the model.

    `prefix` is the fixed instruction text placed before the images; engines may
    evaluate it once and reuse it for every request that shares it. `suffix` is the
    per-request text after the images. `schema`, when given, constrains the output.
    `on_text`, when given, is called from the engine's thread with the bytes each decode step
    adds to the answer (sampled and forced tokens; a UTF-8 character may be split between
    calls); one that raises ends only this sequence, as an error.
    """

    key: int
    image: PreparedImage
    prefix: str
    suffix: str
    schema: dict[str, Any] | None
    max_tokens: int
    temperature: float | None = None  # None: the engine's setting (a server request may choose its own)
    # Further photos of the same product, in order after `image`: each is its own image chunk in
    # the one sequence, positioned as llama.cpp's mtmd places consecutive images.
    more_images: tuple[PreparedImage, ...] = ()
    on_text: Callable[[bytes], None] | None = field(default=None, compare=False)

    @property
    def images(self) -> tuple[PreparedImage, ...]:
        return (self.image, *self.more_images)


class Idle:
    """What a request stream yields when it has nothing new yet but more may come.

    An engine that receives it goes on decoding the sequences it holds and asks again; a
    stream yields it only while the engine holds sequences (else it waits for a request).
    """


IDLE = Idle()


@dataclass
class TokenCounts:
    prefix_reused: int = 0
    prefix_evaluated: int = 0
    image: int = 0
    prompt_evaluated: int = 0
    completion: int = 0
    forced: int = 0  # of the completion tokens, those the grammar forced (appended without sampling)


@dataclass
class Timings:
    encode_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Generation:
    """What the engine produced for one request; `error` set means no usable text."""

    key: int
    text: str
    finish_reason: str  # "stop" (model ended), "length" (max_tokens hit), "error" or "cancelled"
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timings: Timings = field(default_factory=Timings)
    error: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    model_path: str
    mmproj_path: str
    n_ctx: int
    n_parallel: int
    n_gpu_layers: int
    gpu_offload: bool
    image_min_tokens: int
    image_max_tokens: int
    flash_attn: bool
    threads: int
    grammar_engine: str = "none"  # what constrains the JSON answer: "llguidance" or "gbnf"
    jump_forward: bool = False


class Engine(Protocol):
    """A loaded vision-language model. Results may come back in any order; `key` ties them to requests."""

    @property
    def info(self) -> EngineInfo: ...

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]: ...

    def cancel(self, key: int) -> None:
        """Thread-safe: stop the request with this key and free what it holds; it ends as `cancelled`."""
        ...

    def close(self) -> None: ...
