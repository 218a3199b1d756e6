"""The engine's shared state: the llama.cpp handles and counters every part reads, and one sequence slot."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..settings import EngineSettings
from .bindings import _LogSink
from .constraints import ConstraintFactory, SequenceConstraint
from .grammar import UTF8_START, Utf8State
from .protocol import GenerationRequest, Timings, TokenCounts


@dataclass
class _Slot:
    seq_id: int
    request: GenerationRequest | None = None
    constraint: SequenceConstraint | None = None  # the answer's grammar, consulted by _sample
    pending: list[int] = field(default_factory=list)  # tokens the next decode step feeds: sampled, then forced
    utf8: Utf8State = UTF8_START  # the bytes generated so far must stay well-formed UTF-8
    rng: np.random.Generator | None = None  # temperature > 0: the sequence's seeded draws
    temperature: float = 0.0
    n_past: int = 0
    output: bytearray = field(default_factory=bytearray)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timings: Timings = field(default_factory=Timings)
    started: float = 0.0
    reserved: int = 0  # KV cells this sequence may still need beyond the shared prefix
    # Admitted while others decode: the rest of its prefill, one piece per decode step, and the
    # answer's forced opening, emitted once the prefill is done.
    admission: Generator[None, None, None] | None = None
    opening: list[int] = field(default_factory=list)


class EngineState:
    """What the engine's parts share, declared once; ModelLoading sets it all when the model loads.

    The engine is one class built in layers, a file each: tokens (evaluating text), loading,
    sampling, image prefill, admission, and the step loop in llama.py.
    """

    _settings: EngineSettings
    _log: _LogSink
    _model: Any
    _ctx: Any
    _mtmd: Any
    _batch: Any
    _batch_views: tuple[Any, ...] | None  # numpy views of the batch's columns (TokenEvaluation._step_batch)
    _embd_batch: Any
    _memory: Any
    _vocab: Any
    _n_vocab: int
    _n_ctx: int
    _n_batch: int
    _n_parallel: int
    _n_gpu_layers: int
    _threads: int
    _flash_attn: bool
    _jump_forward: bool
    _backend_sampling: bool  # greedy arg-max inside llama_decode (sampling.py reads its rows)
    _marker: str
    _piece_tokens: int
    _n_embd_inp: int
    _mrope: bool
    _constraints: ConstraintFactory | None
    _pieces: dict[int, bytes]
    _ends: dict[int, bool]  # end-of-generation or not, per token seen
    _cancelled: set[int]
    _cancel_lock: threading.Lock
    _prefix_text: str | None
    _prefix_len: int
    _eog_array: np.ndarray[Any, Any]
    _candidate_gap: float | None
    _probe_tokens: list[int] | None
    prefix_evaluations: int
    decode_steps: int
    decode_seconds: float
    step_host_seconds: float
    grammar_checks: int
    grammar_full_passes: int
    admissions_during_decode: int
    decode_stall_seconds: float
    longest_stall_seconds: float
    admission_pieces: int
