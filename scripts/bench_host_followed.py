"""Host work per decode step when the arg-max is an answer the grammar allows, beside random weights' arg-max.

scripts/bench_host.py measures the tiny random model, whose arg-max the grammar rejects for
about 44% of rows: every rejection costs next-best checks or a mask, so that table is a worst
case for the host. A trained model's arg-max is mostly a token the grammar allows. This script
measures the same workload both ways, for each size and token path (in one process):

1. recorded: the engine runs the workload once and each sequence's chosen tokens are kept;
2. random: the workload as scripts/bench_host.py runs it (random weights' arg-max);
3. followed: the workload again, each step's arg-max made the token recorded for that sequence
   and step. On the CPU path (backend sampling off) the row's logit of that token is raised to
   1e4 right after llama_decode, inside its timing, so not counted as host work. With backend
   sampling the tokens llama.cpp chose are read as usual (that cost stays in the figure) and
   the recorded ones used instead, as a device would choose them from such logits. Either way
   the arg-max is the token greedy decoding chose under the grammar anyway, so the answers are
   the same (the table says whether they are) and no row is rejected.

The followed column is host work with no rejections: the per-sequence cost of taking a token
and its forced run, what any model pays. A real model's figure lies between the two columns,
near the followed one where its arg-max mostly fits the grammar.

    python scripts/bench_host_followed.py                 # 1, 8, 32 and 64 sequences, both paths
    python scripts/bench_host_followed.py --sequences 32,64 --backend-sampling on --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_host
import llama_cpp
import numpy as np

from qvl_label.engine.sampling import float_rows

FOLLOWED_LOGIT = 1e4  # far above any logit of the tiny model (they lie within a few units of 0)


def _count_rejected(engine: Any, counts: dict[str, int]) -> None:
    """Count the rows whose arg-max the grammar rejects (those _choose_rejected is given)."""
    original = engine._choose_rejected

    def choose_rejected(live: Any, rows: Any, best: Any, rejected: list[int], chosen: Any) -> None:
        counts["rejected"] += len(rejected)
        original(live, rows, best, rejected, chosen)

    engine._choose_rejected = choose_rejected


def _record(engine: Any, chosen: dict[int, list[int]]) -> None:
    """Keep every token the decode steps choose, per request key, in order."""
    original = engine._choose_tokens

    def choose_tokens(live: Any, outputs: list[int]) -> list[Any]:
        tokens: list[Any] = original(live, outputs)
        for slot, token in zip(live, tokens, strict=True):
            chosen[slot.request.key].append(token if isinstance(token, int) else -1)
        return tokens

    engine._choose_tokens = choose_tokens


def _follow(engine: Any, chosen: dict[int, list[int]], backend_sampling: bool) -> None:
    """Make each decode step's arg-max the token recorded for that sequence and step.

    CPU path: right after llama_decode, each row's logit of its token is raised (timed as
    decode). Backend sampling: the tokens llama.cpp chose are read as usual (their cost stays in
    the host figure) and the recorded ones returned in their place, as a device would have
    chosen them from such logits.
    """
    live_now: list[Any] = []
    progress: collections.Counter[int] = collections.Counter()
    original_step = engine._step

    def step(live: list[Any]) -> Iterator[Any]:
        live_now[:] = live
        return original_step(live)  # type: ignore[no-any-return]

    def wanted() -> list[int]:
        """The recorded token of each live sequence at this step (-1 where none), and on to the next."""
        tokens = []
        for slot in live_now:
            key = slot.request.key
            recorded = chosen.get(key, [])
            tokens.append(recorded[progress[key]] if progress[key] < len(recorded) else -1)
            progress[key] += 1
        live_now.clear()
        return tokens

    engine._step = step
    if backend_sampling:
        original_best = engine._device_best

        def device_best(outputs: list[int]) -> Any:
            best = original_best(outputs)
            tokens = np.array(wanted(), dtype=np.int64)
            return best if best is None else np.where(tokens >= 0, tokens, best)

        engine._device_best = device_best
        return
    original_decode = llama_cpp.llama_decode

    def decode(ctx: Any, batch: Any) -> int:
        rc = int(original_decode(ctx, batch))
        n_outputs = int(engine._batch_views[3][: batch.n_tokens].sum()) if batch is engine._batch else 0
        if rc == 0 and live_now and n_outputs == len(live_now):  # the step's decode, not a forced run's head
            rows = float_rows(llama_cpp.llama_get_logits(ctx), len(live_now), engine._n_vocab)
            for k, token in enumerate(wanted()):
                if token >= 0:
                    rows[k, token] = FOLLOWED_LOGIT
        return rc

    llama_cpp.llama_decode = decode  # set before bench_host's timers wrap it: timed as decode


def measure(sequences: int, threads: int, max_tokens: int, backend_sampling: bool) -> dict[str, dict[str, Any]]:
    """The three runs for one size; each run's bench_host figures plus its rejected rows."""
    chosen: dict[int, list[int]] = collections.defaultdict(list)
    out: dict[str, dict[str, Any]] = {}
    original_decode = llama_cpp.llama_decode
    for name in ("recorded", "random", "followed"):
        counts: collections.Counter[str] = collections.Counter()

        def prepare(engine: Any, name: str = name, counts: collections.Counter[str] = counts) -> None:
            llama_cpp.llama_decode = original_decode  # the previous run's timers off
            if name == "recorded":
                _record(engine, chosen)
            elif name == "followed":
                _follow(engine, chosen, backend_sampling)
            _count_rejected(engine, counts)

        result = bench_host.measure(sequences, threads, max_tokens, backend_sampling, prepare=prepare)
        sampled = result["live_per_step"] * result["steps"]
        result["rejected_share"] = counts["rejected"] / max(1.0, sampled)
        out[name] = result
    llama_cpp.llama_decode = original_decode
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_host.workload_arguments(parser)
    parser.add_argument("--backend-sampling", default="off,on", help="off, on, or off,on (a row each)")
    args = parser.parse_args()
    modes = args.backend_sampling.split(",")
    if any(mode not in ("on", "off") for mode in modes):
        parser.error("--backend-sampling takes on or off")
    print(f"ms of host work per decode step (the step outside llama_decode), median of {args.repeat}:")
    print("wall clock, the engine thread's CPU time in brackets")
    print("| live sequences | backend sampling | random arg-max: host (CPU) | rejected "
          "| followed answer: host (CPU) | rejected | followed/random | same answers |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sequences.split(",")):
        for mode in modes:
            runs = [measure(n, args.threads, args.max_tokens, mode == "on") for _ in range(args.repeat)]
            cells = []
            host = {}
            for name in ("random", "followed"):
                host[name] = statistics.median(r[name]["host_ms_per_step"] for r in runs)
                cpu = statistics.median(r[name]["host_cpu_ms_per_step"] for r in runs)
                rejected = statistics.median(r[name]["rejected_share"] for r in runs)
                cells.append(f"{host[name]:.2f} ({cpu:.2f}) | {100 * rejected:.1f}%")
            same = all(len({r[name]["answers"] for name in r}) == 1 for r in runs)
            errors = sum(r[name]["errors"] for r in runs for name in r)
            cells.append(f"{host['followed'] / host['random']:.2f}")
            cells.append("yes" if same and not errors else f"no ({errors} errors)")
            print(f"| {n} | {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
