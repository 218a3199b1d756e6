"""Writes random-weight GGUF models of the real Qwen3-VL architecture (text model + mmproj).

The files load in the real llama.cpp engine, so tests, `doctor` and benchmarks
exercise the exact code path the real Qwen3-VL weights take, without a download.
The `tiny` shape is a few MB and made in about a second; the `2b` and `8b` shapes
copy the real models' tensor shapes, so compute per token matches the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Frequent English and JSON pieces, merged so the tokenizer is a real BPE (one merge
# is the minimum llama.cpp accepts) and generated text is not only single bytes.
_MERGE_WORDS = (
    "th",
    "he",
    "in",
    "er",
    "an",
    "re",
    "on",
    "at",
    "en",
    "nd",
    "st",
    "es",
    "the",
    "and",
    "ing",
    "ion",
    '":',
    '",',
    "Ġt",
    "Ġa",
    "Ġthe",
)

TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4

# The real Qwen tokenizer: llama.cpp's vocabulary-only GGUF of Qwen2 (MIT, from the sources
# vendored in the llama-cpp-python 0.3.36 sdist: vendor/llama.cpp/models/ggml-vocab-qwen2.gguf,
# licence in data/ggml-vocab-qwen2.LICENSE), stored gzipped. Its 151,936 entries and the
# ids of <|endoftext|>, <|im_start|>, <|im_end|> match Qwen3-VL; ids 151646-151935 are
# [PAD] placeholders, and Qwen3-VL's added tokens are written over the first of them.
QWEN2_VOCAB_FILE = "ggml-vocab-qwen2.gguf.gz"
QWEN3VL_ADDED_TOKENS = (
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
QWEN3VL_FIRST_ADDED_ID = 151646
VOCABULARIES = ("bytes", "qwen")


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of one random-weight model; names follow the HF config."""

    name: str
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_head_dim: int
    text_ff: int
    rope_sections: tuple[int, int, int, int]
    deepstack_layers: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_ff: int
    vision_image_size: int
    vocab_pad_to: int
    context_length: int
    # Gain of the per-head query/key norms. Random weights give near-uniform attention, so a
    # 64-token image among ~3,000 instruction tokens barely moves the answer (10 photos gave 5
    # distinct greedy answers). Sharper attention lets image tokens win heads, so answers
    # depend on the photo (10 of 10 distinct, tests/test_engine.py) and a mix-up of sequences
    # shows in tests.
    qk_norm_gain: float = 1.0


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(
        name="tiny",
        text_hidden=64,
        text_layers=3,
        text_heads=4,
        text_kv_heads=2,
        text_head_dim=16,
        text_ff=128,
        rope_sections=(3, 3, 2, 0),
        deepstack_layers=2,
        vision_hidden=64,
        vision_layers=3,
        vision_heads=2,
        vision_ff=128,
        vision_image_size=128,
        vocab_pad_to=0,
        context_length=8192,
        qk_norm_gain=6.0,
    ),
    # Shapes of Qwen/Qwen3-VL-2B-Instruct and Qwen/Qwen3-VL-8B-Instruct (config.json).
    "2b": ModelShape(
        name="2b",
        text_hidden=2048,
        text_layers=28,
        text_heads=16,
        text_kv_heads=8,
        text_head_dim=128,
        text_ff=6144,
        rope_sections=(24, 20, 20, 0),
        deepstack_layers=3,
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_ff=4096,
        vision_image_size=768,
        vocab_pad_to=151936,
        context_length=262144,
    ),
    "8b": ModelShape(
        name="8b",
        text_hidden=4096,
        text_layers=36,
        text_heads=32,
        text_kv_heads=8,
        text_head_dim=128,
        text_ff=12288,
        rope_sections=(24, 20, 20, 0),
        deepstack_layers=3,
        vision_hidden=1152,
        vision_layers=27,
        vision_heads=16,
        vision_ff=4304,
        vision_image_size=768,
        vocab_pad_to=151936,
        context_length=262144,
    ),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def build_vocab(pad_to: int) -> tuple[list[str], list[int], list[str]]:
    """Byte tokens, a few merges, padding tokens, then the Qwen special tokens."""
    byte_chars = _bytes_to_unicode()
    tokens = [byte_chars[b] for b in range(256)]
    merges: list[str] = []
    known = set(tokens)
    for word in _MERGE_WORDS:
        if word in known:
            continue
        # Split as BPE would have built it: longest known prefix + last char.
        left, right = word[:-1], word[-1]
        if left not in known:
            continue
        merges.append(f"{left} {right}")
        tokens.append(word)
        known.add(word)
    types = [TOKEN_NORMAL] * len(tokens)
    n_special = len(QWEN_SPECIAL_TOKENS)
    while pad_to and len(tokens) < pad_to - n_special:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(TOKEN_CONTROL)
    tokens.extend(QWEN_SPECIAL_TOKENS)
    types.extend([TOKEN_CONTROL] * n_special)
    return tokens, types, merges


