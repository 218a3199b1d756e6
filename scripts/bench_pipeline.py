"""Pipeline benchmark: images/s, per-image latency, prompt tokens and the labelling path's cost at several --parallel.

Runs the real llama.cpp engine through the Labeler on a random-weight Qwen3-VL
(generated, `--shape tiny` by default: measures pipeline overhead, not model
quality) or on any --model/--mmproj pair, and prints a markdown table.

Every image is distinct: `--count` photos are cut from the source photos (a different
crop and size each), so no identical or near-identical file is answered from the cache.

    python scripts/bench_pipeline.py --count 40 --parallel 1,2,4
"""

from __future__ import annotations

import argparse
import platform
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

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
        shaping_ms = 1000 * labeler.shaping_seconds / max(1, labeler.shaped)
        admitted = getattr(labeler.engine, "admissions_during_decode", 0)
        checks = getattr(labeler.engine, "grammar_checks", 0)
        full_passes = getattr(labeler.engine, "grammar_full_passes", 0)
        stall_ms = 1000 * getattr(labeler.engine, "decode_stall_seconds", 0.0) / max(1, admitted)
    reused = sum(1 for r in records if r["duplicate_of"])
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
        "shaping_ms": shaping_ms,
        "stall_ms": stall_ms,
        "admitted_live": admitted,
        "full_pass_share": full_passes / checks if checks else 0.0,
        "reused": reused,
        "ok": sum(1 for r in records if r["status"] == "ok"),
    }


def distinct_photos(sources: list[Path], count: int, folder: Path, seed: int = 0) -> list[str]:
    """`count` different photos: each a random crop (60-100 % of each side) of a source, resized."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as photo:
            image = photo.convert("RGB")
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        scale = rng.uniform(0.5, 1.0)
        crop = image.crop((x, y, x + cw, y + ch)).resize((max(32, int(cw * scale)), max(32, int(ch * scale))))
        target = folder / f"photo-{i:04d}.jpg"
        crop.save(target, quality=90)
        out.append(str(target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images", type=Path, nargs="+", default=[Path("tests/fixtures/products"), Path("tests/fixtures/catalogue")]
    )
    parser.add_argument("--count", type=int, default=40, help="distinct photos to cut from the sources")
    parser.add_argument("--parallel", default="1,2,4")
    parser.add_argument("--shape", default="tiny", choices=sorted(tinymodel.SHAPES))
    parser.add_argument("--vocab", default="bytes", choices=tinymodel.VOCABULARIES, help="generated model's tokenizer")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--image-max-tokens", type=int, default=256)
    parser.add_argument(
        "--max-tokens", type=int, default=12000, help="output bound per image (random text needs room to finish)"
    )
    parser.add_argument("--lang", default="en")
    args = parser.parse_args()

    sources = sorted(p for folder in args.images for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    with tempfile.TemporaryDirectory(prefix="qvl-bench-") as tmp:
        paths = distinct_photos(sources, args.count, Path(tmp))
        if args.model and args.mmproj:
            model, mmproj, model_name = args.model, args.mmproj, args.model.name
        else:
            made = tinymodel.generate(Path(tmp), args.shape, vocabulary=args.vocab)
            model, mmproj = made.model, made.mmproj
            model_name = f"random-weight Qwen3-VL ({args.shape}, {args.vocab} vocabulary)"
        rows = [(n, run_once(model, mmproj, paths, n, args)) for n in (int(x) for x in args.parallel.split(","))]

    base = rows[0][1]["images_per_s"]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {platform.system()}; model: {model_name}")
    print(
        f"images: {len(paths)} distinct (cut from {len(sources)} photos), image budget {args.image_max_tokens} tokens, "
        f"max output {args.max_tokens} tokens\n"
    )
    columns = ["--parallel", "images/s", "vs first", "p50 s/image", "p95 s/image"]
    columns += ["prompt tokens/image", "output tok/s", "prefix evals", "ok", "reused", "label shaping ms/image"]
    columns += ["admissions while decoding", "decode stall ms/admission", "tokens needing a full grammar pass"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for n, r in rows:
        print(
            f"| {n} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f}x | {r['p50_s']:.3f} | {r['p95_s']:.3f} "
            f"| {r['prompt_tokens_per_image']:.0f} | {r['output_tokens_per_s']:.0f} | {r['prefix_evaluations']} "
            f"| {r['ok']} | {r['reused']} | {r['shaping_ms']:.2f} | {r['admitted_live']} | {r['stall_ms']:.1f} "
            f"| {r['full_pass_share']:.0%} |"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the whole script: {peak_mb:.0f} MB")
    print(
        "label shaping = parsing, schema validation, taxonomy mapping, vocabularies, compliance and the cache "
        "write per model answer, on the Labeler's shaping thread (not the one that drives llama.cpp)"
    )
    print(
        "decode stall = time the live sequences wait while a new image is encoded and prefilled, "
        "per image admitted while others were decoding"
    )


if __name__ == "__main__":
    main()
