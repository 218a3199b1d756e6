"""The grammar's best token of a row of logits without a full mask where possible, and from packed bits where not."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

# A rejected arg-max is usually one of two cases. Inside a free string the grammar forbids only a
# few tokens (a quote, a control character), so one of the next-best tokens is allowed: checking
# those one by one (~1.5 us each) is far cheaper than llguidance's mask over 150k tokens (~0.5 ms
# there). At a structural point (a comma, a closing brace, an enum) almost nothing is allowed;
# the mask is cheap there, and its few set bits are read without unpacking the rest.
SAMPLE_STRIDE = 16  # the threshold for "next-best" comes from every 16th logit ...
SAMPLE_RANK = 4  # ... as its 4th largest: about 64 tokens of 150k lie above it
MAX_CANDIDATES = 512  # more than this above the threshold (ties, a flat row): the mask is cheaper
MAX_CHECKS = 8  # candidates checked one by one before the mask is asked for
_SHIFTS = np.arange(32, dtype=np.int32)


def best_candidate(row: NDArray[np.float32], allows: Callable[[int, float], bool]) -> int | None:
    """The best allowed token among the row's highest logits, or None if none of those is allowed.

    `allows(token, logit)` is the grammar's one-token check (SequenceConstraint.allows).

    Exact: every token with a higher logit than the answer is among the candidates and was
    checked before it (ties by lowest id, as numpy's arg-max and the masked path order them),
    so the answer is the masked arg-max whenever it is not None.
    """
    sample = row[::SAMPLE_STRIDE]
    if sample.size <= SAMPLE_RANK:
        return None
    threshold = np.partition(sample, sample.size - SAMPLE_RANK)[sample.size - SAMPLE_RANK]
    if not np.isfinite(threshold):
        return None
    candidates = np.flatnonzero(row >= threshold)
    if candidates.size > MAX_CANDIDATES:
        return None
    order = candidates[np.lexsort((candidates, -row[candidates]))]
    for token in order[:MAX_CHECKS].tolist():
        if allows(token, float(row[token])):
            return int(token)
    return None


def best_in_bits(row: NDArray[np.float32], bits: NDArray[np.int32], n_vocab: int) -> int | None:
    """The arg-max of the row over the tokens whose bit is set (llguidance's packed mask); None if none is.

    Few set words (a structural point): only those words are expanded. Many: one unpack and a
    masked arg-max over the row. Ties go to the lowest id either way.
    """
    words = np.flatnonzero(bits)
    if words.size == 0:
        return None
    if words.size * 32 <= n_vocab // 16:
        expanded = ((bits[words, None] >> _SHIFTS) & 1).astype(bool)
        ids = (words[:, None] * 32 + _SHIFTS)[expanded]
        ids = ids[ids < n_vocab]
        values = row[ids]
        best = int(np.argmax(values))
        return int(ids[best]) if values[best] > -np.inf else None
    allowed = np.unpackbits(bits.view(np.uint8), bitorder="little")[:n_vocab].view(np.bool_)
    masked = np.where(allowed, row, np.float32(-np.inf))
    best = int(np.argmax(masked))
    return best if masked[best] > -np.inf else None
