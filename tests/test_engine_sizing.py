"""--parallel 0: the number of sequences comes from free memory and each sequence's KV need."""

from __future__ import annotations

from qvl_label.engine.loading import CPU_PARALLEL_CAP, GPU_PARALLEL_CAP, parallel_for_memory

# Qwen3-VL-8B: 36 layers, 8 KV heads of 128, F16 K and V
KV_8B = 2 * 36 * 8 * 128 * 2
GB = 10**9


def test_a_24_gb_card_with_the_8b_model_runs_dozens_of_sequences() -> None:
    # about 18 GB free once the Q4 weights and the projector are loaded; the en schema's budget
    n = parallel_for_memory(18 * GB, KV_8B, prefix_tokens=3400, sequence_tokens=1800, cap=GPU_PARALLEL_CAP)
    assert 24 <= n <= 40
    # half the memory, about half the sequences: it is the memory that decides, not a fixed number
    half = parallel_for_memory(9 * GB, KV_8B, prefix_tokens=3400, sequence_tokens=1800, cap=GPU_PARALLEL_CAP)
    assert 10 <= half <= n // 2 + 1


def test_longer_answers_mean_fewer_sequences() -> None:
    short = parallel_for_memory(18 * GB, KV_8B, 3400, 1000, GPU_PARALLEL_CAP)
    long = parallel_for_memory(18 * GB, KV_8B, 3400, 4000, GPU_PARALLEL_CAP)
    assert short > 2 * long


def test_caps_and_floors() -> None:
    assert parallel_for_memory(200 * GB, KV_8B, 3400, 1800, GPU_PARALLEL_CAP) == GPU_PARALLEL_CAP
    assert parallel_for_memory(200 * GB, KV_8B, 3400, 1800, CPU_PARALLEL_CAP) == CPU_PARALLEL_CAP
    assert parallel_for_memory(GB // 10, KV_8B, 3400, 1800, GPU_PARALLEL_CAP) == 1  # too little: still one
    assert parallel_for_memory(None, KV_8B, 3400, 1800, GPU_PARALLEL_CAP) == 8  # unknown memory
    assert parallel_for_memory(None, KV_8B, 3400, 1800, CPU_PARALLEL_CAP) == CPU_PARALLEL_CAP
