"""The examples each command's --help ends with; tests parse every one, so they cannot drift from the options."""

from __future__ import annotations

# Keyed by the command's path under `qvl-label`; one or two lines each, the first the commonest use.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "describe": (
        "qvl-label describe shoe.jpg --pretty",
        "qvl-label describe front.jpg back.jpg --as-product --lang en,de",
    ),
    "batch": (
        "qvl-label batch ./images -o out.jsonl",
        "find shop -name '*.jpg' | qvl-label batch - -o out.jsonl --shard 1/4",
    ),
    "serve": (
        "qvl-label serve --port 8000",
        "QVL_LABEL_API_KEY=secret qvl-label serve --host 0.0.0.0 --allow-dir ./images",
    ),
    "cache stats": ("qvl-label cache stats --json",),
    "cache clear": ("qvl-label cache clear",),
    "export": (
        "qvl-label export out.jsonl --csv labels.csv",
        "qvl-label export out.jsonl --format gmc-tsv --ids shop-ids.csv --root ./images "
        "--image-base-url https://cdn.example.com/img -o supplemental.tsv",
    ),
    "merge": ("qvl-label merge shard-1.jsonl shard-2.jsonl -o all.jsonl",),
    "import-review": ("qvl-label import-review label-studio-export.json -o gold.jsonl",),
    "models list": ("qvl-label models list", "qvl-label models list --json"),
    "models pull": ("qvl-label models pull qwen3-vl-8b",),
    "models path": ("qvl-label models path",),
    "models make-random": ("qvl-label models make-random ./tiny-model --shape tiny",),
    "doctor": ("qvl-label doctor", "qvl-label doctor --json"),
    "schema": ("qvl-label schema --lang en", "qvl-label schema --record"),
    "taxonomy map": ("qvl-label taxonomy map 'Apparel & Accessories > Shoes > Sneakers'",),
    "taxonomy search": ("qvl-label taxonomy search sneakers -n 5",),
    "lint-copy": (
        "qvl-label lint-copy --lang en 'The best shoe ever made'",
        "qvl-label lint-copy --file out.jsonl --column label.copy.zh.title --fix",
    ),
    "eval": (
        "qvl-label eval out.jsonl --gold gold.jsonl",
        "qvl-label eval out.jsonl --gold gold.csv --html report.html",
    ),
    "compare": ("qvl-label compare run-a.jsonl run-b.jsonl --gold gold.jsonl",),
    "learn": ("qvl-label learn gold.jsonl --run out.jsonl -o shop.toml",),
    "gold from-feed": ("qvl-label gold from-feed products.csv --map https://cdn.example.com/=./images -o gold.jsonl",),
}


def epilog(command: str) -> str | None:
    """The --help epilog of one command: its examples, kept on their own lines (click's \\b)."""
    lines = EXAMPLES.get(command)
    if not lines:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
