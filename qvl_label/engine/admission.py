"""Admitting requests into slots and ending them: context room, the first sample, emitted tokens, the result."""

from __future__ import annotations

import time

import llama_cpp

from .grammar import UTF8_START, utf8_advance
from .prefill import ImagePrefill
from .protocol import Generation, GenerationRequest, Timings, TokenCounts
from .state import _Slot


class Admission(ImagePrefill):
    """A sequence's life outside the decode step: started, fed its sampled and forced tokens, finished."""

    def _start(self, slot: _Slot, request: GenerationRequest, in_pieces: bool = False) -> Generation | None:
        """Prefill a free slot and sample its first token; returns a result if it is already done.

        `in_pieces`: only set the prefill up; `_advance` runs it a piece at a time.
        """
        slot.request = request
        slot.reserved = self._need(request)
        slot.output = bytearray()
        slot.tokens = TokenCounts()
        slot.timings = Timings()
        slot.started = time.perf_counter()
        try:
            self._setup_sampling(slot, request)
            # The answer's opening the grammar fixes (`{"scene":"`) is evaluated with the prompt.
            slot.opening = self._forced(slot)[: request.max_tokens]
            prefill = self._prefill(slot, request, slot.opening, in_pieces)
            if in_pieces:
                slot.admission = prefill
                return None
            for _ in prefill:
                pass
        except (RuntimeError, ValueError) as exc:
            return self._finish(slot, "error", str(exc))
        return self._begin_answer(slot)

    def _advance(self, slot: _Slot) -> Generation | None:
        """Run the next piece of a slot's prefill; after the last one, sample its first token."""
        assert slot.admission is not None
        self.admission_pieces += 1
        try:
            next(slot.admission)
            return None
        except StopIteration:
            slot.admission = None
        except (RuntimeError, ValueError) as exc:
            return self._finish(slot, "error", str(exc))
        return self._begin_answer(slot)

    def _begin_answer(self, slot: _Slot) -> Generation | None:
        """The prompt is evaluated: the forced opening counts as output, then the first sample."""
        ended = self._emit(slot, slot.opening, first_forced=0)
        assert slot.request is not None
        if slot.request.on_text is not None and (failed := self._tell(slot, 0)) is not None:
            return failed
        if ended is not None:
            return self._finish(slot, ended)
        return self._sample_and_accept(slot, -1)

    def _sample_and_accept(self, slot: _Slot, index: int, step_ms: float | None = None) -> Generation | None:
        """The next token and what it forces; a grammar that fails ends this sequence only, as an error.

        `step_ms`, from a decode step: this sequence's share of it, counted with the sampling time.
        """
        started = time.perf_counter()
        try:
            token = self._sample(slot, index)
        except RuntimeError as exc:
            return self._finish(slot, "error", str(exc))
        if step_ms is not None:
            slot.timings.decode_ms += step_ms + (time.perf_counter() - started) * 1000
        return self._accept(slot, token)

    def _forced(self, slot: _Slot) -> list[int]:
        """With jump-forward, the tokens the grammar now determines (accepted by it already)."""
        if not self._jump_forward or slot.constraint is None:
            return []
        return slot.constraint.forced()

    def _emit(self, slot: _Slot, tokens: list[int], first_forced: int) -> str | None:
        """Add tokens to the answer (those from `first_forced` on were forced); "length" once it holds max_tokens.

        Tokens past max_tokens are left out, as the answer ends there.
        """
        request = slot.request
        assert request is not None
        if not tokens:
            return None
        counts = slot.tokens
        room = max(1, request.max_tokens - counts.completion)
        if len(tokens) > room:
            tokens = tokens[:room]
        pieces = [self._piece_of(token) for token in tokens]
        if slot.constraint is None or not slot.constraint.guarantees_utf8:  # else never read
            for piece in pieces:
                slot.utf8 = utf8_advance(slot.utf8, piece) or UTF8_START
        slot.output += b"".join(pieces)
        counts.completion += len(tokens)
        counts.forced += max(0, len(tokens) - first_forced)
        return "length" if counts.completion >= request.max_tokens else None

    def _accept(self, slot: _Slot, token: int) -> Generation | None:
        """Take a sampled token and what the grammar forces after it; they feed the next decode step.

        Runs for every live sequence every step, so it asks the grammar once for the forced
        run and emits the token and the run together.
        """
        if self._is_end(token):
            return self._finish(slot, "stop")
        try:
            pending = [token, *self._forced(slot)]
        except RuntimeError as exc:
            return self._finish(slot, "error", str(exc))
        before = len(slot.output)
        ended = self._emit(slot, pending, first_forced=1)
        request = slot.request
        assert request is not None
        if request.on_text is not None and (failed := self._tell(slot, before)) is not None:
            return failed
        if ended is not None:
            return self._finish(slot, ended)
        if slot.constraint is not None and slot.constraint.complete():
            return self._finish(slot, "stop")  # only end-of-generation could follow: no step for it
        slot.pending = pending
        return None

    def _tell(self, slot: _Slot, before: int) -> Generation | None:
        """Pass the answer's bytes from `before` on to the request's on_text (set: the caller checked).

        A callback that raises is its consumer's failure (a closed event loop, a bug): it ends
        this sequence as an error; the engine and the other sequences go on.
        """
        assert slot.request is not None and slot.request.on_text is not None
        if len(slot.output) == before:
            return None  # a token without text (a special one)
        try:
            slot.request.on_text(bytes(slot.output[before:]))
        except Exception as exc:
            return self._finish(slot, "error", f"on_text callback failed: {type(exc).__name__}: {exc}")
        return None

    def _finish(self, slot: _Slot, reason: str, error: str | None = None) -> Generation:
        assert slot.request is not None
        slot.timings.total_ms = (time.perf_counter() - slot.started) * 1000
        result = Generation(
            key=slot.request.key,
            text=slot.output.decode("utf-8", errors="replace"),
            finish_reason=reason,
            tokens=slot.tokens,
            timings=slot.timings,
            error=error,
        )
        if slot.constraint is not None:
            slot.constraint.close()
        slot.constraint = None
        slot.pending = []
        if slot.admission is not None:  # ended mid-prefill (cancelled, closed): frees its chunks
            slot.admission.close()
            slot.admission = None
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.request = None
        return result

    @staticmethod
    def _need(request: GenerationRequest) -> int:
        images = sum((image.width // 32) * (image.height // 32) + 2 for image in request.images)
        return images + len(request.suffix.encode()) + request.max_tokens

    def _fits(self, request: GenerationRequest, slots: list[_Slot]) -> bool:
        """Admission control: start a sequence only when the context has room for all of them."""
        live = [s for s in slots if s.request is not None]
        if not live:
            return True  # alone it either fits or gets its own clear error
        if request.prefix != self._prefix_text:
            # Another instruction prefix (a server request in another language or channel): the
            # live sequences still hold the old prefix's cells, uncounted here, so the new one is
            # evaluated only once they have finished.
            return False
        in_use = self._prefix_len + sum(s.reserved for s in live)
        return in_use + self._need(request) <= self._n_ctx
