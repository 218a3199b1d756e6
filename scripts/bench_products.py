"""What a product of several photos costs against labelling the same photos one by one.

The three Magento products in tests/fixtures/views (3-4 views each) are labelled twice on
the same engine: as products (`batch --group-by pattern`: every photo in one sequence,
sharing --product-max-tokens) and as single photos (one record per photo at
--image-max-tokens each). Prints a markdown table: seconds, image tokens, prompt tokens and
output tokens per product, and what the product run saves.

    python scripts/bench_products.py --vocab qwen
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

from qvl_label import tinymodel
from qvl_label.pipeline.labeler import Labeler
from qvl_label.pipeline.products import group_by_pattern
from qvl_label.settings import EngineSettings, LabelSettings, ProductSettings, Settings
from qvl_label.store.cache import LabelCache

VIEWS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "views"
CACHE = Path.home() / ".cache" / "qvl-label-bench" / "models"


def _run(settings: Settings, as_products: bool) -> dict[str, Any]:
    paths = sorted(str(p) for p in VIEWS.glob("*.jpg"))
    products = group_by_pattern(paths)
    with Labeler(settings, cache=LabelCache(None)) as labeler:
        labeler.label_one(paths[0])  # warm-up: the instruction prefix is evaluated here, not in the timing
        start = time.perf_counter()
        records = list(labeler.label_products(products) if as_products else labeler.label(paths))
        wall = time.perf_counter() - start
    tokens = [r["tokens"] for r in records if r["tokens"]]
    n = len(products)
    return {
        "records": len(records),
        "ok": sum(r["status"] == "ok" for r in records),
        "s_per_product": wall / n,
        "image_tokens": sum(t["image"] for t in tokens) / n,
        "prompt_tokens": sum(t["prompt_evaluated"] for t in tokens) / n,
        "output_tokens": sum(t["completion"] for t in tokens) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=sorted(tinymodel.SHAPES))
    parser.add_argument("--vocab", default="qwen", choices=tinymodel.VOCABULARIES)
    parser.add_argument("--image-max-tokens", type=int, default=256)
    parser.add_argument("--product-max-tokens", type=int, default=1024)
    parser.add_argument("--product-max-photos", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    model = tinymodel.generate(CACHE, args.shape, vocabulary=args.vocab)
    settings = Settings(
        engine=EngineSettings(
            model_path=model.model,
            mmproj_path=model.mmproj,
            n_parallel=args.parallel,
            threads=args.threads,
            image_max_tokens=args.image_max_tokens,
        ),
        label=LabelSettings(languages=("en",)),
        product=ProductSettings(max_tokens=args.product_max_tokens, max_photos=args.product_max_photos),
    )
    single = _run(settings, as_products=False)
    product = _run(settings, as_products=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU threads; model: random-weight Qwen3-VL "
        f"({args.shape}, {args.vocab} vocabulary); --parallel {args.parallel}; 3 products of 3-4 photos "
        f"(tests/fixtures/views); singles at --image-max-tokens {args.image_max_tokens}, products at "
        f"--product-max-tokens {args.product_max_tokens}, --product-max-photos {args.product_max_photos}\n"
    )
    print("| run | records | ok | s per product | image tokens per product | prompt tokens per product "
          "| output tokens per product |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, row in (("each photo alone", single), ("one record per product", product)):
        print(
            f"| {name} | {row['records']} | {row['ok']} | {row['s_per_product']:.2f} | {row['image_tokens']:.0f} "
            f"| {row['prompt_tokens']:.0f} | {row['output_tokens']:.0f} |"
        )
    print(f"\nproduct run / single photos: {product['s_per_product'] / single['s_per_product']:.2f}x the time")


if __name__ == "__main__":
    main()
