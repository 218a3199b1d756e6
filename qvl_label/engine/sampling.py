"""Choosing each sequence's next token: greedy or seeded temperature, under its grammar and well-formed UTF-8."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np
from numpy.typing import NDArray

from .constraints import LlguidanceConstraint, LlguidanceFactory
from .grammar import UTF8_START, utf8_advance
from .loading import ModelLoading
from .masking import FREE_TEXT_PROBES, best_checked, best_in_bits, candidate_order, next_gap
from .protocol import GenerationRequest
from .state import _Slot


class _Buffer:
    """A C buffer as numpy sees it through the array interface (no copy)."""

    def __init__(self, address: int, shape: tuple[int, ...]) -> None:
        self.__array_interface__ = {"data": (address, False), "shape": shape, "typestr": "<f4", "version": 3}


def float_rows(pointer: Any, n_rows: int, n_cols: int) -> NDArray[np.float32]:
    """llama.cpp's float buffer as an (n_rows, n_cols) array, a view of its memory.

    np.ctypeslib.as_array builds a ctypes array type per call; the array interface does not.
    """
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    if not address:
        raise RuntimeError("llama.cpp returned no logits")
    return np.asarray(_Buffer(address, (n_rows, n_cols)))


class Sampling(ModelLoading):
    """The sampler: the grammar checks the best token first, a full-vocabulary pass only on rejection."""

    def _setup_sampling(self, slot: _Slot, request: GenerationRequest) -> None:
        schema = request.schema
        slot.constraint = self._constraints.new(schema) if schema is not None and self._constraints else None
        slot.utf8 = UTF8_START
        slot.temperature = self._settings.temperature if request.temperature is None else request.temperature
        slot.rng = np.random.default_rng(self._settings.seed) if slot.temperature > 0 else None

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
        # With backend sampling, llama.cpp keeps a prompt's last logits with the sampler's choice.
        fetch = llama_cpp.llama_get_sampled_logits_ith if self._backend_sampling else llama_cpp.llama_get_logits_ith
        logits = float_rows(fetch(self._ctx, index), 1, self._n_vocab)[0]
        if self._settings.ignore_eos:
            logits[self._eog_ids()] = -np.inf
        return self._sample_logits(slot, logits)

    def _sample_logits(self, slot: _Slot, logits: NDArray[np.float32]) -> int:
        """`_sample` on one row of logits (end-of-generation already barred where asked)."""
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
        if constraint is not None and not self._is_end(token):
            constraint.accept(token)
        return token

    def _choose_tokens(self, live: list[_Slot], outputs: list[int]) -> list[int | RuntimeError]:
        """Every live sequence's next token after a decode step; live[k]'s logits are batch output outputs[k].

        Greedy under llguidance (the default), or free: the best token of every row comes from
        llama.cpp's backend sampler (chosen inside llama_decode), or else from one numpy arg-max
        over all rows; the grammar checks each row's best token alone and takes it if allowed
        (one llguidance call), and only the rows it rejects go further (`_choose_rejected`:
        next-best tokens, then masks).
        Rows with a temperature or llama.cpp's grammar, and free rows whose best token breaks
        UTF-8, go one at a time through `_sample_logits`. A grammar that fails gives that row's
        RuntimeError.
        """
        rows = self._step_logits(len(live), outputs)
        best = self._device_best(outputs) if self._backend_sampling else None
        if best is None:
            best = rows.argmax(axis=1)
        chosen: list[int | None] = [None] * len(live)
        accepted = [False] * len(live)  # rows whose grammar has taken its token already
        rejected: list[int] = []  # rows whose best token the llguidance grammar rejects
        for k, (slot, token) in enumerate(zip(live, best.tolist(), strict=True)):
            constraint = slot.constraint
            if slot.rng is not None or (constraint is not None and not isinstance(constraint, LlguidanceConstraint)):
                continue  # one by one, below
            if constraint is None:
                if self._keeps_utf8(slot, token):
                    chosen[k] = token
                continue  # else one by one, below
            self.grammar_checks += 1
            if constraint.try_accept(token):  # the check and the accept in one call: most rows end here
                chosen[k] = token
                accepted[k] = True
            else:
                rejected.append(k)
        if rejected:
            self._choose_rejected(live, rows, best, rejected, chosen)
        out: list[int | RuntimeError] = []
        for k, slot in enumerate(live):
            try:
                if chosen[k] is None:  # one by one: it counts its own grammar check
                    out.append(self._sample_logits(slot, rows[k]))
                    continue
                picked = chosen[k]
                assert picked is not None
                if slot.constraint is not None and not accepted[k] and not self._is_end(picked):
                    slot.constraint.accept(picked)
                out.append(picked)
            except RuntimeError as exc:
                out.append(exc)
        return out

    def _choose_rejected(
        self,
        live: list[_Slot],
        rows: NDArray[np.float32],
        best: NDArray[np.int64],
        rejected: list[int],
        chosen: list[int | None],
    ) -> None:
        """The grammar's best token of each rejected row: its next-best tokens checked first, then masks.

        Inside free text one of the next few tokens is usually allowed, and checking them one by
        one is far cheaper than a mask; at structural points (which a few one-token probes tell)
        the mask is cheap and the row goes to it at once (`allowed_bits` computes those on this
        thread and sends free-text masks to llguidance's pool where it has threads for them).
        Every way gives the masked arg-max.

        Next-best checks only with jump-forward: where the grammar forces bytes, llguidance's
        one-token check accepts tokens its mask leaves out (`"` where the mask wants `":`), and
        jump-forward consumes those points before anything is sampled there.
        """
        masked: list[int] = []
        grammars: list[LlguidanceConstraint] = []  # the masked rows' constraints, in their order
        orders: list[NDArray[np.int64] | None] = []  # their candidates, where they were looked for
        costly: list[bool] = []  # whether their mask walks most of the vocabulary (not a structural point)
        for k in rejected:
            constraint = live[k].constraint
            assert isinstance(constraint, LlguidanceConstraint)
            order = None
            free = not self._jump_forward or self._in_free_text(constraint)
            if self._jump_forward and free:
                order = candidate_order(rows[k], int(best[k]), self._candidate_gap)
                self._candidate_gap = next_gap(self._candidate_gap, order, rows[k])
            token = None if order is None else best_checked(rows[k], order, constraint.allows)
            if token is None:
                masked.append(k)
                grammars.append(constraint)
                orders.append(order)
                costly.append(free)
            else:
                chosen[k] = token
        if not masked:
            return
        self.grammar_full_passes += len(masked)
        factory = self._constraints
        assert isinstance(factory, LlguidanceFactory)
        bits = factory.allowed_bits(grammars, costly)
        for row_bits, k, order in zip(bits, masked, orders, strict=True):
            token = best_in_bits(rows[k], row_bits, self._n_vocab, order)
            # nothing allowed: the grammar is complete but end-of-generation is banned
            chosen[k] = int(llama_cpp.llama_vocab_eos(self._vocab)) if token is None else token

    def _in_free_text(self, constraint: LlguidanceConstraint) -> bool:
        """Whether most common-text probes are allowed here: inside a free string, not at a structural point."""
        if self._probe_tokens is None:
            pieces = [self.tokenize(text) for text in FREE_TEXT_PROBES]
            self._probe_tokens = [ids[0] for ids in pieces if len(ids) == 1]
        if not self._probe_tokens:
            return True  # a vocabulary without such tokens: next-best checks first, as for free text
        total = len(self._probe_tokens)
        passed = 0
        for checked, token in enumerate(self._probe_tokens, start=1):
            passed += constraint.allows(token, 0.0)
            if 2 * passed > total or 2 * (passed + total - checked) <= total:
                break  # the majority is known either way
        return 2 * passed > total

    def _step_logits(self, n_rows: int, outputs: list[int]) -> NDArray[np.float32]:
        """The step's logits, one row per output; a view of llama.cpp's buffers, not a copy.

        With backend sampling llama.cpp keeps each row where llama_get_sampled_logits_ith finds
        it (its plain logits buffer is left unfilled); rows of one step lie one after another.
        """
        if self._backend_sampling:
            first = llama_cpp.llama_get_sampled_logits_ith(self._ctx, outputs[0])
            if first:
                return float_rows(first, n_rows, self._n_vocab)
        block = float_rows(llama_cpp.llama_get_logits(self._ctx), n_rows, self._n_vocab)
        if self._settings.ignore_eos:
            block[:, self._eog_ids()] = -np.inf
        return block

    def _device_best(self, outputs: list[int]) -> NDArray[np.int64] | None:
        """The tokens llama.cpp's backend sampler chose; None if it chose none (the backend refused it)."""
        tokens = np.array([llama_cpp.llama_get_sampled_token_ith(self._ctx, i) for i in outputs], dtype=np.int64)
        return None if (tokens == llama_cpp.LLAMA_TOKEN_NULL).any() else tokens

    def _eog_ids(self) -> NDArray[Any]:
        if not hasattr(self, "_eog_array"):
            self._eog_array = np.array(
                [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)], dtype=np.int64
            )
        return self._eog_array
