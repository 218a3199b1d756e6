"""Rejected rows on scripts/bench_host.py's workload: how deep the next-best answer lies, and what masks cost where.

Two figures behind the engine's choices (docs/internals/engine.md, "Sampling paths"):

- For every rejected row inside free text, the rank of the grammar's best token among the
  row's candidates (next-best checks unlimited for this run): how many rows a limit of 8 or of
  masking.MAX_CHECKS checks would leave to a full mask.
- The wall time of `LlguidanceFactory.allowed_bits` per call as the engine runs it (structural
  masks on the engine thread), against every mask sent to llguidance's executor pool (the
  engine before 290ba68).

    python scripts/measure_rejected_rows.py --sequences 32
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_host

from qvl_label.engine import constraints, masking, sampling


def ranks(sequences: int) -> collections.Counter[int | None]:
    """Rank of the answer in each free-text rejected row's candidates (None: not among them)."""
    found: collections.Counter[int | None] = collections.Counter()
    original = sampling.best_checked

    def counted(row: Any, order: Any, allows: Any) -> int | None:
        token = original(row, order, allows)
        found[None if token is None else int((order == token).nonzero()[0][0])] += 1
        return token

    sampling.best_checked = counted
    limit, masking.MAX_CHECKS = masking.MAX_CHECKS, 10**6
    try:
        bench_host.measure(sequences, 2, 160, backend_sampling=False)
    finally:
        sampling.best_checked, masking.MAX_CHECKS = original, limit
    return found


def mask_call_ms(sequences: int, all_to_pool: bool) -> tuple[float, int]:
    """Mean wall ms of one allowed_bits call over a run, and the number of calls."""
    seconds: list[float] = []
    original = constraints.LlguidanceFactory.allowed_bits

    def timed(self: Any, rows: Any, costly: Any = None) -> Any:
        if all_to_pool:
            self.mask_threads, costly = max(2, self.mask_threads), None
        started = time.perf_counter()
        try:
            return original(self, rows, costly)
        finally:
            seconds.append(time.perf_counter() - started)

    constraints.LlguidanceFactory.allowed_bits = timed  # type: ignore[method-assign]
    try:
        bench_host.measure(sequences, 2, 160, backend_sampling=False)
    finally:
        constraints.LlguidanceFactory.allowed_bits = original  # type: ignore[method-assign]
    return 1000 * sum(seconds) / max(1, len(seconds)), len(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=32)
    args = parser.parse_args()
    found = ranks(args.sequences)
    rows = sum(found.values())
    beyond = {n: sum(c for rank, c in found.items() if rank is None or rank >= n) for n in (8, masking.MAX_CHECKS)}
    print(f"{args.sequences} sequences: {rows} rejected rows inside free text")
    print("| checks before the mask | rows left to a mask |\n|---|---|")
    for n, left in beyond.items():
        print(f"| {n} | {left} |")
    engine_ms, calls = mask_call_ms(args.sequences, all_to_pool=False)
    pool_ms, _ = mask_call_ms(args.sequences, all_to_pool=True)
    print(f"\nallowed_bits, mean wall ms a call ({calls} calls): as the engine runs it {engine_ms:.3f}, "
          f"every mask to llguidance's pool {pool_ms:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
