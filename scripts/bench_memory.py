"""Memory benchmark: peak RSS of a whole `batch` pipeline on folders of 1,000 vs 100,000 files.

A fake engine answers instantly, so this measures what grows with the folder: the
walk, the loader queue, the reorder window, the output writer and the resume scan.
Each size runs in a fresh child process so its peak RSS is its own.

    python scripts/bench_memory.py --counts 1000,100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image

from qvl_label.engine.protocol import EngineInfo, Generation, GenerationRequest, TokenCounts
from qvl_label.pipeline.batch import RecordWriter, Summary, run_batch, scan_existing, walk_images
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, LabelSettings, Settings

ANSWER = json.dumps(
    {
        "scene": "single",
        "category": {"top": "Apparel & Accessories", "path": ["Clothing", "Shirts & Tops"]},
        "colors": ["red"], "materials": ["cotton"], "patterns": [], "style": [], "season": [], "audience": [],
        "usage_scenes": [], "details": {"template": "generic", "visible_features": []}, "brand": "",
        "visible_text": [],
        "copy": {"en": {"title": "Red tee", "description": "A red tee.", "selling_points": ["a", "b", "c"],
                        "tags": []}},
        "items": [],
    }
)  # fmt: skip


class InstantEngine:
    """Answers every request at once with a fixed valid label."""

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("instant", "-", "-", 4096, 4, 0, False, 8, 64, False, 1)

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[Generation]:
        for request in requests:
            yield Generation(request.key, ANSWER, "stop", TokenCounts(completion=1))

    def close(self) -> None:
        pass


def make_folder(root: Path, count: int) -> None:
    """count unique 16x16 PNGs in folders of 1,000 (one pixel differs per file)."""
    marker = root / f".complete-{count}"
    if marker.exists():
        return
    for i in range(count):
        folder = root / f"d{i // 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, (i // 65536) % 256))
        im.save(folder / f"img{i:07d}.png", compress_level=1)
    marker.touch()


def child(count: int, cache_dir: Path) -> None:
    root = cache_dir / f"folder-{count}"
    t0 = time.perf_counter()
    make_folder(root, count)
    made = time.perf_counter() - t0
    out = cache_dir / f"out-{count}.jsonl"
    out.unlink(missing_ok=True)
    settings = Settings(
        engine=EngineSettings(model_path=Path("-"), mmproj_path=Path("-"), n_parallel=4, image_max_tokens=64),
        label=LabelSettings(languages=("en",)),
    )
    labeler = Labeler(settings, engine_factory=lambda _s: InstantEngine())
    summary = Summary()
    t1 = time.perf_counter()
    with out.open("ab", buffering=0) as stream:
        run_batch(
            labeler.label, walk_images(root), RecordWriter(stream, str(out)), scan_existing(out, "", False), summary
        )
    labelled = time.perf_counter() - t1
    t2 = time.perf_counter()
    resume = scan_existing(out, labeler.run.fingerprint, False)
    scan = time.perf_counter() - t2
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "files": count,
                "records": summary.processed,
                "ok": summary.counts.get("ok", 0),
                "pipeline_s": round(labelled, 1),
                "files_per_s": round(count / labelled),
                "resume_scan_s": round(scan, 2),
                "resume_done": len(resume.done),
                "peak_rss_mb": round(peak_mb),
                "folder_made_s": round(made, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1000,100000")
    parser.add_argument("--cache-dir", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, args.cache_dir)
        return
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        cmd = [sys.executable, __file__, "--child", str(count), "--cache-dir", str(args.cache_dir)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print("| files | records | pipeline s | files/s | resume scan s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['files']:,} | {r['records']:,} | {r['pipeline_s']} | {r['files_per_s']:,} "
            f"| {r['resume_scan_s']} | {r['peak_rss_mb']} |"
        )


if __name__ == "__main__":
    main()
