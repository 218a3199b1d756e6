"""Why images are encoded one at a time: the vendored mtmd takes one Qwen3-VL image chunk per encoding batch."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp.mtmd_cpp as mtmd

from qvl_label import tinymodel
from qvl_label.engine.llama import LlamaCppEngine
from qvl_label.pipeline.images import load_image
from qvl_label.settings import EngineSettings

VIEWS = Path(__file__).parent / "fixtures" / "views"


def test_a_second_qwen3vl_image_chunk_is_refused_by_mtmd_batch(tiny_model: tinymodel.GeneratedModel) -> None:
    """docs/internals/engine.md ("Batched image encoding"): when this fails, llama.cpp batches
    Qwen3-VL images, and the engine's admission should encode waiting images together."""
    settings = EngineSettings(model_path=tiny_model.model, mmproj_path=tiny_model.mmproj, image_max_tokens=64)
    photo = sorted(VIEWS.glob("*.jpg"))[0]
    image = load_image(photo, 8, 64).prepared  # the same size twice: the friendliest case for a batch
    with LlamaCppEngine(settings) as engine:
        bitmaps = [engine._bitmap(image), engine._bitmap(image)]
        chunks = mtmd.mtmd_input_chunks_init()
        batch = None
        try:
            text = mtmd.mtmd_input_text()
            raw = (engine._marker * 2).encode()
            text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), False, True
            array = (mtmd.mtmd_bitmap_p_ctypes * 2)(*bitmaps)
            assert mtmd.mtmd_tokenize(engine._mtmd, chunks, ctypes.byref(text), array, 2) == 0
            images = [
                mtmd.mtmd_input_chunks_get(chunks, i)
                for i in range(mtmd.mtmd_input_chunks_size(chunks))
                if mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, i))
                == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
            ]
            assert len(images) == 2
            batch = mtmd.mtmd_batch_init(engine._mtmd)
            assert batch
            assert [mtmd.mtmd_batch_add_chunk(batch, chunk) for chunk in images] == [0, 2]  # 2: the batch is full
        finally:
            if batch:
                mtmd.mtmd_batch_free(batch)
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
