"""The llama.cpp engine: model, context, prefill, continuous batching and sampling.

Built on the low-level bindings rather than `Llama` + `MTMDChatHandler`, because
those clear the KV cache on every call, ignore misspelled options and expose no
image token limits. Here the instruction prefix is evaluated once into sequence 0
and copied into each image's sequence; up to `n_parallel` images are in flight,
and each decode step carries one token for every live sequence.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
import numpy as np
from numpy.typing import NDArray

from ..errors import EngineLoadError, UsageError
from ..settings import EngineSettings
from .bindings import free_device_memory, gpu_offload_supported, log_sink
from .constraints import ConstraintFactory, SequenceConstraint, constraint_factory, resolve_grammar_engine
from .grammar import UTF8_START, Utf8State, utf8_advance
from .protocol import EngineInfo, Generation, GenerationRequest, Idle, PreparedImage, Timings, TokenCounts


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


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


class LlamaCppEngine:
    """Qwen3-VL through llama.cpp's C API, many images in flight, prefix evaluated once."""

    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._log = log_sink(settings.verbose)
        self._model: Any = None
        self._ctx: Any = None
        self._mtmd: Any = None
        self._batch: Any = None
        self._embd_batch: Any = None  # image embeddings decoded in pieces (llama_batch_ext)
        self._pieces: dict[int, bytes] = {}
        self._cancelled: set[int] = set()
        self._cancel_lock = threading.Lock()
        self._prefix_text: str | None = None
        self._prefix_len = 0
        self.prefix_evaluations = 0
        self._constraints: ConstraintFactory | None = None
        self.decode_steps = 0  # llama_decode calls that advance the live sequences (each samples once)
        self.grammar_checks = 0  # greedy tokens checked against a grammar
        self.grammar_full_passes = 0  # of those, the ones the grammar rejected (a full-vocabulary pass)
        # Admitting an image (encode + prefill) stops the decode steps of the sequences already
        # live, as in llama-server; these count how often and for how long (scripts/bench_pipeline.py).
        # With prefill_piece_tokens the work is spread over many steps: the total stays, the
        # longest wait between two steps of a live sequence shrinks to one piece.
        self.admissions_during_decode = 0
        self.decode_stall_seconds = 0.0
        self.longest_stall_seconds = 0.0
        self.admission_pieces = 0  # prefill pieces run between decode steps
        for path in (settings.model_path, settings.mmproj_path):
            if not path.is_file():
                raise EngineLoadError(f"model file not found: {path}")
        if settings.n_parallel < 0:
            raise EngineLoadError("--parallel must be 0 (automatic) or more")
        if not 1 <= settings.image_min_tokens <= settings.image_max_tokens:
            raise EngineLoadError("image token budget must satisfy 1 <= min <= max")
        llama_cpp.llama_backend_init()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- loading -------------------------------------------------------------------

    def _load(self) -> None:
        s = self._settings
        self._threads = s.threads or _default_threads()
        self._n_gpu_layers = s.n_gpu_layers if s.n_gpu_layers >= 0 else 999
        if not gpu_offload_supported():
            self._n_gpu_layers = 0

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = self._n_gpu_layers
        mparams.use_mmap = True
        self._model = llama_cpp.llama_model_load_from_file(str(s.model_path).encode(), mparams)
        if not self._model:
            raise EngineLoadError(f"llama.cpp could not load {s.model_path}: {self._log.last_error()}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._constraints = constraint_factory(resolve_grammar_engine(s.grammar_engine), self._vocab, self._n_vocab)
        self._jump_forward = s.jump_forward

        self._n_parallel = s.n_parallel or self.auto_parallel()
        if s.n_ctx:
            self._check_fixed_context(s.n_ctx)
            wanted = s.n_ctx
        elif s.sequence_tokens:
            wanted = s.prefix_tokens + self._n_parallel * s.sequence_tokens
        else:
            wanted = 4096
        self._n_ctx = (wanted + 255) // 256 * 256  # llama.cpp pads the context to 256 anyway
        self._n_batch = min(s.n_batch, self._n_ctx)  # llama.cpp clamps it to the context anyway
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self._n_ctx
        cparams.n_batch = self._n_batch
        cparams.n_ubatch = min(512, self._n_batch)
        cparams.n_seq_max = self._n_parallel + 1  # sequence 0 holds the shared prefix
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        cparams.kv_unified = True  # the prefix copied into every sequence shares its cells
        cparams.offload_kqv = self._n_gpu_layers > 0
        self._flash_attn = bool(s.flash_attn) if s.flash_attn is not None else self._n_gpu_layers > 0
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self._flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise EngineLoadError(f"llama.cpp could not create a context: {self._log.last_error()}")
        self._check_took_effect(
            {
                "n_ctx": (llama_cpp.llama_n_ctx(self._ctx), self._n_ctx),
                "n_batch": (llama_cpp.llama_n_batch(self._ctx), self._n_batch),
                "n_seq_max": (llama_cpp.llama_n_seq_max(self._ctx), self._n_parallel + 1),
                "threads": (llama_cpp.llama_n_threads(self._ctx), self._threads),
            }
        )
        self._memory = llama_cpp.llama_get_memory(self._ctx)

        mp = mtmd.mtmd_context_params_default()
        mp.use_gpu = self._n_gpu_layers > 0
        mp.print_timings = False
        mp.n_threads = self._threads
        mp.flash_attn_type = cparams.flash_attn_type
        mp.warmup = False
        mp.image_min_tokens = s.image_min_tokens
        mp.image_max_tokens = s.image_max_tokens
        self._check_took_effect(
            {
                "image_min_tokens": (mp.image_min_tokens, s.image_min_tokens),
                "image_max_tokens": (mp.image_max_tokens, s.image_max_tokens),
            }
        )
        self._mtmd = mtmd.mtmd_init_from_file(str(s.mmproj_path).encode(), self._model, mp)
        if not self._mtmd:
            raise EngineLoadError(
                f"llama.cpp could not load the vision projector {s.mmproj_path}: {self._log.last_error()}"
            )
        if not mtmd.mtmd_support_vision(self._mtmd):
            raise EngineLoadError(f"{s.mmproj_path} has no vision encoder")
        self._marker = mtmd.mtmd_default_marker().decode()
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._piece_tokens = min(max(0, s.prefill_piece_tokens), self._n_batch)
        self._n_embd_inp = int(llama_cpp.llama_model_n_embd_inp(self._model))
        self._mrope = bool(mtmd.mtmd_decode_use_mrope(self._mtmd))
        self._embd_batch = llama_cpp.llama_batch_ext_init(self._ctx)
        if not self._embd_batch:
            raise EngineLoadError("llama.cpp could not create an embedding batch")

    def _check_fixed_context(self, n_ctx: int) -> None:
        """A --ctx that cannot hold the instructions, one image and its output fails here, before any image.

        Counted with the model's own tokenizer (the vocabulary is loaded, no context yet);
        the image and output part is the Labeler's bound for one sequence.
        """
        s = self._settings
        prefix = len(self.tokenize(s.prefix_text)) if s.prefix_text else 0
        needed = prefix + s.sequence_tokens
        if n_ctx < needed:
            raise UsageError(
                f"--ctx {n_ctx} cannot hold the instructions ({prefix} tokens) and one image with its answer "
                f"({s.sequence_tokens} tokens at most); give at least {needed}, or 0 to size it automatically"
            )

    def kv_bytes_per_token(self) -> int:
        """Bytes of F16 K and V cache one token takes across all layers."""
        n_layer = llama_cpp.llama_model_n_layer(self._model)
        n_head = max(1, llama_cpp.llama_model_n_head(self._model))
        n_head_kv = llama_cpp.llama_model_n_head_kv(self._model)
        head_dim = llama_cpp.llama_model_n_embd(self._model) // n_head
        return int(2 * n_layer * n_head_kv * head_dim * 2)

    def auto_parallel(self) -> int:
        """Sequences in flight: up to 8 on a GPU build, 4 on CPU, while their KV cache
        stays within a quarter of the free memory of the device that holds it."""
        cap = 8 if self._n_gpu_layers > 0 else 4
        per_sequence = self.kv_bytes_per_token() * max(1, self._settings.sequence_tokens or 2048)
        free = free_device_memory(gpu=self._n_gpu_layers > 0)
        if free is None:
            return cap
        return max(1, min(cap, int(free * 0.25) // per_sequence))

    @property
    def constraints(self) -> ConstraintFactory | None:
        """The grammar engine's factory (for measuring what a grammar forces)."""
        return self._constraints

    @staticmethod
    def _check_took_effect(pairs: dict[str, tuple[int, int]]) -> None:
        for name, (actual, wanted) in pairs.items():
            if actual != wanted:
                raise EngineLoadError(f"llama.cpp did not apply {name}={wanted} (it reports {actual})")

    @property
    def info(self) -> EngineInfo:
        s = self._settings
        return EngineInfo(
            backend=f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
            model_path=str(s.model_path),
            mmproj_path=str(s.mmproj_path),
            n_ctx=self._n_ctx,
            n_parallel=self._n_parallel,
            n_gpu_layers=self._n_gpu_layers,
            gpu_offload=gpu_offload_supported(),
            image_min_tokens=s.image_min_tokens,
            image_max_tokens=s.image_max_tokens,
            flash_attn=self._flash_attn,
            threads=self._threads,
            grammar_engine=self._constraints.name if self._constraints else "none",
            jump_forward=self._jump_forward,
        )

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._embd_batch:
            llama_cpp.llama_batch_ext_free(self._embd_batch)
            self._embd_batch = None
        if self._mtmd:
            mtmd.mtmd_free(self._mtmd)
            self._mtmd = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ----------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, False, True)
        if n < 0:
            raise ValueError("tokenization overflow")
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        """Write one token of one sequence into slot i of the decode batch."""
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _decode_tokens(self, tokens: list[int], seq_id: int, n_past: int, logits_last: bool) -> int:
        """Evaluate text tokens on one sequence in n_batch pieces; returns the new n_past."""
        step = self._n_batch
        for start in range(0, len(tokens), step):
            piece = tokens[start : start + step]
            b = self._batch
            b.n_tokens = len(piece)
            for i, tok in enumerate(piece):
                self._put(i, tok, n_past + start + i, seq_id, logits_last and start + i == len(tokens) - 1)
            rc = llama_cpp.llama_decode(self._ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}): context of {self._n_ctx} tokens may be full")
        return n_past + len(tokens)

    # -- prefix ----------------------------------------------------------------------

    def _ensure_prefix(self, prefix: str) -> int:
        """Evaluate the shared instruction prefix into sequence 0 once per distinct prefix."""
        if prefix == self._prefix_text:
            return 0
        llama_cpp.llama_memory_seq_rm(self._memory, 0, -1, -1)
        self._prefix_text = None
        tokens = self.tokenize(prefix)
        if len(tokens) >= self._n_ctx:
            raise RuntimeError(
                f"the instruction prefix of {len(tokens)} tokens does not fit the context of {self._n_ctx}; raise --ctx"
            )
        self._decode_tokens(tokens, 0, 0, logits_last=False)
        self._prefix_text = prefix
        self._prefix_len = len(tokens)
        self.prefix_evaluations += 1
        return len(tokens)

    # -- sampling --------------------------------------------------------------------

    def _setup_sampling(self, slot: _Slot, request: GenerationRequest) -> None:
        schema = request.schema
        slot.constraint = self._constraints.new(schema) if schema is not None and self._constraints else None
        slot.utf8 = UTF8_START
        slot.temperature = self._settings.temperature if request.temperature is None else request.temperature
        slot.rng = np.random.default_rng(self._settings.seed) if slot.temperature > 0 else None

    def _piece_of(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece(token)
        return piece

    def _keeps_utf8(self, slot: _Slot, token: int) -> bool:
        """Whether the token's bytes continue the output as valid UTF-8.

        llama.cpp's grammar does not check continuation bytes inside a token, so a byte-level
        token such as b"\\xe4A" would pass it as one character and decode to two or more;
        free text (no schema) has no grammar at all. llguidance checks this itself.
        """
        if slot.constraint is not None and slot.constraint.guarantees_utf8:
            return True
        return utf8_advance(slot.utf8, self._piece_of(token)) is not None

    def _allowed_logits(self, slot: _Slot, logits: NDArray[Any]) -> NDArray[Any]:
        """A copy of the logits with every token the grammar forbids at -inf (a full-vocabulary pass)."""
        allowed = np.array(logits, dtype=np.float32, copy=True)
        if slot.constraint is not None:
            self.grammar_full_passes += 1
            slot.constraint.mask(allowed)
        return allowed

    def _best_valid(self, slot: _Slot, allowed: NDArray[Any], limit: int) -> list[int]:
        """Allowed tokens that keep the output valid UTF-8, best first (ties by id), up to `limit`.

        Inside a string most of the vocabulary is allowed, and sorting 150k logits costs tens
        of milliseconds a token; so only the best few are sorted (every token tied with the
        last of them included, so the order is the full sort's), widening if too few are valid.
        """
        if limit == 1 and allowed.size:  # greedy: the arg-max (lowest id of ties) is the full sort's first; one pass
            best = int(np.argmax(allowed))
            if allowed[best] == -np.inf:
                return []
            if self._keeps_utf8(slot, best):
                return [best]
        n_finite = int(np.count_nonzero(allowed > -np.inf))
        width = max(4 * limit, 64)
        while True:
            width = min(width, n_finite)
            if width == 0:
                return []
            # the width-th best logit; finite, since at least `width` tokens are allowed
            threshold = np.partition(allowed, allowed.shape[0] - width)[allowed.shape[0] - width]
            candidates = np.flatnonzero(allowed >= threshold)
            order = candidates[np.lexsort((candidates, -allowed[candidates]))]
            out = [int(t) for t in order if self._keeps_utf8(slot, int(t))][:limit]
            if len(out) >= limit or width >= n_finite:
                return out
            width *= 4

    def _sample(self, slot: _Slot, index: int) -> int:
        """The next token, allowed by the grammar and keeping the output valid UTF-8.

        Greedy (the default): the arg-max is checked first and the grammar runs over the whole
        vocabulary only when it rejects that token, as llama.cpp's common sampler does. With a
        temperature: grammar, top-k 40, top-p 0.95, temperature, then a seeded draw per sequence.
        """
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))
        if self._settings.ignore_eos:
            logits[self._eog_ids()] = -np.inf
        constraint = slot.constraint
        if slot.rng is None:
            token = int(np.argmax(logits))
            self.grammar_checks += constraint is not None
            fits = constraint is None or constraint.allows(token, float(logits[token]))
            if not (fits and self._keeps_utf8(slot, token)):
                best = self._best_valid(slot, self._allowed_logits(slot, logits), limit=1)
                # nothing allowed: the grammar is complete but end-of-generation is banned
                token = best[0] if best else int(llama_cpp.llama_vocab_eos(self._vocab))
        else:
            allowed = self._allowed_logits(slot, logits)
            top = self._best_valid(slot, allowed, limit=40)
            if not top:
                token = int(llama_cpp.llama_vocab_eos(self._vocab))
            else:
                values = allowed[top].astype(np.float64)
                probs = np.exp(values - values.max())
                probs /= probs.sum()
                keep = int(np.searchsorted(np.cumsum(probs), 0.95)) + 1  # top-p, at least one token
                kept = values[:keep] / slot.temperature
                weights = np.exp(kept - kept.max())
                token = top[int(slot.rng.choice(keep, p=weights / weights.sum()))]
        if constraint is not None and not llama_cpp.llama_vocab_is_eog(self._vocab, token):
            constraint.accept(token)
        return token

    def _eog_ids(self) -> NDArray[Any]:
        if not hasattr(self, "_eog_array"):
            self._eog_array = np.array(
                [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)], dtype=np.int64
            )
        return self._eog_array

    # -- the images of one request -----------------------------------------------------

    def _bitmap(self, image: PreparedImage) -> Any:
        expected = image.width * image.height * 3
        if len(image.rgb) != expected:
            raise ValueError(f"image buffer holds {len(image.rgb)} bytes, expected {expected}")
        data = (ctypes.c_uint8 * expected).from_buffer_copy(image.rgb)
        bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, data)
        if not bitmap:
            raise RuntimeError("mtmd could not create a bitmap")
        return bitmap

    def _prefill(
        self, slot: _Slot, request: GenerationRequest, opening: list[int], in_pieces: bool
    ) -> Generator[None, None, None]:
        """Copy the prefix, encode the images and evaluate the rest of the prompt, then the answer's forced opening.

        A generator: `in_pieces`, it stops after each piece of work (tokenizing, a text chunk, an
        image's encoding, `prefill_piece_tokens` of its embeddings), so that the caller can run a
        decode step of the other sequences in between. It ends right after the prompt's last
        token is evaluated with logits, for the caller to sample the first token from.
        """
        t_prefix = time.perf_counter()
        slot.tokens.prefix_evaluated = self._ensure_prefix(request.prefix)
        slot.timings.prefill_ms += (time.perf_counter() - t_prefix) * 1000
        slot.tokens.prefix_reused = self._prefix_len - slot.tokens.prefix_evaluated
        seq = slot.seq_id
        llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        n_past = self._prefix_len

        images = request.images
        owned: list[Any] = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            for image in images:
                owned.append(self._bitmap(image))
            text = mtmd.mtmd_input_text()
            # one marker per photo, back to back, as llama-mtmd-cli puts several --image before the prompt
            raw = (self._marker * len(images) + request.suffix).encode("utf-8")
            text.text = raw
            text.text_len = len(raw)
            text.add_special = False
            text.parse_special = True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * len(owned))(*owned)
            rc = mtmd.mtmd_tokenize(self._mtmd, chunks, ctypes.byref(text), bitmaps, len(owned))
            if rc != 0:
                raise RuntimeError(f"mtmd could not tokenize the prompt (code {rc})")
            n_chunks = mtmd.mtmd_input_chunks_size(chunks)
            needed = sum(
                mtmd.mtmd_input_chunk_get_n_tokens(mtmd.mtmd_input_chunks_get(chunks, i)) for i in range(n_chunks)
            )
            if needed + request.max_tokens + self._prefix_len > self._n_ctx:
                raise RuntimeError(
                    f"prompt of {needed} tokens plus {request.max_tokens} output tokens does not fit "
                    f"the context of {self._n_ctx}; raise --ctx or lower the image token budget"
                )
            if in_pieces:
                yield
            for i in range(n_chunks):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                last = i == n_chunks - 1
                kind = mtmd.mtmd_input_chunk_get_type(chunk)
                n_tok = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    tokens = [ptr[j] for j in range(count.value)]
                    if last:
                        tokens += opening
                        opening = []
                    t = time.perf_counter()
                    n_past = self._decode_tokens(tokens, seq, n_past, logits_last=last)
                    slot.timings.prefill_ms += (time.perf_counter() - t) * 1000
                    slot.tokens.prompt_evaluated += n_tok
                    if in_pieces and not last:
                        yield
                    continue
                slot.tokens.image += n_tok
                t = time.perf_counter()
                if mtmd.mtmd_encode_chunk(self._mtmd, chunk) != 0:
                    raise RuntimeError(f"the vision encoder failed: {self._log.last_error()}")
                # valid until the next encoding: one admission at a time is in pieces (generate)
                embd = mtmd.mtmd_get_output_embd(self._mtmd)
                t_enc = time.perf_counter()
                slot.timings.encode_ms += (t_enc - t) * 1000
                # Pieces need M-RoPE's per-token positions (Qwen3-VL) and causal attention; any
                # other projector is decoded whole by mtmd's helper.
                if in_pieces and self._mrope and not mtmd.mtmd_decode_use_non_causal(self._mtmd, chunk):
                    yield
                    positions = self._image_positions(chunk, n_past, n_tok)
                    for first in range(0, n_tok, self._piece_tokens):
                        t = time.perf_counter()
                        self._decode_embeddings(embd, positions, first, min(self._piece_tokens, n_tok - first), seq)
                        slot.timings.prefill_ms += (time.perf_counter() - t) * 1000
                        yield
                    n_past += mtmd.mtmd_input_chunk_get_n_pos(chunk)
                else:
                    new_past = llama_cpp.llama_pos(0)
                    rc = mtmd.mtmd_helper_decode_image_chunk(
                        self._mtmd,
                        self._ctx,
                        chunk,
                        embd,
                        n_past,
                        seq,
                        self._n_batch,
                        ctypes.byref(new_past),
                        mtmd.mtmd_helper_post_decode_callback(),
                        None,
                    )
                    if rc != 0:
                        raise RuntimeError(f"decoding the image embeddings failed (code {rc})")
                    n_past = new_past.value
                    slot.timings.prefill_ms += (time.perf_counter() - t_enc) * 1000
                    if in_pieces:
                        yield
                slot.tokens.prompt_evaluated += n_tok
            if opening:  # the prompt ended with the image: the opening is a piece of its own
                t = time.perf_counter()
                n_past = self._decode_tokens(opening, seq, n_past, logits_last=True)
                slot.timings.prefill_ms += (time.perf_counter() - t) * 1000
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in owned:
                mtmd.mtmd_bitmap_free(bitmap)
        slot.n_past = n_past

    def _image_positions(self, chunk: Any, n_past: int, n_tokens: int) -> list[Any]:
        """Each image embedding's M-RoPE positions, in the order mtmd's own helper sets them (t, y, x, z)."""
        image_tokens = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
        positions = []
        for i in range(n_tokens):
            p = mtmd.mtmd_image_tokens_get_decoder_pos(image_tokens, n_past, i)
            positions.append((llama_cpp.llama_pos * 4)(p.t, p.y, p.x, p.z))
        return positions

    def _decode_embeddings(self, embd: Any, positions: list[Any], first: int, count: int, seq_id: int) -> None:
        """Evaluate image embeddings [first, first + count) on one sequence (one llama_process call)."""
        batch = self._embd_batch
        llama_cpp.llama_batch_ext_clear(batch)
        row_bytes = self._n_embd_inp * ctypes.sizeof(ctypes.c_float)
        base = ctypes.addressof(embd.contents)
        row_type = ctypes.POINTER(ctypes.c_float)
        for i in range(first, first + count):
            row = llama_cpp.llama_embd(ctypes.cast(base + i * row_bytes, row_type), 1, self._n_embd_inp)
            idx = llama_cpp.llama_batch_ext_add_embd(batch, seq_id, row)
            if idx < 0 or not llama_cpp.llama_batch_ext_set_pos(batch, idx, positions[i]):
                raise RuntimeError(f"llama.cpp refused image embedding {i} (code {idx})")
        rc = llama_cpp.llama_process(self._ctx, llama_cpp.LLAMA_PROCESS_TYPE_DECODE, batch)
        if rc != 0:
            raise RuntimeError(f"decoding the image embeddings failed (code {rc})")

    def _start(self, slot: _Slot, request: GenerationRequest, in_pieces: bool = False) -> Generation | None:
        """Prefill a free slot and sample its first token; returns a result if it is already done.

        `in_pieces`: only set the prefill up; `_advance` runs it a piece at a time.
        """
        slot.request = request
        slot.reserved = self._need(request)
        slot.output = bytearray()
        slot.tokens = TokenCounts()
        slot.timings = Timings()
        slot.started = time.perf_counter()
        try:
            self._setup_sampling(slot, request)
            # The answer's opening the grammar fixes (`{"scene":"`) is evaluated with the prompt.
            slot.opening = self._forced(slot)[: request.max_tokens]
            prefill = self._prefill(slot, request, slot.opening, in_pieces)
            if in_pieces:
                slot.admission = prefill
                return None
            for _ in prefill:
                pass
        except (RuntimeError, ValueError) as exc:
            return self._finish(slot, "error", str(exc))
        return self._begin_answer(slot)

    def _advance(self, slot: _Slot) -> Generation | None:
        """Run the next piece of a slot's prefill; after the last one, sample its first token."""
        assert slot.admission is not None
        self.admission_pieces += 1
        try:
            next(slot.admission)
            return None
        except StopIteration:
            slot.admission = None
        except (RuntimeError, ValueError) as exc:
            return self._finish(slot, "error", str(exc))
        return self._begin_answer(slot)

    def _begin_answer(self, slot: _Slot) -> Generation | None:
        """The prompt is evaluated: the forced opening counts as output, then the first sample."""
        ended = self._emit(slot, slot.opening, forced=True)
        if ended is not None:
            return self._finish(slot, ended)
        return self._sample_and_accept(slot, -1)

    def _sample_and_accept(self, slot: _Slot, index: int, step_ms: float | None = None) -> Generation | None:
        """The next token and what it forces; a grammar that fails ends this sequence only, as an error.

        `step_ms`, from a decode step: this sequence's share of it, counted with the sampling time.
        """
        started = time.perf_counter()
        try:
            token = self._sample(slot, index)
        except RuntimeError as exc:
            return self._finish(slot, "error", str(exc))
        if step_ms is not None:
            slot.timings.decode_ms += step_ms + (time.perf_counter() - started) * 1000
        return self._accept(slot, token)

    def _forced(self, slot: _Slot) -> list[int]:
        """With jump-forward, the tokens the grammar now determines (accepted by it already)."""
        if not self._jump_forward or slot.constraint is None:
            return []
        return slot.constraint.forced()

    def _emit(self, slot: _Slot, tokens: list[int], forced: bool) -> str | None:
        """Add tokens to the answer; "length" once it holds max_tokens."""
        assert slot.request is not None
        for token in tokens:
            piece = self._piece_of(token)
            slot.output += piece
            slot.utf8 = utf8_advance(slot.utf8, piece) or UTF8_START
            slot.tokens.completion += 1
            slot.tokens.forced += forced
            if slot.tokens.completion >= slot.request.max_tokens:
                return "length"
        return None

    def _accept(self, slot: _Slot, token: int) -> Generation | None:
        """Take a sampled token and what the grammar forces after it; they feed the next decode step."""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return self._finish(slot, "stop")
        try:
            forced = self._forced(slot)
        except RuntimeError as exc:
            return self._finish(slot, "error", str(exc))
        ended = self._emit(slot, [token], forced=False) or self._emit(slot, forced, forced=True)
        if ended is not None:
            return self._finish(slot, ended)
        if slot.constraint is not None and slot.constraint.complete():
            return self._finish(slot, "stop")  # only end-of-generation could follow: no step for it
        slot.pending = [token, *forced]
        return None

    def _finish(self, slot: _Slot, reason: str, error: str | None = None) -> Generation:
        assert slot.request is not None
        slot.timings.total_ms = (time.perf_counter() - slot.started) * 1000
        result = Generation(
            key=slot.request.key,
            text=slot.output.decode("utf-8", errors="replace"),
            finish_reason=reason,
            tokens=slot.tokens,
            timings=slot.timings,
            error=error,
        )
        if slot.constraint is not None:
            slot.constraint.close()
        slot.constraint = None
        slot.pending = []
        if slot.admission is not None:  # ended mid-prefill (cancelled, closed): frees its chunks
            slot.admission.close()
            slot.admission = None
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.request = None
        return result

    # -- the loop --------------------------------------------------------------------

    def cancel(self, key: int) -> None:
        """Thread-safe: the request with this key ends as `cancelled` at the next step, its KV cells freed."""
        with self._cancel_lock:
            self._cancelled.add(key)

    def _take_cancelled(self, key: int) -> bool:
        with self._cancel_lock:
            if key in self._cancelled:
                self._cancelled.discard(key)
                return True
            return False

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
        """Continuous batching: fill free slots, then one decode step for all live slots.

        The stream may yield IDLE (nothing new yet): the live sequences are stepped and the
        stream asked again, so a scheduler can feed requests from many producers.
        """
        pending = iter(requests)
        slots = [_Slot(seq_id=i + 1) for i in range(self._n_parallel)]
        exhausted = False
        held: GenerationRequest | None = None
        try:
            while True:
                for slot in slots:  # cancelled sequences end first, freeing their cells
                    if slot.request is not None and self._take_cancelled(slot.request.key):
                        yield self._finish(slot, "cancelled", "cancelled")
                if held is not None and self._take_cancelled(held.key):
                    yield Generation(key=held.key, text="", finish_reason="cancelled", error="cancelled")
                    held = None
                idle = False
                waited = 0.0  # how long the decoding sequences wait for admissions before this step
                for slot in slots:
                    while slot.request is None and not exhausted:
                        if any(other.admission is not None for other in slots):
                            break  # one admission in pieces at a time: mtmd holds one image's embeddings
                        next_request = held or next(pending, None)
                        held = None
                        if next_request is None:
                            exhausted = True
                            break
                        if isinstance(next_request, Idle):
                            idle = True
                            break
                        if not self._fits(next_request, slots):
                            held = next_request  # waits until a running sequence frees its cells
                            break
                        others = sum(1 for other in slots if other.request is not None)
                        started = time.perf_counter()
                        done = self._start(slot, next_request, in_pieces=others > 0 and self._piece_tokens > 0)
                        if others:  # the live sequences waited while this image was encoded and prefilled
                            self.admissions_during_decode += 1
                            waited += time.perf_counter() - started
                        self._log.reraise_interrupt()
                        if done is not None:
                            yield done
                    if held is not None or idle:
                        break
                admitting = next((slot for slot in slots if slot.admission is not None), None)
                if admitting is not None:
                    decoding = any(slot.request is not None and slot.admission is None for slot in slots)
                    started = time.perf_counter()
                    done = self._advance(admitting)
                    if decoding:
                        waited += time.perf_counter() - started
                    self._log.reraise_interrupt()
                    if done is not None:
                        yield done
                self.decode_stall_seconds += waited
                self.longest_stall_seconds = max(self.longest_stall_seconds, waited)
                live = [slot for slot in slots if slot.request is not None and slot.admission is None]
                if not live:
                    if exhausted and not any(slot.request is not None for slot in slots):
                        return
                    continue  # nothing to decode: the stream is asked again (it waits for work)
                yield from self._step(live)
                self._log.reraise_interrupt()
        finally:
            for slot in slots:
                if slot.request is not None:
                    self._finish(slot, "cancelled", "cancelled")

    @staticmethod
    def _need(request: GenerationRequest) -> int:
        images = sum((image.width // 32) * (image.height // 32) + 2 for image in request.images)
        return images + len(request.suffix.encode()) + request.max_tokens

    def _fits(self, request: GenerationRequest, slots: list[_Slot]) -> bool:
        """Admission control: start a sequence only when the context has room for all of them."""
        live = [s for s in slots if s.request is not None]
        if not live:
            return True  # alone it either fits or gets its own clear error
        if request.prefix != self._prefix_text:
            # Another instruction prefix (a server request in another language or channel): the
            # live sequences still hold the old prefix's cells, uncounted here, so the new one is
            # evaluated only once they have finished.
            return False
        in_use = self._prefix_len + sum(s.reserved for s in live)
        return in_use + self._need(request) <= self._n_ctx

    def _step(self, live: list[_Slot]) -> Iterator[Generation]:
        """One llama_decode for every live sequence: its sampled token and the tokens forced after it.

        Logits are computed only on each sequence's last token, the one the next sample needs.
        """
        t = time.perf_counter()
        try:
            if sum(len(slot.pending) for slot in live) > self._n_batch:
                # Long forced runs with a small --batch: their heads go first, one sequence at a time.
                for slot in live:
                    head, slot.pending = slot.pending[:-1], slot.pending[-1:]
                    slot.n_past = self._decode_tokens(head, slot.seq_id, slot.n_past, logits_last=False)
            n = 0
            last_index: list[int] = []
            for slot in live:
                for j, token in enumerate(slot.pending):
                    self._put(n, token, slot.n_past + j, slot.seq_id, j == len(slot.pending) - 1)
                    n += 1
                last_index.append(n - 1)
            self._batch.n_tokens = n
            rc = llama_cpp.llama_decode(self._ctx, self._batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}) with {len(live)} sequences in flight")
        except RuntimeError as exc:
            for slot in live:
                yield self._finish(slot, "error", str(exc))
            return
        self.decode_steps += 1
        share_ms = (time.perf_counter() - t) * 1000 / len(live)
        for index, slot in zip(last_index, live, strict=True):
            slot.n_past += len(slot.pending)
            slot.pending = []
            done = self._sample_and_accept(slot, index, share_ms)
            if done is not None:
                yield done
