"""Text into the context: tokenizing, token pieces, and evaluating tokens on a sequence (the shared prefix too)."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from .state import EngineState, _Slot


class TokenEvaluation(EngineState):
    """Tokens in and out of the vocabulary, and text evaluated into the KV cache."""

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, False, True)
        if n < 0:
            raise ValueError("tokenization overflow")
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        """Write one token of one sequence into slot i of the decode batch."""
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _view_batch(self) -> None:
        """Numpy views of the decode batch's columns, made once with the batch (read by _step_batch)."""
        b, n = self._batch, self._n_batch
        self._batch_views = (
            np.ctypeslib.as_array(b.token, shape=(n,)),
            np.ctypeslib.as_array(b.pos, shape=(n,)),
            np.ctypeslib.as_array(b.n_seq_id, shape=(n,)),
            np.ctypeslib.as_array(b.logits, shape=(n,)),
            [b.seq_id[i] for i in range(n)],
        )

    def _step_batch(self, live: list[_Slot]) -> list[int]:
        """Write every live sequence's pending tokens into the decode batch; returns the batch index of each one's last.

        Only those last tokens ask for logits. Token, position and flag columns are written as
        numpy views of the batch's arrays, one call each, rather than field by field (~3 us a
        token through ctypes); the sequence id stays one write a token (an array of its own
        per token in llama_batch).
        """
        assert self._batch_views is not None
        token_column, pos_column, n_seq_column, logits_column, seq_cells = self._batch_views
        tokens: list[int] = []
        positions: list[int] = []
        outputs: list[int] = []
        for slot in live:
            first = len(tokens)
            tokens += slot.pending
            positions += range(slot.n_past, slot.n_past + len(slot.pending))
            for i in range(first, len(tokens)):
                seq_cells[i][0] = slot.seq_id
            outputs.append(len(tokens) - 1)
        n_tokens = len(tokens)
        token_column[:n_tokens] = tokens
        pos_column[:n_tokens] = positions
        n_seq_column[:n_tokens] = 1
        logits_column[:n_tokens] = 0
        logits_column[outputs] = 1
        self._batch.n_tokens = n_tokens
        return outputs

    def _decode_tokens(self, tokens: list[int], seq_id: int, n_past: int, logits_last: bool) -> int:
        """Evaluate text tokens on one sequence in n_batch pieces; returns the new n_past."""
        step = self._n_batch
        for start in range(0, len(tokens), step):
            piece = tokens[start : start + step]
            b = self._batch
            b.n_tokens = len(piece)
            for i, tok in enumerate(piece):
                self._put(i, tok, n_past + start + i, seq_id, logits_last and start + i == len(tokens) - 1)
            rc = llama_cpp.llama_decode(self._ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}): context of {self._n_ctx} tokens may be full")
        return n_past + len(tokens)

    def _is_end(self, token: int) -> bool:
        """Whether the token ends generation; cached, as a ctypes call per token adds up over 64 rows."""
        end = self._ends.get(token)
        if end is None:
            end = self._ends[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return end

    def _piece_of(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece(token)
        return piece

    def _ensure_prefix(self, prefix: str) -> int:
        """Evaluate the shared instruction prefix into sequence 0 once per distinct prefix."""
        if prefix == self._prefix_text:
            return 0
        llama_cpp.llama_memory_seq_rm(self._memory, 0, -1, -1)
        self._prefix_text = None
        tokens = self.tokenize(prefix)
        if len(tokens) >= self._n_ctx:
            raise RuntimeError(
                f"the instruction prefix of {len(tokens)} tokens does not fit the context of {self._n_ctx}; raise --ctx"
            )
        self._decode_tokens(tokens, 0, 0, logits_last=False)
        self._prefix_text = prefix
        self._prefix_len = len(tokens)
        self.prefix_evaluations += 1
        return len(tokens)
