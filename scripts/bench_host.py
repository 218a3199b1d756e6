"""Host work per decode step: the engine's step loop outside llama_decode, at 1, 8, 32 and 64 live sequences.

The real engine through its public API on the tiny random model with the real Qwen vocabulary
(151,936 tokens), the full `en` answer schema, greedy, answers of up to 160 tokens, every
sequence admitted before the first step (so all of them decode together). The model's compute
is tiny; what the table shows is the Python around each llama_decode: choosing tokens, grammar
checks and masks, jump-forward. Random weights make the grammar reject the arg-max far more
often than a trained model does, so this is a worst case for the host side.

    python scripts/bench_host.py                       # this checkout
    python scripts/bench_host.py --compare ../other    # beside another checkout: ratios
    python scripts/bench_host.py --compare ../other --sequential --backend-sampling off,on --repeat 3

Each run is a child process (PYTHONPATH picks the qvl_label it imports). By default the
variants of one size run at once, so that a busy shared machine slows them alike; on a quiet
machine --sequential runs one at a time, which keeps them from slowing each other. Host work is
also measured as the engine thread's CPU time, which other processes do not inflate (but which
leaves out llguidance's mask threads). --backend-sampling off,on measures both of this
checkout's token paths: off is the CPU default, on the GPU default.
Both are timed by wrapping the engine's step and llama_decode; the wall-clock column is the
engine's own counters where it has them (step_host_seconds, as --debug shows).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VIEWS = ROOT / "tests" / "fixtures" / "views"
CACHE = Path.home() / ".cache" / "qvl-label-bench" / "models"


class _Probe:
    """Times any engine's step from outside: its _step, and llama_decode while inside it.

    Wall-clock seconds, and the engine thread's CPU seconds: on a shared machine the wall clock
    counts the time other processes hold the cores; the thread's CPU time does not.
    """

    def __init__(self, engine: Any) -> None:
        import llama_cpp

        self.step_seconds = self.decode_seconds = self.step_cpu = self.decode_cpu = 0.0
        self.steps = 0
        self._inside = False
        original_decode = llama_cpp.llama_decode
        original_step = engine._step

        def decode(ctx: Any, batch: Any) -> int:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return int(original_decode(ctx, batch))
            finally:
                if self._inside:
                    self.decode_seconds += time.perf_counter() - started
                    self.decode_cpu += time.thread_time() - cpu

        def step(live: Any) -> Iterator[Any]:
            self.steps += 1
            inner = original_step(live)
            while True:
                started, cpu = time.perf_counter(), time.thread_time()
                self._inside = True
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self._inside = False
                    self.step_seconds += time.perf_counter() - started
                    self.step_cpu += time.thread_time() - cpu
                yield item  # the caller's time with a finished answer is not the step's

        llama_cpp.llama_decode = decode
        engine._step = step


def measure(
    sequences: int,
    threads: int,
    max_tokens: int,
    backend_sampling: bool | None = None,
    prepare: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """One engine with `sequences` slots, as many requests; the step loop's counters over the run.

    `prepare(engine)` runs after the prefix is evaluated and before the timers are set: a
    wrapper it installs around llama_decode is timed as decode, one around `_step` as host work.
    """
    from qvl_label import tinymodel
    from qvl_label.engine.llama import LlamaCppEngine
    from qvl_label.engine.protocol import GenerationRequest
    from qvl_label.labeling.config import load_config
    from qvl_label.labeling.prompts import label_prompt
    from qvl_label.labeling.schema import answer_schema
    from qvl_label.pipeline.images import load_image
    from qvl_label.settings import EngineSettings

    model = tinymodel.generate(CACHE, "tiny", vocabulary="qwen")
    config = load_config()
    schema = answer_schema(("en",), config, config.channel("generic"))
    prompt = label_prompt(("en",), config, config.channel("generic"))
    photos = sorted(VIEWS.glob("*.jpg"))
    images = [load_image(p, 8, 64).prepared for p in photos]
    requests = [
        GenerationRequest(key=i, image=images[i % len(images)], prefix=prompt.prefix, suffix=prompt.suffix,
                          schema=schema, max_tokens=max_tokens)
        for i in range(sequences)
    ]  # fmt: skip
    settings = EngineSettings(
        model_path=model.model, mmproj_path=model.mmproj, n_ctx=4096 + sequences * (max_tokens + 160),
        image_max_tokens=64, n_parallel=sequences, threads=threads, prefill_piece_tokens=0,
    )  # fmt: skip
    if backend_sampling is not None:  # checkouts from before #28 have no such setting
        settings = dataclasses.replace(settings, backend_sampling=backend_sampling)
    with LlamaCppEngine(settings) as engine:
        list(engine.generate(requests[:1]))  # the prefix is evaluated here, outside the measurement
        if prepare is not None:
            prepare(engine)
        counters = hasattr(engine, "step_host_seconds")
        probe = _Probe(engine)
        before = [getattr(engine, name, 0) for name in ("decode_steps", "decode_seconds", "step_host_seconds")]
        started = time.perf_counter()
        results = list(engine.generate(requests))
        wall = time.perf_counter() - started
        steps, decode, host = probe.steps, probe.decode_seconds, probe.step_seconds - probe.decode_seconds
        host_cpu = probe.step_cpu - probe.decode_cpu
        if counters:  # the engine's own counters, which --debug shows (wall clock)
            steps = engine.decode_steps - before[0]
            decode = engine.decode_seconds - before[1]
            host = engine.step_host_seconds - before[2]
    sampled = sum(r.tokens.completion - r.tokens.forced for r in results)
    return {
        "sequences": sequences,
        "steps": steps,
        "live_per_step": sampled / max(1, steps),
        "host_ms_per_step": 1000 * host / max(1, steps),
        "host_cpu_ms_per_step": 1000 * host_cpu / max(1, steps),
        "decode_ms_per_step": 1000 * decode / max(1, steps),
        "wall_s": wall,
        "source": "counters" if counters else "probe",
        "errors": sum(r.error is not None for r in results),
        "answers": hashlib.sha256("\0".join(r.text for r in sorted(results, key=lambda r: r.key)).encode()).hexdigest(),
    }


def _child(path: Path, sequences: int, threads: int, max_tokens: int, backend: str) -> dict[str, Any]:
    """One size measured in a fresh process that imports the qvl_label of `path`."""
    env = dict(os.environ, PYTHONPATH=str(path))
    command = [sys.executable, str(Path(__file__).resolve()), "--json", "--sequences", str(sequences),
               "--threads", str(threads), "--max-tokens", str(max_tokens), "--backend-sampling", backend]  # fmt: skip
    out = subprocess.run(command, env=env, cwd=path, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's options, shared with the scripts that measure it other ways."""
    parser.add_argument("--sequences", default="1,8,32,64", help="live sequence counts, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (the median is shown)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload_arguments(parser)
    parser.add_argument("--compare", type=Path, help="another checkout, measured beside this one")
    parser.add_argument("--sequential", action="store_true",
                        help="one run at a time (a quiet machine), not all variants at once (a busy one)")  # fmt: skip
    parser.add_argument("--backend-sampling", default="auto",
                        help="this checkout's greedy arg-max inside llama_decode: auto (with a GPU), on, off, "
                             "or several, comma-separated (a column each)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON line per size (used by --compare)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sequences.split(",")]
    modes = args.backend_sampling.split(",")
    if any(mode not in ("auto", "on", "off") for mode in modes):
        parser.error("--backend-sampling takes auto, on or off")
    if args.json:
        backend = {"auto": None, "on": True, "off": False}[modes[0]]
        for n in sizes:
            print(json.dumps(measure(n, args.threads, args.max_tokens, backend)), flush=True)
        return
    variants = {(f"this ({mode})" if len(modes) > 1 else "this"): (ROOT, mode) for mode in modes}
    if args.compare is not None:
        variants["other"] = (args.compare.resolve(), "auto")  # a checkout from before #28 has no such setting
    print(f"ms per decode step, median of {args.repeat}; host = the step outside llama_decode, wall clock")
    print("(the engine thread's CPU time in brackets); decode = wall clock inside llama_decode")
    header = "| live sequences | " + " | ".join(f"{name}: host (CPU) | {name}: decode" for name in variants)
    ours = [name for name in variants if name != "other"]
    if args.compare is not None:
        header += " | " + " | ".join(f"host {name}/other" for name in ours)
    header += " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            # at once, so that whatever else loads a busy machine loads every variant alike
            with ThreadPoolExecutor(1 if args.sequential else len(variants)) as pool:
                futures = {name: pool.submit(_child, path, n, args.threads, args.max_tokens, mode)
                           for name, (path, mode) in variants.items()}  # fmt: skip
                for name, future in futures.items():
                    runs[name].append(future.result())
        cells = []
        host: dict[str, float] = {}
        for name in variants:
            host[name] = statistics.median(r["host_ms_per_step"] for r in runs[name])
            cpu = statistics.median(r["host_cpu_ms_per_step"] for r in runs[name])
            decode = statistics.median(r["decode_ms_per_step"] for r in runs[name])
            live = statistics.median(r["live_per_step"] for r in runs[name])
            cells.append(f"{host[name]:.2f} ({cpu:.2f}) | {decode:.2f}")
            print(f"  {name}: {n} slots, {live:.1f} sampled per step, {runs[name][0]['source']}", file=sys.stderr)
        if args.compare is not None:
            cells += [f"{host[name] / host['other']:.2f}" for name in ours]
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
