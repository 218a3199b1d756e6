"""Where the engine thread's time goes per decode step: cProfile of one generate() call.

Eight product photos at once (--parallel 8) through the real engine on the tiny random model
with the real Qwen tokenizer, the full en answer schema, greedy. The model's compute is small,
so what is left is the per-step work around llama_decode: sampling, grammar masks, jump-forward.
Prints ms per decode step and per token, then the functions with the most time of their own.

    python scripts/profile_engine.py
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from qvl_label import tinymodel
from qvl_label.engine.llama import LlamaCppEngine
from qvl_label.engine.protocol import GenerationRequest
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import label_prompt
from qvl_label.labeling.schema import answer_schema, max_answer_tokens
from qvl_label.pipeline.images import load_image
from qvl_label.settings import EngineSettings

VIEWS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "views"
CACHE = Path.home() / ".cache" / "qvl-label-bench" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    model = tinymodel.generate(CACHE, "tiny", vocabulary="qwen")
    config = load_config()
    schema = answer_schema(("en",), config, config.channel("generic"))
    prompt = label_prompt(("en",), config, config.channel("generic"))
    budget = max_answer_tokens(schema)
    photos = sorted(VIEWS.glob("*.jpg"))[: args.parallel]
    settings = EngineSettings(
        model_path=model.model, mmproj_path=model.mmproj, n_ctx=2048 + args.parallel * (budget + 128),
        image_max_tokens=64, n_parallel=args.parallel, threads=args.threads,
    )  # fmt: skip
    requests = [
        GenerationRequest(key=i, image=load_image(p, 8, 64).prepared, prefix=prompt.prefix, suffix=prompt.suffix,
                          schema=schema, max_tokens=budget)
        for i, p in enumerate(photos)
    ]  # fmt: skip
    with LlamaCppEngine(settings) as engine:
        list(engine.generate(requests[:1]))  # the prefix is evaluated here, outside the profile
        steps_before = engine.decode_steps
        host_before, decode_before = engine.step_host_seconds, engine.decode_seconds
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        results = list(engine.generate(requests))
        profile.disable()
        wall = time.perf_counter() - started
        steps = engine.decode_steps - steps_before
        host_ms = 1000 * (engine.step_host_seconds - host_before) / steps
        decode_ms = 1000 * (engine.decode_seconds - decode_before) / steps
    tokens = sum(r.tokens.completion for r in results)
    print(f"{len(results)} answers, {steps} decode steps, {tokens} tokens in {wall:.2f} s: "
          f"{1000 * wall / steps:.2f} ms per step, {1000 * wall / tokens:.3f} ms per token")  # fmt: skip
    print(f"per step: {host_ms:.2f} ms of host work, {decode_ms:.2f} ms inside llama_decode (under the profiler)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
