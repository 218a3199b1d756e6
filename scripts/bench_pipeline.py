"""Pipeline benchmark: images/s, per-image latency and prompt tokens at several --parallel values.

Runs the real llama.cpp engine through the Labeler on a random-weight Qwen3-VL
(generated, `--shape tiny` by default: measures pipeline overhead, not model
quality) or on any --model/--mmproj pair, and prints a markdown table.

    python scripts/bench_pipeline.py --images tests/fixtures/products --repeat 8 --parallel 1,2,4
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from qvl_label import tinymodel
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, LabelSettings, Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_once(model: Path, mmproj: Path, paths: list[str], parallel: int, args: argparse.Namespace) -> dict[str, float]:
    settings = Settings(
        engine=EngineSettings(
            model_path=model,
            mmproj_path=mmproj,
            n_parallel=parallel,
            threads=args.threads,
            image_max_tokens=args.image_max_tokens,
            image_min_tokens=min(64, args.image_max_tokens),
        ),
        label=LabelSettings(languages=tuple(args.lang.split(",")), max_tokens=args.max_tokens),
    )
    with Labeler(settings) as labeler:
        start = time.perf_counter()
        records = list(labeler.label(paths))
        wall = time.perf_counter() - start
        prefix_evaluations = getattr(labeler.engine, "prefix_evaluations", -1)
    totals = [r["timings_ms"]["total_ms"] for r in records if r["timings_ms"]]
    prompt = [r["tokens"]["prompt_evaluated"] + r["tokens"]["prefix_evaluated"] for r in records if r["tokens"]]
    completion = sum(r["tokens"]["completion"] for r in records if r["tokens"])
    return {
        "images": len(records),
        "wall_s": wall,
        "images_per_s": len(records) / wall,
        "p50_s": _percentile(totals, 0.5) / 1000,
        "p95_s": _percentile(totals, 0.95) / 1000,
        "prompt_tokens_per_image": statistics.mean(prompt),
        "output_tokens_per_s": completion / wall,
        "prefix_evaluations": prefix_evaluations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("tests/fixtures/products"))
    parser.add_argument("--repeat", type=int, default=4, help="label the folder this many times over")
    parser.add_argument("--parallel", default="1,2,4")
    parser.add_argument("--shape", default="tiny", choices=sorted(tinymodel.SHAPES))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--image-max-tokens", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128, help="fixed output length bound per image")
    parser.add_argument("--lang", default="en")
    args = parser.parse_args()

    paths = sorted(str(p) for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) * args.repeat
    with tempfile.TemporaryDirectory(prefix="qvl-bench-") as tmp:
        if args.model and args.mmproj:
            model, mmproj, model_name = args.model, args.mmproj, args.model.name
        else:
            made = tinymodel.generate(Path(tmp), args.shape)
            model, mmproj, model_name = made.model, made.mmproj, f"random-weight Qwen3-VL ({args.shape})"
        rows = [(n, run_once(model, mmproj, paths, n, args)) for n in (int(x) for x in args.parallel.split(","))]

    base = rows[0][1]["images_per_s"]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {platform.system()}; model: {model_name}")
    print(f"images: {len(paths)}, image budget {args.image_max_tokens} tokens, max output {args.max_tokens} tokens\n")
    columns = ["--parallel", "images/s", "vs first", "p50 s/image", "p95 s/image"]
    columns += ["prompt tokens/image", "output tok/s", "prefix evals"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in rows:
        print(
            f"| {n} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f}x | {r['p50_s']:.3f} | {r['p95_s']:.3f} "
            f"| {r['prompt_tokens_per_image']:.0f} | {r['output_tokens_per_s']:.0f} | {r['prefix_evaluations']} |"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the whole script: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
