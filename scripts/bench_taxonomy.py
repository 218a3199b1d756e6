"""Category mapping on the gold tables: precision, coverage and time per path, as a markdown table.

    python scripts/bench_taxonomy.py

Each row of tests/data/taxonomy-gold.tsv (the table the mapper and its aliases were tuned
on) and tests/data/taxonomy-heldout.tsv (written afterwards, never tuned on) gives the
model's top level and path and the node a catalogue editor would choose. A mapping is the
exact node, an ancestor of it (right branch, less specific), a wrong branch, or the top level.
Precision is exact / mapped below the top level; coverage is mapped below the top level /
rows whose expected node is below it. Times are for uncached mappings (the label shaper caches repeats).
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

from qvl_label.evaluation.taxonomy_gold import evaluate, read_gold
from qvl_label.labeling.taxonomy import MIN_SCORE, load_taxonomy

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
TABLES = {
    "tuning": DATA / "taxonomy-gold.tsv",
    "held-out": DATA / "taxonomy-heldout.tsv",
    "held-out 2 (issue #27)": DATA / "taxonomy-heldout-2.tsv",
    "sealed (issue #27)": DATA / "taxonomy-sealed.tsv",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show-misses", action="store_true", help="list the rows mapped wrongly")
    args = parser.parse_args()
    taxonomy = load_taxonomy()
    taxonomy.index  # built once per process, not part of a mapping's time  # noqa: B018
    taxonomy.match("Furniture", ["Sofa Bed"])  # so is the head-noun index, built on the first mapping
    print(f"machine: {platform.machine()}, {platform.system()}; threshold {MIN_SCORE}")
    print()
    print(
        "| table | rows | exact node | an ancestor | wrong branch | fell to top level | precision | coverage "
        "| ms mean | ms p50 | ms p95 | ms max |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, path in TABLES.items():
        outcome = evaluate(taxonomy, read_gold(path))
        times = sorted(outcome.timings_ms)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(
            f"| {name} | {outcome.rows} | {outcome.correct} | {outcome.too_general} | {outcome.wrong_branch} "
            f"| {outcome.fell_back} "
            f"| {outcome.precision:.1%} | {outcome.coverage:.1%} | {statistics.mean(times):.2f} "
            f"| {statistics.median(times):.2f} | {p95:.2f} "
            f"| {times[-1]:.2f} |"
        )
        if args.show_misses:
            for miss in outcome.misses:
                print(f"  miss ({name}): {miss}")


if __name__ == "__main__":
    main()
