"""Loading the model, its context and the vision projector, checking every setting took effect."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, TypeVar

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

from ..errors import EngineLoadError, UsageError
from ..settings import EngineSettings
from .bindings import free_device_memory, gpu_offload_supported, log_sink
from .constraints import ConstraintFactory, constraint_factory, resolve_grammar_engine
from .protocol import EngineInfo
from .tokens import TokenEvaluation

_Engine = TypeVar("_Engine", bound="ModelLoading")


# --parallel 0 on a GPU: a decode step costs little more at 64 sequences than at 8, so memory
# decides up to 64. On CPU every sequence adds its compute to every step: a few keep latency sane.
GPU_PARALLEL_CAP = 64
CPU_PARALLEL_CAP = 4
KV_MEMORY_SHARE = 0.5  # of the free memory after the weights; the rest: compute buffers, images, logits
DEFAULT_SEQUENCE_TOKENS = 2048  # cells per sequence when no schema budget is known


def parallel_for_memory(free: int | None, kv_per_token: int, prefix_tokens: int, sequence_tokens: int, cap: int) -> int:
    """How many sequences' KV cells fit in a share of the free memory, beside the shared prefix (1 to cap).

    Unknown free memory: 8 on a GPU (its decode step is cheap), the cap on CPU.
    """
    if free is None:
        return min(cap, 8)
    room = int(free * KV_MEMORY_SHARE) - kv_per_token * prefix_tokens
    return max(1, min(cap, room // max(1, kv_per_token * sequence_tokens)))


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class ModelLoading(TokenEvaluation):
    """The engine's first layer: model, context, projector and batches, and their release."""

    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._log = log_sink(settings.verbose)
        self._model: Any = None
        self._ctx: Any = None
        self._mtmd: Any = None
        self._batch: Any = None
        self._batch_views: tuple[Any, ...] | None = None
        self._embd_batch: Any = None  # image embeddings decoded in pieces (llama_batch_ext)
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}
        self._cancelled: set[int] = set()
        self._cancel_lock = threading.Lock()
        self._prefix_text: str | None = None
        self._prefix_len = 0
        self.prefix_evaluations = 0
        self._constraints: ConstraintFactory | None = None
        # The step loop's public counters (scripts/bench_host.py, --debug): its llama_decode calls
        # that advance the live sequences (each samples once), the seconds inside them, and the
        # seconds of host work around them (batch building, sampling, grammar, jump-forward).
        self.decode_steps = 0
        self.decode_seconds = 0.0
        self.step_host_seconds = 0.0
        self.grammar_checks = 0  # greedy tokens checked against a grammar
        self.grammar_full_passes = 0  # of those, the ones that needed a mask (a full-vocabulary pass)
        # Admitting an image (encode + prefill) stops the decode steps of the sequences already
        # live, as in llama-server; these count how often and for how long (scripts/bench_pipeline.py).
        # With prefill_piece_tokens the work is spread over many steps: the total stays, the
        # longest wait between two steps of a live sequence shrinks to one piece.
        self.admissions_during_decode = 0
        self.decode_stall_seconds = 0.0
        self.longest_stall_seconds = 0.0
        self.admission_pieces = 0  # prefill pieces run between decode steps
        self._backend_sampling = False
        self._candidate_gap: float | None = None  # masking.next_gap's, carried from row to row
        self._probe_tokens: list[int] | None = None  # FREE_TEXT_PROBES in this vocabulary, on first use
        self._sampler_chains: list[Any] = []
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
        # ignore_eos bars end tokens before the arg-max, which a device-side arg-max cannot
        wanted = s.backend_sampling if s.backend_sampling is not None else self._n_gpu_layers > 0
        self._backend_sampling = wanted and not s.ignore_eos
        if self._backend_sampling:
            configs = self._greedy_chains()
            cparams.samplers = configs
            cparams.n_samplers = self._n_parallel
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
        self._view_batch()
        self._piece_tokens = min(max(0, s.prefill_piece_tokens), self._n_batch)
        self._n_embd_inp = int(llama_cpp.llama_model_n_embd_inp(self._model))
        self._mrope = bool(mtmd.mtmd_decode_use_mrope(self._mtmd))
        self._embd_batch = llama_cpp.llama_batch_ext_init(self._ctx)
        if not self._embd_batch:
            raise EngineLoadError("llama.cpp could not create an embedding batch")

    def _greedy_chains(self) -> Any:
        """One greedy sampler chain per answer sequence, for llama.cpp to run inside llama_decode.

        The context only borrows them: they live (and are freed) with the engine. Per output row
        it then keeps the chosen token and the row's logits, which a grammar rejection needs.
        """
        configs = (llama_cpp.llama_sampler_seq_config * self._n_parallel)()
        for i in range(self._n_parallel):
            chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            self._sampler_chains.append(chain)
            configs[i].seq_id = i + 1  # sequence 0 holds the prefix and samples nothing
            configs[i].sampler = ctypes.cast(chain, ctypes.c_void_p)
        self._sampler_configs = configs
        return ctypes.cast(configs, ctypes.POINTER(llama_cpp.llama_sampler_seq_config))

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
        """Sequences in flight for --parallel 0: as many as the free memory of the KV cache's device holds.

        Each sequence needs its schema's budget of cells (sequence_tokens: image, suffix and the
        longest answer); the free memory is read after the weights are loaded.
        """
        gpu = self._n_gpu_layers > 0
        return parallel_for_memory(
            free_device_memory(gpu=gpu),
            self.kv_bytes_per_token(),
            self._settings.prefix_tokens,
            self._settings.sequence_tokens or DEFAULT_SEQUENCE_TOKENS,
            GPU_PARALLEL_CAP if gpu else CPU_PARALLEL_CAP,
        )

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
            self._batch_views = None
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
        for chain in self._sampler_chains:  # after the context that borrowed them
            llama_cpp.llama_sampler_free(chain)
        self._sampler_chains = []

    def __enter__(self: _Engine) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