class _Weights:
    """Deterministic random tensors, small enough that activations stay finite."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def linear(self, n_out: int, n_in: int) -> NDArray[Any]:
        scale = np.float32(1.0 / np.sqrt(n_in))
        weights: NDArray[Any] = self._rng.standard_normal((n_out, n_in), dtype=np.float32) * scale
        return weights.astype(np.float16)

    def bias(self, n: int) -> NDArray[Any]:
        return (self._rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)

    def norm(self, n: int) -> NDArray[Any]:
        return (1.0 + self._rng.standard_normal(n, dtype=np.float32) * 0.05).astype(np.float32)

    def embedding(self, rows: int, width: int) -> NDArray[Any]:
        return self._rng.standard_normal((rows, width), dtype=np.float32).astype(np.float16)


def _text_tensors(shape: ModelShape, n_vocab: int, w: _Weights) -> Iterator[tuple[str, NDArray[Any]]]:
    d = shape.text_hidden
    q_width = shape.text_heads * shape.text_head_dim
    kv_width = shape.text_kv_heads * shape.text_head_dim
    yield "token_embd.weight", w.embedding(n_vocab, d)
    yield "output_norm.weight", w.norm(d)
    yield "output.weight", w.linear(n_vocab, d)
    for i in range(shape.text_layers):
        p = f"blk.{i}"
        yield f"{p}.attn_norm.weight", w.norm(d)
        yield f"{p}.attn_q.weight", w.linear(q_width, d)
        yield f"{p}.attn_k.weight", w.linear(kv_width, d)
        yield f"{p}.attn_v.weight", w.linear(kv_width, d)
        yield f"{p}.attn_output.weight", w.linear(d, q_width)
        yield f"{p}.attn_q_norm.weight", w.norm(shape.text_head_dim) * np.float32(shape.qk_norm_gain)
        yield f"{p}.attn_k_norm.weight", w.norm(shape.text_head_dim) * np.float32(shape.qk_norm_gain)
        yield f"{p}.ffn_norm.weight", w.norm(d)
        yield f"{p}.ffn_gate.weight", w.linear(shape.text_ff, d)
        yield f"{p}.ffn_up.weight", w.linear(shape.text_ff, d)
        yield f"{p}.ffn_down.weight", w.linear(d, shape.text_ff)


def deepstack_vision_layers(shape: ModelShape) -> list[int]:
    """Vision layers whose features feed the text model's first layers, spread evenly."""
    step = shape.vision_layers // (shape.deepstack_layers + 1)
    return [step * (k + 1) - 1 for k in range(shape.deepstack_layers)]


