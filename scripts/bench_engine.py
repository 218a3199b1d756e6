"""The engine alone: images/s and latency with 1, 4 and 16 producers calling `submit` at once.

    python scripts/bench_engine.py --count 32 --producers 1,4,16 --parallel 4
    python scripts/bench_engine.py --producers 16 --prefill-piece 0,64   # admission in pieces or whole

This is what the HTTP server will do: many threads hand requests to one scheduler, which
keeps one continuous batch. Each producer submits its share of the requests and waits for
each answer before the next; latency is submit-to-answer. The images are distinct crops of
the fixture photos; the model is the generated tiny one unless --model/--mmproj are given.

"decode stall" is the time the sequences already decoding wait for images being admitted
(encoding and prefill), per admission; "longest stall" is the longest such wait between two
decode steps. `--prefill-piece` sets EngineSettings.prefill_piece_tokens (0: an image is
prefilled whole while the others wait).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from qvl_label import tinymodel
from qvl_label.engine.llama import LlamaCppEngine
from qvl_label.engine.protocol import GenerationRequest
from qvl_label.engine.scheduler import Scheduler
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import label_prompt
from qvl_label.labeling.schema import answer_schema
from qvl_label.pipeline.images import load_image
from qvl_label.settings import GRAMMAR_ENGINES, EngineSettings

SOURCES = [Path("tests/fixtures/products"), Path("tests/fixtures/catalogue")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--producers", default="1,4,16")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--image-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=12000)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--grammar", default="auto", choices=GRAMMAR_ENGINES)
    parser.add_argument("--no-jump-forward", action="store_true")
    parser.add_argument("--prefill-piece", default="64", help="image embeddings per prefill piece, a list")
    args = parser.parse_args()

    from bench_pipeline import distinct_photos  # the same distinct crops as the pipeline benchmark

    config = load_config()
    channel = config.channel("generic")
    prompt = label_prompt(("en",), config, channel)
    schema = answer_schema(("en",), config, channel)
    with tempfile.TemporaryDirectory(prefix="qvl-bench-engine-") as tmp:
        sources = sorted(p for folder in SOURCES for p in folder.iterdir())
        photos = distinct_photos(sources, args.count, Path(tmp))
        images = [load_image(Path(p), args.image_tokens, args.image_tokens).prepared for p in photos]
        if args.model and args.mmproj:
            model, mmproj = args.model, args.mmproj
        else:
            made = tinymodel.generate(Path(tmp), "tiny")
            model, mmproj = made.model, made.mmproj
        base = EngineSettings(
            model_path=model, mmproj_path=mmproj, n_parallel=args.parallel, image_min_tokens=args.image_tokens,
            image_max_tokens=args.image_tokens, prefix_tokens=len(prompt.prefix.encode()),
            sequence_tokens=args.image_tokens + 8 + len(prompt.suffix.encode()) + args.max_tokens,
            grammar_engine=args.grammar, jump_forward=not args.no_jump_forward,
        )  # fmt: skip
        print(f"machine: {platform.machine()}, {platform.system()}; {args.count} distinct images, "
              f"--parallel {args.parallel}, image budget {args.image_tokens} tokens, grammar {args.grammar}, "
              f"jump-forward {'off' if args.no_jump_forward else 'on'}")  # fmt: skip
        print()
        print("| prefill piece | producers | images/s | p50 s | p95 s | decode stall ms/admission | longest stall ms |")
        print("|---|---|---|---|---|---|---|")
        runs = [(int(piece), int(n)) for piece in args.prefill_piece.split(",") for n in args.producers.split(",")]
        for piece, producers in runs:
            engine = LlamaCppEngine(dataclasses.replace(base, prefill_piece_tokens=piece))
            scheduler = Scheduler(engine)
            latencies: list[float] = []
            lock = threading.Lock()

            def produce(indexes: list[int], scheduler: Scheduler = scheduler, latencies: list[float] = latencies,
                        lock: threading.Lock = lock) -> None:  # fmt: skip
                for i in indexes:
                    request = GenerationRequest(i, images[i], prompt.prefix, prompt.suffix, schema, args.max_tokens)
                    started = time.perf_counter()
                    scheduler.submit(request).result()
                    with lock:
                        latencies.append(time.perf_counter() - started)

            threads = [
                threading.Thread(target=produce, args=(list(range(k, args.count, producers)),))
                for k in range(producers)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            scheduler.close(drain=True)
            stall = 1000 * engine.decode_stall_seconds / max(1, engine.admissions_during_decode)
            longest = 1000 * engine.longest_stall_seconds
            engine.close()
            ordered = sorted(latencies)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            print(f"| {piece or 'whole'} | {producers} | {args.count / wall:.2f} | {statistics.median(ordered):.2f} "
                  f"| {p95:.2f} | {stall:.1f} | {longest:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
