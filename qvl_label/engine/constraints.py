"""Per-sequence output constraints from a JSON schema: llguidance (default) or llama.cpp's GBNF (fallback)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import llama_cpp
import numpy as np
from numpy.typing import NDArray

from ..errors import EngineLoadError
from ..settings import GRAMMAR_ENGINES
from .grammar import json_grammar

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data

# Compact JSON, and a string character is one printable code point or an escaped quote or
# backslash: the same strings the GBNF fallback admits, so `maxLength` bounds the decoded
# length exactly on both (llguidance counts code points and keeps the bytes valid UTF-8).
LLGUIDANCE_JSON_OPTIONS = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
    "json_allowed_escapes": '"\\',
}


# Compiled grammars kept per engine: every distinct response_format schema a client sends is
# compiled once, and the least recently used is dropped past this many (sequences decoding with
# it keep their own copy), so a stream of distinct schemas cannot grow memory without bound.
GRAMMAR_CACHE_SIZE = 64
V = TypeVar("V")


def _schema_key(schema: dict[str, Any]) -> str:
    """One compiled grammar per distinct schema, whatever its key order."""
    return json.dumps(schema, sort_keys=True)


class CompiledCache(Generic[V]):
    """The last `size` compiled grammars by schema, least recently used dropped first."""

    def __init__(self, size: int = GRAMMAR_CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, schema: dict[str, Any], compile_: Callable[[dict[str, Any]], V]) -> V:
        key = _schema_key(schema)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compile_(schema)  # outside the lock: compiling a large schema takes a while
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def llguidance_available() -> bool:
    return importlib.util.find_spec("llguidance") is not None


def resolve_grammar_engine(requested: str) -> str:
    """`auto` is llguidance where its wheel is installed, else GBNF; asking for a missing one fails."""
    if requested not in GRAMMAR_ENGINES:
        raise EngineLoadError(f"unknown grammar engine {requested!r}; choose from {', '.join(GRAMMAR_ENGINES)}")
    if requested == "auto":
        return "llguidance" if llguidance_available() else "gbnf"
    if requested == "llguidance" and not llguidance_available():
        raise EngineLoadError("--grammar llguidance needs the llguidance package (pip install llguidance)")
    return requested


def grammar_engine_description() -> str:
    """What `auto` resolves to on this install, for `doctor`."""
    if llguidance_available():
        from importlib.metadata import version

        return f"llguidance {version('llguidance')} (jump-forward available)"
    return "gbnf: llama.cpp's grammar sampler (llguidance is not installed; no jump-forward)"


class SequenceConstraint(Protocol):
    """What one sequence's sampler asks of its grammar."""

    # Whether the constraint itself keeps the output well-formed UTF-8 (else the engine checks).
    guarantees_utf8: bool

    def allows(self, token: int, logit: float) -> bool:
        """Whether the token may come next (cheap: one token)."""
        ...

    def mask(self, logits: NDArray[np.float32]) -> None:
        """Set every token that may not come next to -inf, in place (a full-vocabulary pass)."""
        ...

    def accept(self, token: int) -> None: ...

    def forced(self) -> list[int]:
        """Tokens the grammar now determines (already accepted here): the caller appends them unsampled."""
        ...

    def complete(self) -> bool:
        """The answer is finished: nothing but end-of-generation may follow."""
        ...

    def close(self) -> None: ...


class ConstraintFactory(Protocol):
    name: str

    def new(self, schema: dict[str, Any]) -> SequenceConstraint: ...


# -- llguidance -------------------------------------------------------------------------


class LlguidanceConstraint:
    """One llguidance matcher: arg-max checked alone, a full mask only when it is rejected."""

    guarantees_utf8 = True

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)

    @property
    def matcher(self) -> Any:
        """The llguidance matcher (for computing many sequences' masks in one call)."""
        return self._matcher

    def allows(self, token: int, logit: float) -> bool:
        return bool(self._matcher.validate_tokens([token]) == 1)

    def try_accept(self, token: int) -> bool:
        """Accept the token if the grammar allows it (allows + accept in one call); False leaves the state as it was."""
        return bool(self._matcher.try_consume_tokens([token]) == 1)

    def mask(self, logits: NDArray[np.float32]) -> None:
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self._n_vocab].astype(bool)
        logits[~allowed] = -np.inf

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused a token it had allowed: {self._matcher.get_error()}")

    def forced(self) -> list[int]:
        tokens: list[int] = self._matcher.compute_ff_tokens()
        if tokens and not self._matcher.consume_tokens(tokens):
            raise RuntimeError(f"the grammar refused its own forced tokens: {self._matcher.get_error()}")
        return tokens

    def complete(self) -> bool:
        return bool(self._matcher.is_stopped())

    def close(self) -> None:
        self._matcher = None


