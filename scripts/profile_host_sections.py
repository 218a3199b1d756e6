"""Host work per decode step by section: the engine's token-choosing functions timed from outside, ms per step.

scripts/bench_host.py's workload (tiny random model, real Qwen vocabulary, full `en` schema,
greedy, 160-token answers, every sequence admitted before the first step), with each function
below wrapped in a timer of the engine thread's CPU time. Sections nest (`_choose_tokens` holds
`_choose_rejected`, which holds the candidate search and the masks); the timer itself adds about
1 us to every call it wraps, so sections of many small calls read high.

    python scripts/profile_host_sections.py --sequences 64 --backend-sampling on
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_host

from qvl_label.engine import admission, constraints, sampling

SECTIONS: list[tuple[Any, str]] = [
    (sampling.Sampling, "_choose_tokens"),
    (sampling.Sampling, "_choose_rejected"),
    (sampling.Sampling, "_in_free_text"),
    (sampling.Sampling, "_step_logits"),
    (sampling.Sampling, "_device_best"),
    (constraints.LlguidanceConstraint, "try_accept"),
    (constraints.LlguidanceConstraint, "allows"),
    (constraints.LlguidanceConstraint, "forced"),
    (constraints.LlguidanceConstraint, "complete"),
    (constraints.LlguidanceFactory, "allowed_bits"),
    (admission.Admission, "_accept"),
    (admission.Admission, "_emit"),
    (sampling, "candidate_order"),
    (sampling, "best_checked"),
    (sampling, "best_in_bits"),
]


def _timed(function: Callable[..., Any], name: str, seconds: dict[str, float], calls: dict[str, int]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.thread_time() - started
            calls[name] += 1

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--backend-sampling", choices=("off", "on"), default="on")
    args = parser.parse_args()
    seconds: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    for owner, attribute in SECTIONS:
        name = f"{getattr(owner, '__name__', owner)}.{attribute}".removeprefix("qvl_label.engine.")
        setattr(owner, attribute, _timed(getattr(owner, attribute), name, seconds, calls))
    original_init = bench_host._Probe.__init__

    def measured_only(probe: Any, engine: Any) -> None:  # the warm-up request before the probe is left out
        seconds.clear()
        calls.clear()
        original_init(probe, engine)

    bench_host._Probe.__init__ = measured_only  # type: ignore[method-assign]
    result = bench_host.measure(args.sequences, 2, 160, backend_sampling=args.backend_sampling == "on")
    steps = max(1, result["steps"])
    print(f"{args.sequences} sequences, backend sampling {args.backend_sampling}: {steps} steps, "
          f"{result['live_per_step']:.1f} sampled a step, host {result['host_ms_per_step']:.2f} ms a step "
          f"(under the timers)")  # fmt: skip
    print("| section | ms a step (engine thread CPU) | calls a step | us a call |\n|---|---|---|---|")
    for name, total in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"| {name} | {1000 * total / steps:.3f} | {calls[name] / steps:.1f} | {1e6 * total / calls[name]:.1f} |")


if __name__ == "__main__":
    main()
