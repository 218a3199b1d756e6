"""Write the generated documentation from the code: every command's --help and the docs' example outputs.

    python scripts/gen_docs.py            # rewrite docs/reference/cli.md and every generated block
    python scripts/gen_docs.py --check    # exit 1, naming what is stale, when either differs (CI)

Examples sit between `<!-- generated:NAME -->` and `<!-- end:NAME -->` markers in README.md and
docs/guide/{describe,batch,labels,review,serve,products,install}.md; scripts/doc_examples.py and
scripts/doc_sessions.py make each by running the real CLI and code, with a scripted engine in place of
llama.cpp where a model answers:

- `describe-record` (README, describe): conftest's `sample_answer` through the real `Labeler`.
- `batch-run` (README, batch): `qvl-label batch` run twice (a run, then its resume).
- `cache-session` (batch): a run, the same photos into another output from the label cache, `cache stats`, `clear`.
- `taxonomy-tools`, `lint-copy` (labels): `taxonomy map`, `taxonomy search` and `lint-copy --fix`.
- `eval-run`, `compare-run`, `feed-gold-run` (review): two scripted runs over the photos
  tests/fixtures/gold.csv covers, scored by `eval`, set side by side by `compare`, and the first
  exported as a Merchant Center feed that `gold from-feed` reads back.
- `products-run`, `product-record` (products): `batch --group-by pattern` over the Magento views, the photos'
  roles, and one product record's own fields.
- `import-review-run` (review): `import-review` on the Label Studio export in tests/fixtures/labelstudio.
- `offline-error`, `doctor` (install): `describe` with no model (downloads off, then no network) in a fresh
  state folder, and `qvl-label doctor` on this install, its smoke test on the generated tiny model included.
- `serve-run`, `serve-audit` (serve): `qvl-label serve` in a child process, asked with curl's requests,
  stopped with SIGTERM, and its audit log.

`--check` masks, inside generated blocks only, what differs between runs (MASKS: timings, the free
port, the audit log's clock and ids, the cache file's size, doctor's machine lines); editing anything
else in a block by hand makes it fail.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

# typer and rich read these when imported: help is rendered at a fixed width, without colour.
HELP_WIDTH = 100
os.environ.update({"TERMINAL_WIDTH": str(HELP_WIDTH), "COLUMNS": str(HELP_WIDTH), "NO_COLOR": "1", "TERM": "dumb"})
os.environ.pop("FORCE_COLOR", None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import doc_examples  # noqa: E402  (after the environment above: typer reads it on import)
import doc_sessions  # noqa: E402

CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide"
PAGES = ("describe", "batch", "labels", "review", "serve", "products", "install")
BLOCK_FILES = [README, *(GUIDE / f"{page}.md" for page in PAGES)]
BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- end:\2 -->)", re.S)
# What differs from one run of an example to the next, masked inside generated blocks when checking.
MASKS = [
    (re.compile(r"in \d+(\.\d+)?s \(\d+(\.\d+)?s per (image|product)\)"), "in …"),  # batch's timing line
    (re.compile(r"^.*ms per image.*$", re.M), "ms per image …"),  # eval's and compare's timing rows
    (re.compile(r"(localhost|127\.0\.0\.1):\d+"), r"\1:…"),  # serve's free port, curl's client ports
    (re.compile(r"server process \[\d+\]"), "server process […]"),
    (re.compile(r'"(time|request_id)":"[^"]*"'), r'"\1":"…"'),  # the audit log's clock and random ids
    (re.compile(r'"total":[\d.]+'), '"total":…'),
    (re.compile(r"^bytes\t\d+$", re.M), "bytes\t…"),  # `cache stats`: the SQLite file's size, in pages
    # doctor: this machine's build, processors and free memory, and the smoke test's time
    (re.compile(r"^(GPU offload|devices) +.*$", re.M), r"\1 …"),
    (re.compile(r"\(\d+ of them forced; [\d.]+s, \d+ threads?, -?\d+ GPU layers, \d+ sequences"), "(…"),
]
# A timing cell sets its table's column widths: rule and padding runs in table lines count as one space.
TABLE_LINE = re.compile(r"^.*[│┃┏┡└].*$", re.M)


def command_paths() -> Iterator[list[str]]:
    """Every command and group of the typer app, depth first, as argument lists."""
    import click
    import typer

    from qvl_label.cli import app

    def walk(command: click.Command, path: list[str]) -> Iterator[list[str]]:
        yield path
        if isinstance(command, click.Group) or hasattr(command, "commands"):
            for name in sorted(command.commands):
                yield from walk(command.commands[name], [*path, name])

    yield from walk(typer.main.get_command(app), [])


def help_text(path: list[str]) -> str:
    from typer.testing import CliRunner

    from qvl_label.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], prog_name="qvl-label", terminal_width=HELP_WIDTH)
    if result.exit_code != 0:
        raise SystemExit(f"`qvl-label {' '.join(path)} --help` exited {result.exit_code}: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def cli_page() -> str:
    parts = [
        "# Command line reference",
        "",
        "<!-- Generated by scripts/gen_docs.py from the typer app; do not edit. CI runs"
        " `python scripts/gen_docs.py --check`, so this page cannot fall behind the code. -->",
        "",
        f"Every command's `--help`, rendered at {HELP_WIDTH} columns without colour.",
        "",
    ]
    for path in command_paths():
        name = " ".join(["qvl-label", *path])
        parts += [f"## `{name}`", "", "```text", f"$ {name} --help", help_text(path), "```", ""]
    return "\n".join(parts)


GENERATORS = {
    "describe-record": doc_examples.describe_record,
    "batch-run": doc_examples.batch_run,
    "taxonomy-tools": doc_examples.taxonomy_tools,
    "lint-copy": doc_examples.lint_copy,
    "eval-run": lambda: doc_examples.review_runs()["eval-run"],
    "compare-run": lambda: doc_examples.review_runs()["compare-run"],
    "feed-gold-run": lambda: doc_examples.review_runs()["feed-gold-run"],
    "products-run": lambda: doc_examples.products_runs()["products-run"],
    "product-record": lambda: doc_examples.products_runs()["product-record"],
    "serve-run": lambda: doc_examples.serve_runs()["serve-run"],
    "serve-audit": lambda: doc_examples.serve_runs()["serve-audit"],
    "cache-session": doc_sessions.cache_session,
    "offline-error": doc_sessions.offline_error,
    "doctor": doc_sessions.doctor_run,
    "import-review-run": doc_sessions.import_review_run,
}
# The examples that run an engine, left alone with --skip-run.
ENGINE_RUNS = {"batch-run", "eval-run", "compare-run", "feed-gold-run", "products-run", "serve-run", "serve-audit",
               "cache-session", "doctor", "product-record"}  # fmt: skip


def masked(text: str) -> str:
    """The text with what varies between runs masked, inside generated blocks only."""

    def mask(block: re.Match[str]) -> str:
        body = block.group(3)
        for pattern, replacement in MASKS:
            body = pattern.sub(replacement, body)
        body = TABLE_LINE.sub(lambda line: re.sub(r"[ ─━]+", " ", line.group()), body)
        return block.group(1) + body + block.group(4)

    return BLOCK.sub(mask, text)


def fill_blocks(text: str, bodies: dict[str, str]) -> str:
    for name, body in bodies.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)  # type: ignore[misc]
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale; write nothing")
    parser.add_argument("--skip-run", action="store_true", help="leave the examples that run an engine alone")
    args = parser.parse_args()
    texts = {path: path.read_text(encoding="utf-8") for path in BLOCK_FILES}
    if "<!-- generated:describe-record -->" not in texts[README] or "<!-- generated:batch-run -->" not in texts[README]:
        raise SystemExit("README.md lost a <!-- generated:… --> block: describe-record and batch-run belong there")
    used = {block.group(2) for text in texts.values() for block in BLOCK.finditer(text)}
    if unknown := used - GENERATORS.keys():
        raise SystemExit(f"no generator for the blocks {', '.join(sorted(unknown))}")
    if lost := GENERATORS.keys() - used:
        raise SystemExit(f"the generated blocks {', '.join(sorted(lost))} are in no page: put their markers back")
    bodies = {name: GENERATORS[name]() for name in sorted(used) if not (args.skip_run and name in ENGINE_RUNS)}
    wanted = {CLI_PAGE: cli_page() + "\n"} | {path: fill_blocks(text, bodies) for path, text in texts.items()}
    stale = []
    for path, text in wanted.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if masked(current) != masked(text):
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "is stale: run python scripts/gen_docs.py" if args.check else "rewritten"
        print(f"{path.relative_to(ROOT)} {verb}", file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
