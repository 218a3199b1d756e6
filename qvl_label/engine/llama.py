"""The llama.cpp engine: continuous batching, one decode step for every live sequence.

Built on the low-level bindings rather than `Llama` + `MTMDChatHandler`, because
those clear the KV cache on every call, ignore misspelled options and expose no
image token limits. Here the instruction prefix is evaluated once into sequence 0
and copied into each image's sequence; up to `n_parallel` images are in flight,
and each decode step carries one token for every live sequence. The class is built
in layers, a file each: state, tokens, loading, sampling, prefill, admission.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import llama_cpp

from .admission import Admission
from .protocol import Generation, GenerationRequest, Idle
from .state import _Slot

__all__ = ["LlamaCppEngine", "_Slot"]


class LlamaCppEngine(Admission):
    """Qwen3-VL through llama.cpp's C API, many images in flight, prefix evaluated once."""

    def run_summary(self, debug: bool = False) -> str:
        """One line for a run's summary: the sequences in flight; with debug, the step loop's counters."""
        how = "chosen from free memory" if self._settings.n_parallel == 0 else "--parallel"
        line = f"{self._n_parallel} sequences in parallel ({how})"
        if debug and self.decode_steps:
            line += (
                f"; {self.decode_steps} decode steps: {self.decode_seconds:.2f}s inside llama_decode, "
                f"{self.step_host_seconds:.2f}s of host work around it "
                f"({1000 * self.step_host_seconds / self.decode_steps:.2f} ms a step)"
            )
        return line

    def cancel(self, key: int) -> None:
        """Thread-safe: the request with this key ends as `cancelled` at the next step, its KV cells freed."""
        with self._cancel_lock:
            self._cancelled.add(key)

    def _take_cancelled(self, key: int) -> bool:
        with self._cancel_lock:
            if key in self._cancelled:
                self._cancelled.discard(key)
                return True
            return False

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
        """Continuous batching: fill free slots, then one decode step for all live slots.

        The stream may yield IDLE (nothing new yet): the live sequences are stepped and the
        stream asked again, so a scheduler can feed requests from many producers.
        """
        pending = iter(requests)
        slots = [_Slot(seq_id=i + 1) for i in range(self._n_parallel)]
        exhausted = False
        held: GenerationRequest | None = None
        try:
            while True:
                for slot in slots:  # cancelled sequences end first, freeing their cells
                    if slot.request is not None and self._take_cancelled(slot.request.key):
                        yield self._finish(slot, "cancelled", "cancelled")
                if held is not None and self._take_cancelled(held.key):
                    yield Generation(key=held.key, text="", finish_reason="cancelled", error="cancelled")
                    held = None
                idle = False
                waited = 0.0  # how long the decoding sequences wait for admissions before this step
                for slot in slots:
                    while slot.request is None and not exhausted:
                        if any(other.admission is not None for other in slots):
                            break  # one admission in pieces at a time: mtmd holds one image's embeddings
                        next_request = held or next(pending, None)
                        held = None
                        if next_request is None:
                            exhausted = True
                            break
                        if isinstance(next_request, Idle):
                            idle = True
                            break
                        if not self._fits(next_request, slots):
                            held = next_request  # waits until a running sequence frees its cells
                            break
                        others = sum(1 for other in slots if other.request is not None)
                        started = time.perf_counter()
                        done = self._start(slot, next_request, in_pieces=others > 0 and self._piece_tokens > 0)
                        if others:  # the live sequences waited while this image was encoded and prefilled
                            self.admissions_during_decode += 1
                            waited += time.perf_counter() - started
                        self._log.reraise_interrupt()
                        if done is not None:
                            yield done
                    if held is not None or idle:
                        break
                admitting = next((slot for slot in slots if slot.admission is not None), None)
                if admitting is not None:
                    decoding = any(slot.request is not None and slot.admission is None for slot in slots)
                    started = time.perf_counter()
                    done = self._advance(admitting)
                    if decoding:
                        waited += time.perf_counter() - started
                    self._log.reraise_interrupt()
                    if done is not None:
                        yield done
                self.decode_stall_seconds += waited
                self.longest_stall_seconds = max(self.longest_stall_seconds, waited)
                live = [slot for slot in slots if slot.request is not None and slot.admission is None]
                if not live:
                    if exhausted and not any(slot.request is not None for slot in slots):
                        return
                    continue  # nothing to decode: the stream is asked again (it waits for work)
                yield from self._step(live)
                self._log.reraise_interrupt()
        finally:
            for slot in slots:
                if slot.request is not None:
                    self._finish(slot, "cancelled", "cancelled")

    def _step(self, live: list[_Slot]) -> Iterator[Generation]:
        """One llama_decode for every live sequence: its sampled token and the tokens forced after it.

        Logits are computed only on each sequence's last token, the one the next sample needs.
        The answers a step finishes are yielded after it, so that the step's counters
        (decode_seconds, step_host_seconds) hold none of the caller's time.
        """
        started = time.perf_counter()
        in_decode = 0.0
        finished: list[Generation] = []
        try:
            if sum(len(slot.pending) for slot in live) > self._n_batch:
                # Long forced runs with a small --batch: their heads go first, one sequence at a time.
                t = time.perf_counter()
                for slot in live:
                    head, slot.pending = slot.pending[:-1], slot.pending[-1:]
                    slot.n_past = self._decode_tokens(head, slot.seq_id, slot.n_past, logits_last=False)
                in_decode += time.perf_counter() - t
            outputs = self._step_batch(live)  # each live sequence's last token: the batch index of its logits
            t = time.perf_counter()
            rc = llama_cpp.llama_decode(self._ctx, self._batch)
            # A GPU backend returns before the step has run; the first read of its results would
            # wait for it and count the device's time as host work.
            llama_cpp.llama_synchronize(self._ctx)
            in_decode += time.perf_counter() - t
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}) with {len(live)} sequences in flight")
        except RuntimeError as exc:
            finished = [self._finish(slot, "error", str(exc)) for slot in live]
        else:
            self.decode_steps += 1
            for slot in live:
                slot.n_past += len(slot.pending)
                slot.pending = []
            tokens = self._choose_tokens(live, outputs)
            share_ms = (time.perf_counter() - started) * 1000 / len(live)  # the step and its sampling
            for slot, choice in zip(live, tokens, strict=True):
                done: Generation | None
                if isinstance(choice, RuntimeError):
                    done = self._finish(slot, "error", str(choice))
                else:
                    slot.timings.decode_ms += share_ms
                    done = self._accept(slot, choice)
                if done is not None:
                    finished.append(done)
        self.decode_seconds += in_decode
        self.step_host_seconds += time.perf_counter() - started - in_decode
        yield from finished
