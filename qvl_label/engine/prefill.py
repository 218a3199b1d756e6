"""Prefilling one request: the prefix copied, the images encoded and their embeddings evaluated, in pieces if asked."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Generator
from typing import Any

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

from .protocol import GenerationRequest, PreparedImage
from .sampling import Sampling
from .state import _Slot


class ImagePrefill(Sampling):
    """One request's prompt into its sequence: whole, or a piece at a time between decode steps."""

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
