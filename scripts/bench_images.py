"""Time to turn each awkward file into model pixels (or a named error), as a markdown table.

    python scripts/bench_images.py                       # tests/fixtures/awkward
    python scripts/bench_images.py ../shared/data/awkward

Each file is loaded --repeat times with the default image token budget; the table gives
the median time, the outcome (format and the repairs noted, or the error status) and the
size sent to the model.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from qvl_label.pipeline.images import ImageLoadError, load_image
from qvl_label.settings import DEFAULT_IMAGE_MAX_TOKENS, DEFAULT_IMAGE_MIN_TOKENS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=Path("tests/fixtures/awkward"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.system()}; budget {DEFAULT_IMAGE_MAX_TOKENS} tokens")
    print()
    print("| file | bytes | median s | outcome | model input |")
    print("|---|---|---|---|---|")
    for path in sorted(p for p in args.folder.iterdir() if p.is_file() and not p.name.endswith((".tsv", ".md"))):
        times = []
        outcome, size = "", "-"
        for _ in range(args.repeat):
            started = time.perf_counter()
            try:
                loaded = load_image(path, DEFAULT_IMAGE_MIN_TOKENS, DEFAULT_IMAGE_MAX_TOKENS)
                outcome = f"{loaded.format} {loaded.width}x{loaded.height} {' '.join(loaded.notes)}".strip()
                size = f"{loaded.prepared.width}x{loaded.prepared.height}"
            except ImageLoadError as exc:
                outcome = exc.kind
            times.append(time.perf_counter() - started)
        print(f"| {path.name} | {path.stat().st_size:,} | {statistics.median(times):.3f} | {outcome} | {size} |")


if __name__ == "__main__":
    main()
