"""The grammar's best token of a row of logits without a full mask where possible, and from packed bits where not."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

# A rejected arg-max is usually one of two cases. Inside a free string the grammar forbids only a
# few tokens (a quote, a control character), so one of the next-best tokens is allowed: checking
# those one by one (~1.5 us each) is far cheaper than llguidance's mask there (~1.2 ms on one
# core: most of the vocabulary is allowed). At a structural point (a comma, a closing brace, an
# enum, a string at its maxLength) almost nothing is allowed: the mask is cheap there (~50 us),
# its few set bits are read without unpacking the rest, and looking for next-best tokens (a pass
# over the row's 152k logits from llama.cpp's buffer, ~60-100 us) would be wasted.
#
# Which case a row is in costs a few one-token checks to tell: common letters and words
# (FREE_TEXT_PROBES) are allowed inside a free string and not at a structural point. Measured on
# the full schema (scripts/bench_host.py's workload, 3,760 rejected rows): rows where at most one
# probe passed needed the mask 99% of the time, rows where all passed found a next-best token
# 84% of the time. The probes only choose the order of two exact methods, never the answer.
FREE_TEXT_PROBES = ("a", "e", " the")
SAMPLE_STRIDE = 16  # the threshold for "next-best" comes from every 16th logit ...
SAMPLE_RANK = 4  # ... as its 4th largest: about 64 tokens of 150k lie above it
MAX_CANDIDATES = 512  # more than this above the threshold (ties, a flat row): the mask is cheaper
TARGET_CANDIDATES = 64  # what the one-pass threshold's gap is tuned to catch
# Candidates checked one by one before the mask is asked for: a check is one llguidance call, a
# mask inside free text walks most of the vocabulary. On scripts/bench_host.py's workload (32
# sequences) 8 checks left 113 of 648 rows to the mask, 40 leave 22
# (scripts/measure_rejected_rows.py).
MAX_CHECKS = 40
SPARSE_WORDS = 8  # masks with at most this many non-zero 32-bit words are read bit by bit
PUSH_DOWN = np.float32(-1e30)  # added to forbidden logits in a dense mask's arg-max


def candidate_order(
    row: NDArray[np.float32], best: int | None = None, gap: float | None = None
) -> NDArray[np.int64] | None:
    """Every token of the row at or above a high threshold, best first (ties by lowest id); None if none fits.

    With `best` (the row's arg-max, known from the step) and `gap`, the threshold is the best
    logit less the gap: one pass over the row. Else it is the SAMPLE_RANK-th largest of every
    SAMPLE_STRIDE-th logit (about 64 tokens lie above it), which costs a second pass. None when
    the threshold is not finite or more than MAX_CANDIDATES tokens reach it (ties, a flat row).
    Every token outside the order has a lower logit than every token in it, whatever the threshold.
    """
    if best is not None and gap is not None:
        threshold = row[best] - np.float32(gap)
    else:
        sample = row[::SAMPLE_STRIDE]
        if sample.size <= SAMPLE_RANK:
            return None
        threshold = np.partition(sample, sample.size - SAMPLE_RANK)[sample.size - SAMPLE_RANK]
    if not np.isfinite(threshold):
        return None
    candidates = np.flatnonzero(row >= threshold)
    if candidates.size > MAX_CANDIDATES:
        return None
    return candidates[np.lexsort((candidates, -row[candidates]))]


def next_gap(gap: float | None, order: NDArray[np.int64] | None, row: NDArray[np.float32]) -> float | None:
    """The gap for the next row's one-pass threshold, kept near TARGET_CANDIDATES tokens.

    Rows of one model spread their logits alike, so the distance from the best logit down to
    the ~64th changes slowly; a gap that caught too many or too few is scaled, and a row with
    no order (flat, or too many tokens above the threshold) halves it.
    """
    if order is None:
        return None if gap is None else gap / 2
    if gap is None:  # from the sampled threshold: the spread this order covers
        spread = float(row[order[0]] - row[order[-1]])
        return spread if spread > 0 and np.isfinite(spread) else None
    if order.size > 2 * TARGET_CANDIDATES:
        return gap * 0.8
    if order.size < TARGET_CANDIDATES // 2:
        return gap * 1.25
    return gap


def best_checked(
    row: NDArray[np.float32], order: NDArray[np.int64], allows: Callable[[int, float], bool]
) -> int | None:
    """The first of the order's best MAX_CHECKS tokens the grammar allows, or None.

    `allows(token, logit)` is the grammar's one-token check (SequenceConstraint.allows).
    Exact when `order` comes from candidate_order: every token with a higher logit than the
    answer was checked before it, so the answer is the masked arg-max whenever it is not None.
    """
    for token in order[:MAX_CHECKS].tolist():
        if allows(token, float(row[token])):
            return int(token)
    return None


def best_in_bits(
    row: NDArray[np.float32], bits: NDArray[np.int32], n_vocab: int, order: NDArray[np.int64] | None = None
) -> int | None:
    """The arg-max of the row over the tokens whose bit is set (llguidance's packed mask); None if none is.

    With `order` (candidate_order's, for this row): its first allowed token, if it has one, is the
    answer, since every other token has a lower logit. Else, a few set words (a structural
    point): their bits are read one by one; more: only those words are expanded; many: one
    unpack and a masked arg-max over the row. Ties go to the lowest id every way.
    """
    if order is not None and order.size:
        allowed_in_order = np.flatnonzero((bits[order >> 5] >> (order & 31)) & 1)
        if allowed_in_order.size:
            return int(order[allowed_in_order[0]])
    words = np.flatnonzero(bits != 0)  # numpy's nonzero is fastest on booleans
    if words.size == 0:
        return None
    if words.size <= SPARSE_WORDS:
        return _best_of_few_words(row, bits, words, n_vocab)
    if words.size * 32 <= n_vocab // 16:
        positions = np.flatnonzero(np.unpackbits(bits[words].view(np.uint8), bitorder="little"))
        ids = words[positions >> 5] * 32 + (positions & 31)  # only the set words' bits, lowest id first
        ids = ids[ids < n_vocab]
        values = row[ids]
        best = int(np.argmax(values))
        return int(ids[best]) if values[best] > -np.inf else None
    allowed = np.unpackbits(bits.view(np.uint8), bitorder="little", count=n_vocab).view(np.bool_)
    # Branch-free: forbidden tokens are pushed down by 1e30 rather than selected out (np.where
    # over a scattered mask mispredicts its branches). The
    # result is the masked arg-max whenever it is allowed: it beats every allowed token, and a
    # forbidden one it ties with would have come first. Else (every allowed logit below -1e29,
    # or none allowed) the exact selection decides.
    best = int(np.argmax(row + (~allowed) * PUSH_DOWN))
    if allowed[best]:
        return best
    masked = np.where(allowed, row, np.float32(-np.inf))
    best = int(np.argmax(masked))
    return best if masked[best] > -np.inf else None


def _best_of_few_words(
    row: NDArray[np.float32], bits: NDArray[np.int32], words: NDArray[np.int64], n_vocab: int
) -> int | None:
    """best_in_bits for a mask of a few non-zero words: each set bit in plain Python, lowest id first.

    A structural point allows a handful of tokens; a dozen numpy calls to expand them would cost
    more than reading them.
    """
    best: int | None = None
    best_value = -np.inf
    for word in words.tolist():
        remaining = int(bits[word]) & 0xFFFFFFFF
        base = word * 32
        while remaining:
            lowest = remaining & -remaining
            remaining ^= lowest
            token = base + lowest.bit_length() - 1
            if token >= n_vocab:
                break
            value = float(row[token])
            if value > best_value:  # strictly: an equal logit later has a higher id
                best, best_value = token, value
    return best
