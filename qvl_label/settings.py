"""The one settings object the CLI resolves and passes down; the core never reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_IMAGE_MIN_TOKENS = 64
# 24x24 merged patches = 768x768 px: enough for pack text on product photos, a
# quarter of llama.cpp's 4096-token default, so prefill stays cheap.
DEFAULT_IMAGE_MAX_TOKENS = 576
DEFAULT_SEED = 42
GRAMMAR_ENGINES = ("auto", "llguidance", "gbnf")


@dataclass(frozen=True)
class EngineSettings:
    """How to load and drive the model. 0 / -1 mean 'choose automatically'."""

    model_path: Path
    mmproj_path: Path
    n_ctx: int = 0  # 0: prefix_tokens + n_parallel * sequence_tokens
    n_gpu_layers: int = -1
    threads: int = 0
    n_parallel: int = 1  # 0: chosen from memory and the build (see engine.auto_parallel)
    n_batch: int = 2048
    image_min_tokens: int = DEFAULT_IMAGE_MIN_TOKENS
    image_max_tokens: int = DEFAULT_IMAGE_MAX_TOKENS
    flash_attn: bool | None = None
    temperature: float = 0.0
    seed: int = DEFAULT_SEED
    verbose: bool = False
    # Upper bounds the Labeler derives from the prompt, used to size the context.
    prefix_tokens: int = 0
    sequence_tokens: int = 0
    # The instruction text every sequence starts with: a fixed --ctx is checked against it at load.
    prefix_text: str = ""
    ignore_eos: bool = False  # benchmarks only: every answer runs to max_tokens
    grammar_engine: str = "auto"  # "llguidance", "gbnf", or "auto" (llguidance where installed)
    jump_forward: bool = True  # append the tokens the grammar forces without sampling them
    # A photo admitted while other sequences decode is prefilled in pieces of this many image
    # embeddings, one piece between two decode steps; 0: all at once while they wait.
    prefill_piece_tokens: int = 64
    # Greedy arg-max chosen inside llama_decode (llama.cpp's backend sampling); the host checks it
    # against the grammar and masks only rejected rows. False: the host takes every arg-max.
    # None: on when layers are offloaded to a GPU, where it spares copying every row's logits;
    # off on the CPU, where ggml's arg-max inside llama_decode costs more than numpy's outside.
    backend_sampling: bool | None = None


@dataclass(frozen=True)
class LabelSettings:
    """What to ask the model for and how to shape the record."""

    languages: tuple[str, ...] = ("zh",)
    question: str | None = None
    max_tokens: int = 0  # 0: derived from the languages asked for
    channel: str = "generic"
    strict: bool = False
    template_file: Path | None = None


@dataclass(frozen=True)
class ModelRef:
    """Where the model files came from, recorded in every output record."""

    preset: str | None
    repo: str | None
    revision: str | None
    model_file: str
    mmproj_file: str


DEFAULT_PRODUCT_MAX_TOKENS = 1152
DEFAULT_PRODUCT_MAX_PHOTOS = 4


@dataclass(frozen=True)
class ProductSettings:
    """Several photos of one product in one request: the image token budget they share, and how many are sent."""

    max_tokens: int = DEFAULT_PRODUCT_MAX_TOKENS
    max_photos: int = DEFAULT_PRODUCT_MAX_PHOTOS


@dataclass(frozen=True)
class Settings:
    engine: EngineSettings
    label: LabelSettings = field(default_factory=LabelSettings)
    model_ref: ModelRef | None = None
    # Set when photos are labelled as products (batch --group-by / --groups, describe --as-product).
    product: ProductSettings | None = None
