"""What Ray costs: `batch --ray` with one actor against plain `batch`, start-up, and the driver's memory.

Prints markdown tables:

1. throughput and start-up: the real CLI, `batch DIR` and `batch DIR --ray --actors 1
   --cpus-per-actor <cores>` (a local cluster the command starts itself), on distinct photos,
   with a generated random-weight Qwen3-VL: start-up = the wall time of a run over one photo,
   images/s after start-up = (photos - 1) / (wall time - start-up), and the whole command's
   wall time. Repeated, alternating, medians.
2. driver memory: `RayBatch` (the driver `batch --ray` runs) over N paths of small distinct
   PNGs with a fake engine in 2 actors (the model is not what is measured); the driver's
   peak RSS before and after, and records per second through the driver.

    python scripts/bench_ray.py                                # tiny shape, 64 photos, 100k paths
    python scripts/bench_ray.py --shape 2b --count 8 --repeat 1 --paths 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import CACHE, prepare_images

from qvl_label import tinymodel
from qvl_label.engine.protocol import EngineInfo, Generation, GenerationRequest, Idle, TokenCounts
from qvl_label.settings import EngineSettings, LabelSettings, Settings
from tests.conftest import sample_answer

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests/fixtures/catalogue"


def run_cli(args: argparse.Namespace, made: tinymodel.GeneratedModel, folder: Path, ray: bool) -> dict[str, float]:
    """One real `qvl-label batch` run, timed from the command's start to its exit."""
    count = sum(1 for _ in folder.iterdir())
    out = folder.parent / f"{folder.name}-{'ray' if ray else 'local'}.jsonl"
    command = [sys.executable, "-m", "qvl_label", "batch", str(folder), "-o", str(out), "--quiet", "--no-cache"]
    command += ["--model", str(made.model), "--mmproj", str(made.mmproj), "--lang", "zh"]
    command += ["--image-min-tokens", str(args.image_tokens), "--image-max-tokens", str(args.image_tokens)]
    if ray:
        command += ["--ray", "--actors", "1", "--cpus-per-actor", str(os.cpu_count() or 1)]
    started = time.perf_counter()
    proc = subprocess.run(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    lines = out.read_bytes().count(b"\n") if out.exists() else 0
    if proc.returncode not in (0, 1) or lines != count:
        name = "batch --ray" if ray else "batch"
        raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return {"wall": wall}


def throughput(args: argparse.Namespace, made: tinymodel.GeneratedModel, tmp: Path) -> None:
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    startups: dict[bool, list[float]] = {False: [], True: []}
    for repetition in range(args.repeat):
        for ray in (False, True):  # alternating, so drift on a shared machine falls on both
            folder = tmp / f"r{repetition}-{'ray' if ray else 'local'}"
            folder.mkdir()
            for path in prepare_images(PHOTOS, args.count, folder):
                path.write_bytes(path.read_bytes() + bytes([repetition, ray]))  # distinct from every other run
            results[ray].append(run_cli(args, made, folder, ray))
            one = tmp / f"one{repetition}-{'ray' if ray else 'local'}"  # start-up: a run over a single photo
            one.mkdir()
            (one / "a.jpg").write_bytes(next(folder.iterdir()).read_bytes() + b"one")
            startups[ray].append(run_cli(args, made, one, ray)["wall"])

    # Images/s after start-up: the photos after the first over (wall time - the wall time of a
    # one-photo run in the same repetition). Ray's records land a call at a time, so a rate read
    # off the landing times would flatter it; this one does not depend on when records land.
    def after_startup(ray: bool) -> list[float]:
        return [(args.count - 1) / (r["wall"] - one) for r, one in zip(results[ray], startups[ray], strict=True)]

    local_rate = statistics.median(after_startup(False))
    local_wall = statistics.median(r["wall"] for r in results[False])
    print(f"{args.count} distinct photos per run, {args.repeat} runs each, alternating; medians\n")
    print(
        "| command | one-photo run s (start-up) | images/s after start-up (runs) | vs batch | wall s, all | vs batch |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for ray in (False, True):
        name = f"`batch --ray --actors 1 --cpus-per-actor {os.cpu_count()}`" if ray else "`batch`"
        rates = after_startup(ray)
        rate = statistics.median(rates)
        each = ", ".join(f"{r:.3f}" for r in rates)
        startup = statistics.median(startups[ray])
        wall = statistics.median(r["wall"] for r in results[ray])
        print(
            f"| {name} | {startup:.1f} | {rate:.3f} ({each}) | {rate / local_rate:.2f}x | {wall:.1f} "
            f"| {local_wall / wall:.2f}x |"
        )
    print()


# -- driver memory with a fake engine ------------------------------------------------------


ANSWER = json.dumps(sample_answer(("en",)))  # a valid label: records are `ok` and go to the cache, as real ones do


class InstantEngine:
    """Answers every request at once; defined here, so Ray ships it to the actors by value."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("instant", "m", "p", 4096, 4, 0, False, 8, 64, False, 1)

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
        for request in requests:
            if not isinstance(request, Idle):
                yield Generation(key=request.key, text=ANSWER, finish_reason="stop", tokens=TokenCounts(completion=9))

    def cancel(self, key: int) -> None:
        pass

    def close(self) -> None:
        pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def driver_memory(args: argparse.Namespace, tmp: Path) -> None:
    from qvl_label.dist.ray_batch import RayBatch, RayOptions
    from qvl_label.store.cache import LabelCache

    folder = tmp / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    made_at = time.perf_counter()
    for i in range(args.paths):  # distinct 16x16 PNGs, ~0.8 KB each, a folder level per 1000
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir()
        path = sub / f"{i:06d}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    print(f"{args.paths} distinct PNGs written in {time.perf_counter() - made_at:.0f}s\n")
    settings = Settings(
        EngineSettings(Path("fake-model.gguf"), Path("fake-mmproj.gguf"), image_min_tokens=8, image_max_tokens=64),
        LabelSettings(languages=("en",)),
    )
    before_peak, before_now = peak_rss_mb(), current_rss_mb()
    cache = LabelCache(None)
    options = RayOptions(address=None, actors=2, cpus_per_actor=1, batch_size=256)
    started = time.perf_counter()
    records = 0
    samples: list[float] = []
    with RayBatch(settings, options, cache, engine_factory=InstantEngine) as driver:
        connected = time.perf_counter()
        with (tmp / "out.jsonl").open("wb") as out:  # as `batch` writes: every record, one line each
            for record in driver.label(paths):
                out.write(json.dumps(record).encode() + b"\n")
                records += 1
                if records % 5000 == 0:
                    samples.append(current_rss_mb())
        finished = time.perf_counter()
    cache.close()
    print("| paths | records | driver RSS before MB | driver RSS during, max of samples MB | driver peak RSS MB |")
    print("|---:|---:|---:|---:|---:|")
    during = max(samples) if samples else current_rss_mb()
    print(f"| {args.paths} | {records} | {before_now:.0f} | {during:.0f} | {peak_rss_mb():.0f} |")
    rate = records / (finished - connected)
    print(
        f"\ncluster start {connected - started:.1f}s; {rate:.0f} records/s through the driver "
        f"(2 actors, fake engine; peak before the run {before_peak:.0f} MB)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=sorted(tinymodel.SHAPES))
    parser.add_argument("--vocab", default="qwen", choices=["tiny", "qwen"])
    parser.add_argument("--count", type=int, default=64, help="distinct photos per throughput run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--paths", type=int, default=100_000, help="paths for the driver-memory part (0: skip)")
    parser.add_argument("--no-throughput", action="store_true")
    args = parser.parse_args()
    machine = f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores"
    import ray

    print(f"- machine: {machine}, Python {platform.python_version()}, Ray {ray.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_throughput:
            made = tinymodel.generate(CACHE / "models", args.shape, vocabulary=args.vocab)
            print(f"- model: random-weight Qwen3-VL, {args.shape} shape, {args.vocab} vocabulary; labels in zh")
            print(f"- image budget {args.image_tokens} tokens; --parallel automatic\n")
            throughput(args, made, Path(tmp))
        if args.paths:
            driver_memory(args, Path(tmp))


if __name__ == "__main__":
    main()