@dataclass(frozen=True)
class TeacherForced:
    """One known answer through the grammar: what jump-forward appends and what is left to sample."""

    tokens: int  # output tokens with jump-forward (forced runs are canonical tokens)
    forced: int
    sampled: int  # decode steps with jump-forward (a complete answer needs no end token)
    canonical: int  # tokens of the whole answer tokenized at once; without jump-forward: + 1 end token

    @property
    def steps_without(self) -> int:
        return self.canonical + 1


class LlguidanceFactory:
    """llguidance's tokenizer built once from the llama.cpp vocabulary; one compiled matcher per schema."""

    name = "llguidance"

    def __init__(self, vocab: Any, n_vocab: int) -> None:
        import llguidance

        self._llguidance: Any = llguidance
        self._n_vocab = n_vocab
        self._tokenizer = _lltokenizer(llguidance, vocab, n_vocab)
        self.compiled: CompiledCache[Any] = CompiledCache()
        self._executor: Any = None  # llguidance's thread pool for batches of masks, made on first use
        self.mask_threads = mask_threads()

    def template(self, schema: dict[str, Any]) -> Any:
        return self.compiled.get(schema, self._compile)

    def _compile(self, schema: dict[str, Any]) -> Any:
        matcher_cls = self._llguidance.LLMatcher
        grammar = matcher_cls.grammar_from_json_schema(schema, overrides=LLGUIDANCE_JSON_OPTIONS)
        matcher = matcher_cls(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise RuntimeError(f"llguidance rejected the JSON schema: {matcher.get_error()}")
        return matcher

    def new(self, schema: dict[str, Any]) -> LlguidanceConstraint:
        return LlguidanceConstraint(self.template(schema).deep_copy(), self._n_vocab)

    def allowed_bits(
        self, constraints: list[LlguidanceConstraint], costly: list[bool] | None = None
    ) -> NDArray[np.int32]:
        """Every constraint's allowed tokens as llguidance's packed bits, row k for constraints[k].

        `costly[k]` marks a row whose mask walks most of the vocabulary (inside free text); the
        others (structural points) are computed here on the engine thread. Costly rows go to
        llguidance's executor, which computes them on its own threads without the GIL, when
        there are two or more of them and it has two or more threads: waking its pool costs
        more than a cheap mask (scripts/measure_rejected_rows.py: 0.92 ms a call with every
        mask in the pool, 0.38 ms this way, on a 2-core machine where the pool has one thread).
        """
        words = (self._n_vocab + 31) // 32
        bits = np.zeros((len(constraints), words), dtype=np.int32)
        heavy = [k for k in range(len(constraints)) if costly is None or costly[k]]
        parallel = set(heavy) if self.mask_threads >= 2 and len(heavy) >= 2 else set()
        for k, constraint in enumerate(constraints):
            if k not in parallel:
                constraint.matcher.unsafe_compute_mask_ptr(bits[k].ctypes.data, words * 4)
        if parallel:
            if self._executor is None:
                self._executor = self._llguidance.LLExecutor(self.mask_threads)
            matchers = [(constraints[k].matcher, k) for k in sorted(parallel)]
            self._executor.unsafe_compute_mask_ptr(matchers, bits.ctypes.data, words * 4, len(constraints))
        return bits

    def allowed_rows(self, constraints: list[LlguidanceConstraint]) -> NDArray[np.bool_]:
        """`allowed_bits` unpacked: one boolean per token."""
        bits = self.allowed_bits(constraints)
        unpacked = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")
        return unpacked[:, : self._n_vocab].view(np.bool_)

    def teacher_force(self, schema: dict[str, Any], answer: str) -> TeacherForced:
        """Run a known answer through the matcher as decoding with jump-forward would.

        At each point the grammar's forced tokens are taken if it has any, else the next token
        of the canonical tokenization of the rest of the answer is "sampled". Without
        jump-forward every token is sampled, plus the end token.
        """
        matcher = self.template(schema).deep_copy()
        data = answer.encode()
        position = sampled = forced = 0
        while position < len(data):
            run: list[int] = matcher.compute_ff_tokens()
            if not run:
                run = list(self._tokenizer.tokenize_bytes(data[position:]))[:1]
                sampled += 1
            else:
                forced += len(run)
            piece = self._tokenizer.decode_bytes(run)
            if not data.startswith(piece, position) or not matcher.consume_tokens(run):
                raise ValueError(f"the answer leaves the grammar at byte {position}: {matcher.get_error()}")
            position += len(piece)
        if not matcher.is_stopped():
            raise ValueError("the answer is not complete under the schema")
        canonical = len(self._tokenizer.tokenize_bytes(data))
        return TeacherForced(tokens=sampled + forced, forced=forced, sampled=sampled, canonical=canonical)


def mask_threads() -> int:
    """The threads llguidance's executor gets: its own default, 80% of this process's cores, at most 32."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(32, cores * 4 // 5))


def _lltokenizer(llguidance: Any, vocab: Any, n_vocab: int) -> Any:
    """llguidance's tokenizer over the llama.cpp vocabulary (as `llguidance.llamacpp` builds it).

    Written out here because that helper calls a llama.cpp function deprecated in the
    bindings we pin, which warns once per token (151,936 times for Qwen).
    """
    buffer = ctypes.create_string_buffer(16 * 1024)
    pieces: list[bytes] = []
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user_defined = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    for token in range(n_vocab):
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer) - 1, 0, True)
        if n < 0:
            raise RuntimeError(f"token {token} has a piece longer than {len(buffer)} bytes")
        piece = buffer.raw[:n]
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        # Special tokens are marked with a leading 0xFF so no grammar string can produce them.
        if attr & control or (attr & user_defined and piece.startswith(b"<") and piece.endswith(b">")):
            piece = b"\xff" + piece
        pieces.append(piece)
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return llguidance.LLTokenizer.from_llamacpp(
        tokens=pieces,
        vocab_ptr=vocab,
        tokenize_fptr=tokenize,
        # One id (llguidance 1.6 takes no list): the engine ends a sequence when its grammar
        # completes, before any end token is sampled, so the others never matter.
        eos_token=int(llama_cpp.llama_vocab_eos(vocab)),
        slices=llguidance.LLTokenizer.json_slices(),  # mask shortcuts for JSON strings
    )


# -- GBNF (llama.cpp's grammar sampler) ----------------------------------------------------


class GbnfConstraint:
    """llama.cpp's grammar sampler: it forces nothing and does not check UTF-8 continuation bytes."""

    guarantees_utf8 = False

    def __init__(self, sampler: Any, n_vocab: int) -> None:
        self._sampler = sampler
        self._n_vocab = n_vocab

    def allows(self, token: int, logit: float) -> bool:
        single = llama_cpp.llama_token_data(token, logit, 0.0)
        view = llama_cpp.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(view))
        return bool(single.logit != -np.inf)

    def mask(self, logits: NDArray[np.float32]) -> None:
        candidates = np.empty(self._n_vocab, dtype=_TOKEN_DATA)
        candidates["id"] = np.arange(self._n_vocab, dtype=np.int32)
        candidates["logit"] = logits
        candidates["p"] = 0.0
        full = llama_cpp.llama_token_data_array(
            candidates.ctypes.data_as(llama_cpp.llama_token_data_p), self._n_vocab, -1, False
        )
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(full))
        logits[:] = candidates["logit"]

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, token)

    def forced(self) -> list[int]:
        return []

    def complete(self) -> bool:
        return False  # llama.cpp's sampler cannot say; the model ends with end-of-generation

    def close(self) -> None:
        if self._sampler is not None:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None


class GbnfFactory:
    name = "gbnf"

    def __init__(self, vocab: Any, n_vocab: int) -> None:
        self._vocab = vocab
        self._n_vocab = n_vocab
        self.compiled: CompiledCache[bytes] = CompiledCache()

    def new(self, schema: dict[str, Any]) -> GbnfConstraint:
        grammar = self.compiled.get(schema, lambda s: json_grammar(s).encode())
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar, b"root")
        if not sampler:
            raise RuntimeError("llama.cpp rejected the JSON grammar built from the schema")
        return GbnfConstraint(sampler, self._n_vocab)


def constraint_factory(kind: str, vocab: Any, n_vocab: int) -> ConstraintFactory:
    """The factory for a resolved grammar engine name."""
    if kind == "llguidance":
        return LlguidanceFactory(vocab, n_vocab)
    return GbnfFactory(vocab, n_vocab)
