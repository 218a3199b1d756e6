"""Category mapping and compliance rules over the project's own test tables, as markdown tables.

    python scripts/eval_rules.py            # both tables
    python scripts/eval_rules.py --misses   # and the rows each got wrong
    python scripts/eval_rules.py --write-docs docs/guide/categories-compliance.md
                                            # replace the tables between the page's markers

Category mapping: every tests/data/taxonomy-*.tsv table, each row counted as the exact
node, an ancestor of it (right branch, less specific; the top level counts here when a
deeper node was expected), or a wrong branch. Compliance: every tests/data/compliance-*.tsv
table; a `flag` row is flagged-right when at least one flag is raised and missed otherwise,
a `clean` row with any flag is a false flag. docs/guide/categories-compliance.md shows the output.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from qvl_label.evaluation.taxonomy_gold import read_gold
from qvl_label.labeling.compliance import check_copy
from qvl_label.labeling.config import load_config
from qvl_label.labeling.taxonomy import load_taxonomy

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
# products in Apparel (166) are checked, as the compliance tests do: medical rules apply
NON_MEDICAL = {166}
BEGIN, END = "<!-- eval_rules: begin -->", "<!-- eval_rules: end -->"


def compliance_rows(path: Path) -> list[tuple[str, str, str]]:
    """(lang, expect, text) of a compliance table: per-language tables or the held-out ones with a lang column."""
    lang = path.stem.split("-")[1]
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if lang in ("heldout", "sealed"):
            rows.append((cells[0], cells[1], cells[3]))
        else:
            rows.append((lang, cells[0], cells[1]))
    return rows


def taxonomy_table(show_misses: bool) -> None:
    taxonomy = load_taxonomy()
    print("| table | rows | exact | ancestor | wrong branch |")
    print("|---|---|---|---|---|")
    for path in sorted(DATA.glob("taxonomy-*.tsv")):
        exact = ancestor = wrong = 0
        misses = []
        for row in read_gold(path):
            node, _ = taxonomy.match(row.top, row.path)
            if node.path == row.expected:
                exact += 1
                continue
            if row.expected[: len(node.path)] == node.path:
                ancestor += 1
            else:
                wrong += 1
            misses.append(f"{row.top} | {' > '.join(row.path)} -> {' > '.join(node.path)}")
        print(f"| {path.name} | {exact + ancestor + wrong} | {exact} | {ancestor} | {wrong} |")
        if show_misses:
            for miss in misses:
                print(f"  miss: {miss}")


def compliance_table(show_misses: bool) -> None:
    rules = load_config().rules
    print("| table | rows | flagged right | missed | false flags | clean right |")
    print("|---|---|---|---|---|---|")
    for path in sorted(DATA.glob("compliance-*.tsv")):
        right = missed = false = clean = 0
        misses = []
        for lang, expect, text in compliance_rows(path):
            copy = {lang: {"title": "", "description": text, "selling_points": [], "tags": []}}
            flags, _ = check_copy(copy, rules, NON_MEDICAL, strict=False)
            if expect == "flag":
                right += bool(flags)
                missed += not flags
                if not flags:
                    misses.append(f"missed ({lang}): {text}")
            else:
                false += bool(flags)
                clean += not flags
                if flags:
                    misses.append(f"false flag ({lang}): {text} [{', '.join(f['text'] for f in flags)}]")
        print(f"| {path.name} | {right + missed + false + clean} | {right} | {missed} | {false} | {clean} |")
        if show_misses:
            for miss in misses:
                print(f"  {miss}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--misses", action="store_true", help="list the rows each table got wrong")
    parser.add_argument("--write-docs", type=Path, help="replace the tables between the markers of this page")
    args = parser.parse_args()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print("Category mapping\n")
        taxonomy_table(args.misses and not args.write_docs)
        print("\nCompliance\n")
        compliance_table(args.misses and not args.write_docs)
    if args.write_docs is None:
        print(out.getvalue(), end="")
        return
    page = args.write_docs.read_text(encoding="utf-8")
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{args.write_docs}: no {BEGIN} marker")
    generated = "(written by `python scripts/eval_rules.py --write-docs`)\n\n" + out.getvalue()
    partial = args.write_docs.with_suffix(".md.partial")  # written whole, then renamed over the page
    partial.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}", encoding="utf-8")
    partial.replace(args.write_docs)


if __name__ == "__main__":
    main()