def _vision_tensors(shape: ModelShape, w: _Weights) -> Iterator[tuple[str, NDArray[Any]]]:
    v = shape.vision_hidden
    merged = v * 4  # 2x2 spatial merge
    patch = 16
    n_pos = (shape.vision_image_size // patch) ** 2
    conv_scale = 1.0 / np.sqrt(3 * patch * patch)
    rng = np.random.default_rng(7)
    for suffix in ("", ".1"):
        kernel = rng.standard_normal((v, 3, patch, patch), dtype=np.float32) * conv_scale
        yield f"v.patch_embd.weight{suffix}", kernel.astype(np.float16)
    yield "v.patch_embd.bias", w.bias(v)
    # ggml interpolates position embeddings only in F32
    yield "v.position_embd.weight", w.embedding(n_pos, v).astype(np.float32) * 0.02
    deepstack = set(deepstack_vision_layers(shape))
    for i in range(shape.vision_layers):
        p = f"v.blk.{i}"
        yield f"{p}.ln1.weight", w.norm(v)
        yield f"{p}.ln1.bias", w.bias(v)
        yield f"{p}.attn_qkv.weight", w.linear(3 * v, v)
        yield f"{p}.attn_qkv.bias", w.bias(3 * v)
        yield f"{p}.attn_out.weight", w.linear(v, v)
        yield f"{p}.attn_out.bias", w.bias(v)
        yield f"{p}.ln2.weight", w.norm(v)
        yield f"{p}.ln2.bias", w.bias(v)
        yield f"{p}.ffn_up.weight", w.linear(shape.vision_ff, v)
        yield f"{p}.ffn_up.bias", w.bias(shape.vision_ff)
        yield f"{p}.ffn_down.weight", w.linear(v, shape.vision_ff)
        yield f"{p}.ffn_down.bias", w.bias(v)
        if i in deepstack:
            yield f"v.deepstack.{i}.norm.weight", w.norm(merged)
            yield f"v.deepstack.{i}.norm.bias", w.bias(merged)
            yield f"v.deepstack.{i}.fc1.weight", w.linear(merged, merged)
            yield f"v.deepstack.{i}.fc1.bias", w.bias(merged)
            yield f"v.deepstack.{i}.fc2.weight", w.linear(shape.text_hidden, merged)
            yield f"v.deepstack.{i}.fc2.bias", w.bias(shape.text_hidden)
    yield "v.post_ln.weight", w.norm(v)
    yield "v.post_ln.bias", w.bias(v)
    yield "mm.0.weight", w.linear(merged, merged)
    yield "mm.0.bias", w.bias(merged)
    yield "mm.2.weight", w.linear(shape.text_hidden, merged)
    yield "mm.2.bias", w.bias(shape.text_hidden)


def _write(path: Path, arch: str, metadata: dict[str, object], tensors: Iterator[tuple[str, NDArray[Any]]]) -> None:
    import gguf  # imported here: only generation needs it, and it is slow to import

    tmp = path.with_suffix(path.suffix + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            raise TypeError(f"unsupported metadata value for {key}")
    for name, array in tensors:
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)


def qwen_vocab() -> tuple[list[str], list[int], list[str]]:
    """The real Qwen tokenizer with Qwen3-VL's added tokens (see QWEN2_VOCAB_FILE)."""
    import gzip
    import tempfile

    from gguf import GGUFReader  # imported here: only generation needs it

    from .datafiles import data_dir

    with tempfile.NamedTemporaryFile(suffix=".gguf") as unpacked:
        unpacked.write(gzip.decompress((data_dir() / QWEN2_VOCAB_FILE).read_bytes()))
        unpacked.flush()
        reader = GGUFReader(unpacked.name)

        def strings(key: str) -> list[str]:
            field = reader.fields[key]
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

        tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
        field = reader.fields["tokenizer.ggml.token_type"]
        types = [int(field.parts[i][0]) for i in field.data]
    for offset, token in enumerate(QWEN3VL_ADDED_TOKENS):
        tokens[QWEN3VL_FIRST_ADDED_ID + offset] = token
        types[QWEN3VL_FIRST_ADDED_ID + offset] = TOKEN_CONTROL if token.startswith("<|") else TOKEN_USER_DEFINED
    return tokens, types, merges


def text_metadata(shape: ModelShape, vocabulary: str = "bytes") -> tuple[dict[str, object], int]:
    tokens, types, merges = qwen_vocab() if vocabulary == "qwen" else build_vocab(shape.vocab_pad_to)
    special = {tok: tokens.index(tok) for tok in QWEN_SPECIAL_TOKENS}
    a = "qwen3vl"
    meta: dict[str, object] = {
        "general.name": f"qvl-label random Qwen3-VL ({shape.name})",
        f"{a}.context_length": shape.context_length,
        f"{a}.embedding_length": shape.text_hidden,
        f"{a}.block_count": shape.text_layers,
        f"{a}.feed_forward_length": shape.text_ff,
        f"{a}.attention.head_count": shape.text_heads,
        f"{a}.attention.head_count_kv": shape.text_kv_heads,
        f"{a}.attention.key_length": shape.text_head_dim,
        f"{a}.attention.value_length": shape.text_head_dim,
        f"{a}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{a}.rope.freq_base": 5000000.0,
        f"{a}.rope.dimension_count": shape.text_head_dim,
        f"{a}.rope.dimension_sections": list(shape.rope_sections),
        f"{a}.n_deepstack_layers": shape.deepstack_layers,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.eos_token_id": special["<|im_end|>"],
        "tokenizer.ggml.padding_token_id": special["<|endoftext|>"],
        "tokenizer.ggml.bos_token_id": special["<|endoftext|>"],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": TINY_CHAT_TEMPLATE,
    }
    return meta, len(tokens)


def vision_metadata(shape: ModelShape) -> dict[str, object]:
    return {
        "general.name": f"qvl-label random Qwen3-VL mmproj ({shape.name})",
        "clip.projector_type": "qwen3vl_merger",
        "clip.has_vision_encoder": True,
        "clip.use_gelu": True,
        "clip.vision.image_size": shape.vision_image_size,
        "clip.vision.patch_size": 16,
        "clip.vision.embedding_length": shape.vision_hidden,
        "clip.vision.feed_forward_length": shape.vision_ff,
        "clip.vision.block_count": shape.vision_layers,
        "clip.vision.attention.head_count": shape.vision_heads,
        "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.projection_dim": shape.text_hidden,
        "clip.vision.spatial_merge_size": 2,
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5],
    }


