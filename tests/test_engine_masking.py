"""The grammar's best token without a full mask: next-best candidates and packed bits give the masked arg-max."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from qvl_label.engine import masking
from qvl_label.engine.masking import best_checked, best_in_bits, candidate_order, next_gap

N_VOCAB = 151_936


def best_candidate(row: np.ndarray, allows: Callable[[int, float], bool]) -> int | None:
    """The engine's next-best check with the sampled threshold, as `_choose_rejected` runs it on a first row."""
    order = candidate_order(row)
    return None if order is None else best_checked(row, order, allows)


def _masked_argmax(row: np.ndarray, allowed: np.ndarray) -> int | None:
    masked = np.where(allowed, row, np.float32(-np.inf))
    best = int(np.argmax(masked))
    return best if masked[best] > -np.inf else None


def _pack(allowed: np.ndarray) -> np.ndarray:
    padded = np.zeros((len(allowed) + 31) // 32 * 32, dtype=bool)
    padded[: len(allowed)] = allowed
    return np.packbits(padded, bitorder="little").view(np.int32)


def _rows(rng: np.random.Generator) -> list[np.ndarray]:
    plain = rng.standard_normal(N_VOCAB).astype(np.float32)
    ties = np.round(rng.standard_normal(N_VOCAB), 1).astype(np.float32)  # many equal logits at the top
    flat = np.zeros(N_VOCAB, dtype=np.float32)  # every logit tied
    barred = plain.copy()
    barred[rng.choice(N_VOCAB, 5000, replace=False)] = -np.inf
    return [plain, ties, flat, barred]


def _masks(rng: np.random.Generator, row: np.ndarray) -> list[np.ndarray]:
    top = np.argsort(-row, kind="stable")
    mostly = rng.random(N_VOCAB) < 0.97
    mostly[top[0]] = False  # the arg-max itself is rejected, as when this path runs
    deep = np.ones(N_VOCAB, dtype=bool)
    deep[top[:200]] = False  # none of the next-best tokens is allowed
    few = np.zeros(N_VOCAB, dtype=bool)
    few[rng.choice(N_VOCAB, 7, replace=False)] = True  # a structural point
    last = np.zeros(N_VOCAB, dtype=bool)
    last[N_VOCAB - 1] = True  # a bit in the padding word
    some_words = np.zeros(N_VOCAB, dtype=bool)
    some_words[rng.choice(N_VOCAB // 32, 20, replace=False)[:, None] * 32 + np.arange(32)] = (
        True  # too many to read bit by bit
    )
    scattered = np.zeros(N_VOCAB, dtype=bool)
    scattered[rng.choice(N_VOCAB, 150, replace=False)] = True  # single bits in many words (an enum's first tokens)
    word = np.zeros(N_VOCAB, dtype=bool)
    word[64:96] = True  # every bit of one word, the sign bit too
    return [mostly, deep, few, last, some_words, scattered, word, np.zeros(N_VOCAB, dtype=bool)]


@pytest.mark.parametrize("seed", range(4))
def test_candidates_and_bits_give_the_masked_argmax(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for row in _rows(rng):
        for allowed in _masks(rng, row):
            expected = _masked_argmax(row, allowed)
            checked: list[int] = []

            def allows(token: int, logit: float, allowed: np.ndarray = allowed, checked: list[int] = checked) -> bool:
                checked.append(token)
                return bool(allowed[token])

            candidate = best_candidate(row, allows)
            assert candidate is None or candidate == expected
            assert len(checked) <= masking.MAX_CHECKS
            assert best_in_bits(row, _pack(allowed), N_VOCAB) == expected
            order = candidate_order(row)
            assert best_in_bits(row, _pack(allowed), N_VOCAB, order) == expected
            for gap in (0.3, 1.0, 4.0):  # the one-pass threshold below the row's best logit
                order = candidate_order(row, int(np.argmax(row)), gap)
                checked.clear()
                found = None if order is None else best_checked(row, order, allows)
                assert found is None or found == expected
                assert best_in_bits(row, _pack(allowed), N_VOCAB, order) == expected


def test_candidates_answer_inside_free_text_and_defer_at_structural_points() -> None:
    """The cheap path is taken where it is meant to be, so that it saves the masks it should."""
    rng = np.random.default_rng(7)
    row = rng.standard_normal(N_VOCAB).astype(np.float32)
    order = np.argsort(-row, kind="stable")
    free = np.ones(N_VOCAB, dtype=bool)
    free[order[:3]] = False  # the three best tokens hold a quote
    assert best_candidate(row, lambda t, _: bool(free[t])) == int(order[3])
    structural = np.zeros(N_VOCAB, dtype=bool)
    structural[order[5000]] = True
    assert best_candidate(row, lambda t, _: bool(structural[t])) is None
    assert best_in_bits(row, _pack(structural), N_VOCAB) == int(order[5000])


def test_candidates_answer_from_the_mask_where_none_of_the_checked_ones_is_allowed() -> None:
    """Past the checked few, the mask's bits over the candidates give the answer without reading the rest."""
    rng = np.random.default_rng(11)
    row = rng.standard_normal(N_VOCAB).astype(np.float32)
    order = candidate_order(row)
    assert order is not None and order.size > masking.MAX_CHECKS + 1
    allowed = np.ones(N_VOCAB, dtype=bool)
    allowed[order[: masking.MAX_CHECKS + 1]] = False
    assert best_candidate(row, lambda t, _: bool(allowed[t])) is None
    assert best_in_bits(row, _pack(allowed), N_VOCAB, order) == int(order[masking.MAX_CHECKS + 1])
    assert best_in_bits(row, _pack(allowed), N_VOCAB, order[:0]) == int(order[masking.MAX_CHECKS + 1])


def test_ties_inside_one_word_go_to_the_lowest_id() -> None:
    row = np.zeros(N_VOCAB, dtype=np.float32)
    allowed = np.zeros(N_VOCAB, dtype=bool)
    allowed[[70, 75, 95, 100]] = True
    row[[75, 95, 100]] = 2.0
    assert best_in_bits(row, _pack(allowed), N_VOCAB) == 75
    row[:] = -np.inf
    assert best_in_bits(row, _pack(allowed), N_VOCAB) is None


def test_bits_past_the_vocabulary_are_never_chosen() -> None:
    """A vocabulary that does not fill its last 32-bit word: set padding bits (tokens that do not exist) are ignored."""
    n_vocab = 100
    row = np.full(n_vocab, -1.0, dtype=np.float32)
    row[37] = 0.5
    allowed = np.zeros(128, dtype=bool)
    allowed[[37, 99, 100, 127]] = True  # 100 and 127 lie in the padding
    bits = _pack(allowed)
    assert best_in_bits(row, bits, n_vocab) == 37
    allowed[37] = False
    assert best_in_bits(row, _pack(allowed), n_vocab) == 99
    allowed[99] = False
    assert best_in_bits(row, _pack(allowed), n_vocab) is None


def test_the_one_pass_gap_follows_the_rows() -> None:
    """The gap starts from a sampled threshold's spread and is scaled towards TARGET_CANDIDATES tokens."""
    rng = np.random.default_rng(3)
    row = rng.standard_normal(N_VOCAB).astype(np.float32)
    sampled = candidate_order(row)
    gap = next_gap(None, sampled, row)
    assert gap is not None and gap > 0
    best = int(np.argmax(row))
    for _ in range(20):
        gap = next_gap(gap, candidate_order(row, best, gap), row)
        assert gap is not None
    caught = candidate_order(row, best, gap)
    assert caught is not None
    assert masking.TARGET_CANDIDATES // 2 <= caught.size <= 2 * masking.TARGET_CANDIDATES
    assert next_gap(gap, None, row) == gap / 2  # too many above it (ties): the next row tries a smaller one
    assert next_gap(None, None, row) is None


def test_the_gap_shrinks_when_it_caught_too_many_and_widens_when_too_few() -> None:
    row = np.zeros(N_VOCAB, dtype=np.float32)
    target = masking.TARGET_CANDIDATES
    narrower = next_gap(1.0, np.arange(2 * target + 1), row)
    wider = next_gap(1.0, np.arange(target // 2 - 1), row)
    assert narrower is not None and narrower < 1.0
    assert wider is not None and wider > 1.0
    assert next_gap(1.0, np.arange(target), row) == 1.0


def test_a_dense_mask_over_logits_far_below_the_forbidden_ones_still_gives_the_masked_argmax() -> None:
    """The dense path pushes forbidden logits down by 1e30; allowed ones lower still fall back to exact selection."""
    rng = np.random.default_rng(5)
    row = rng.standard_normal(N_VOCAB).astype(np.float32)
    allowed = rng.random(N_VOCAB) < 0.6
    row[allowed] = (-1e31 * (1 + rng.random(int(allowed.sum())))).astype(np.float32)
    expected = _masked_argmax(row, allowed)
    assert expected is not None and row[expected] < -1e30
    assert best_in_bits(row, _pack(allowed), N_VOCAB) == expected
    row[allowed] = -np.inf  # nothing allowed is finite: no answer, never a forbidden token
    assert best_in_bits(row, _pack(allowed), N_VOCAB) is None