@dataclass(frozen=True)
class GeneratedModel:
    model: Path
    mmproj: Path


def generate(out_dir: Path, shape_name: str = "tiny", seed: int = 0, vocabulary: str = "bytes") -> GeneratedModel:
    """Write the model and mmproj GGUF files into out_dir (idempotent).

    vocabulary "bytes": a small byte-level BPE (fast, the tests' default); "qwen": the real
    Qwen tokenizer, so prompt and answer token counts are the real model's.
    """
    if shape_name not in SHAPES:
        raise ValueError(f"unknown model shape {shape_name!r}; choose from {', '.join(SHAPES)}")
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; choose from {', '.join(VOCABULARIES)}")
    shape = SHAPES[shape_name]
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = shape.name if vocabulary == "bytes" else f"{shape.name}-qwenvocab"
    model_path = out_dir / f"qwen3vl-{tag}-random-model.gguf"
    mmproj_path = out_dir / f"qwen3vl-{shape.name}-random-mmproj.gguf"
    if not model_path.exists():
        meta, n_vocab = text_metadata(shape, vocabulary)
        _write(model_path, "qwen3vl", meta, _text_tensors(shape, n_vocab, _Weights(seed)))
    if not mmproj_path.exists():
        _write(mmproj_path, "clip", vision_metadata(shape), _vision_tensors(shape, _Weights(seed + 1)))
    return GeneratedModel(model=model_path, mmproj=mmproj_path)
