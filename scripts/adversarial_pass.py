"""A fresh adversarial pass over issue #24's examples, as a hostile user would try them, through the real CLI.

Each check runs `python -m qvl_label ...` in a temporary folder (with the generated tiny model where a model
is needed), or real HTTP against `qvl-label serve` on a loopback port, and prints one row of the table
`| example | expected | observed | ok |`. No GPU and no network are needed.

    python scripts/adversarial_pass.py                                # the table on stdout
    python scripts/adversarial_pass.py --docs docs/reference/reliability.md   # also the page's "Adversarial pass"

Exit status 0 when every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qvl_label import tinymodel  # noqa: E402  (after the path: this checkout's qvl_label)

FIXTURES = ROOT / "tests" / "fixtures"
PRODUCTS = FIXTURES / "products"
VIEWS = FIXTURES / "views"
QUICK = ["--lang", "en", "--image-max-tokens", "64", "--max-tokens", "12000"]
CLOTHING = ["Apparel & Accessories", "Clothing"]

Row = tuple[str, str, str, bool]
CHECKS: list[tuple[str, str, Callable[[], tuple[str, bool]]]] = []


def check(example: str, expected: str) -> Callable[[Callable[[], tuple[str, bool]]], Callable[[], tuple[str, bool]]]:
    def register(function: Callable[[], tuple[str, bool]]) -> Callable[[], tuple[str, bool]]:
        CHECKS.append((example, expected, function))
        return function

    return register


# -- the hostile user's tools ----------------------------------------------------------------------------------

WORK = Path(tempfile.mkdtemp(prefix="qvl-adversarial-"))
MODEL: tinymodel.GeneratedModel | None = None


def model_args() -> list[str]:
    global MODEL
    if MODEL is None:
        MODEL = tinymodel.generate(WORK / "tiny-model")
    return ["--model", str(MODEL.model), "--mmproj", str(MODEL.mmproj)]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "QVL_LABEL_HOME": str(WORK / "state"),
        "QVL_LABEL_HF_CACHE": str(WORK / "hf-cache"),
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
    }


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qvl_label", *args]


def cli(*args: str, cwd: Path, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command(*args), cwd=cwd, input=stdin, capture_output=True, timeout=timeout, env=env())


def text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode("utf-8", "replace")


def first_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line for line in text(result).splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def crashed(result: subprocess.CompletedProcess[bytes]) -> bool:
    out = text(result) + result.stdout.decode("utf-8", "replace")
    return result.returncode == 70 or "Traceback" in out or "internal error" in out


def short(line: str, limit: int = 110) -> str:
    line = line.replace("|", "\\|").replace("\n", " ")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def folder(name: str) -> Path:
    path = WORK / name
    path.mkdir(parents=True)
    return path


def record(path: str, **label: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "category": {"id": 1604, "path": CLOTHING, "raw": ["Apparel & Accessories", "tee"], "match": 0.3},
        "attributes": {"colors": [{"raw": "red", "value": "red"}]},
        "copy": {"en": {"title": "Red tee", "description": "A red tee."}},
    }
    base.update(label)
    return {"path": path, "status": "ok", "run": "r1", "sha256": hashlib.sha256(path.encode()).hexdigest(),
            "languages": ["en"], "label": base}  # fmt: skip


def jsonl(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records))
    return path


def world(name: str) -> Path:
    """Inputs for every writing command: two photos, a run, a second run, gold, a feed, a review, a template."""
    here = folder(name)
    shutil.copy(PRODUCTS / "ms04-red_main.jpg", here / "a.jpg")
    shutil.copy(PRODUCTS / "wj04-white_main.jpg", here / "b.jpg")
    jsonl(here / "run.jsonl", [record("a.jpg"), record("b.jpg")])
    jsonl(here / "run2.jsonl", [record("a.jpg"), record("b.jpg")])
    jsonl(here / "gold.jsonl", [{"path": p, "label": {"category": {"id": 212}}} for p in ("a.jpg", "b.jpg")])
    (here / "feed.tsv").write_text("id\ttitle\tgoogle_product_category\timage_link\nt1\tRed tee\t212\ta.jpg\n")
    shutil.copy(FIXTURES / "labelstudio" / "export.json", here / "review.json")
    (here / "shop.toml").write_text("# a template\n")
    return here


def snapshot(here: Path) -> dict[str, bytes]:
    return {str(p.relative_to(here)): p.read_bytes() for p in sorted(here.rglob("*")) if p.is_file()}


# -- data loss and files that are not ours ---------------------------------------------------------------------


def photos(here: Path, count: int) -> Path:
    shop = here / "photos"
    shop.mkdir()
    for i in range(count):
        shutil.copy(PRODUCTS / "ms04-red_main.jpg", shop / f"{i:02d}.jpg")  # copies: the label is reused, fast
    return shop


@check("two `batch` runs on one output at once", "each photo one record; the second run exits 2 naming the holder")
def two_batches() -> tuple[str, bool]:
    here = folder("two-batches")
    shop = photos(here, 6)
    args = command("batch", str(shop), "-o", "out.jsonl", "-q", "--cache", "labels.sqlite", *model_args(), *QUICK)
    runs = [subprocess.Popen(args, cwd=here, stderr=subprocess.PIPE, env=env()) for _ in range(2)]
    outcomes = [(run.wait(timeout=600), run.stderr.read().decode() if run.stderr else "") for run in runs]
    paths = [json.loads(line)["path"] for line in (here / "out.jsonl").read_bytes().splitlines()]
    codes = sorted(code for code, _ in outcomes)
    refusals = [err for code, err in outcomes if code == 2]
    named = all("being written by another run (pid " in err for err in refusals)
    ok = len(paths) == 6 and len(set(paths)) == 6 and set(codes) <= {0, 2} and named
    return f"exit codes {codes}; {len(paths)} records for {len(set(paths))} photos; refusal names the pid: {named}", ok


VERIFY = """
import sys
from pathlib import Path
from qvl_label.engine.models import ModelStore, load_lock, PinnedFile, sha256_of
store = ModelStore(load_lock(Path(sys.argv[1])), Path(sys.argv[2]))
for name in sys.argv[3:]:
    path = Path(name)
    store.verify(path, PinnedFile(file=path.name, size=path.stat().st_size, sha256=sha256_of(path)))
"""


@check("4 processes verifying models at once (the 4-shard example)", "every entry kept, no process fails")
def four_verifications() -> tuple[str, bool]:
    here = folder("verify")
    files = []
    for i in range(20):
        files.append(here / f"model-{i}.gguf")
        files[-1].write_bytes(os.urandom(4096))
    state = here / "state"
    lock = ROOT / "models.lock"
    runs = [
        subprocess.Popen([sys.executable, "-c", VERIFY, str(lock), str(state), *map(str, files[i::4])],
                         stderr=subprocess.PIPE, env=env())
        for i in range(4)
    ]  # fmt: skip
    codes = [run.wait(timeout=300) for run in runs]
    errors = [run.stderr.read().decode().strip().splitlines()[-1:] for run in runs if run.stderr]
    entries = json.loads((state / "verified.json").read_text())
    kept = len(set(entries) & {str(f.resolve()) for f in files})
    ok = codes == [0] * 4 and kept == 20
    failed = [e[0] for e in errors if e]
    return f"exit codes {codes}; {kept} of 20 entries kept{'; ' + short(failed[0]) if failed else ''}", ok


@check("`batch -o` is the `--cache` database, its -wal, its -shm", "exit 2 each, the cache untouched")
def output_is_cache() -> tuple[str, bool]:
    here = folder("cache-output")
    shop = photos(here, 1)
    labelled = WORK / "two-batches" / "labels.sqlite"  # the cache the two-batch check filled: no labelling again
    if labelled.exists():
        shutil.copy(labelled, here / "labels.sqlite")
    else:
        cli("batch", str(shop), "-o", "seed.jsonl", "-q", "--cache", "labels.sqlite", *model_args(), *QUICK, cwd=here)
    before = (here / "labels.sqlite").read_bytes()
    codes = []
    for out in ("labels.sqlite", "labels.sqlite-wal", "labels.sqlite-shm"):
        result = cli("batch", str(shop), "-o", out, "--cache", "labels.sqlite", *model_args(), *QUICK, cwd=here)
        codes.append(result.returncode)
    untouched = (here / "labels.sqlite").read_bytes() == before
    ok = len(before) > 0 and codes == [2, 2, 2] and untouched
    return f"exit codes {codes}; cache untouched: {untouched}", ok


@check('a stranger\'s one-line `{"path":` file without newline as `batch -o`', "exit 2, the file left whole")
def foreign_one_line() -> tuple[str, bool]:
    here = folder("foreign-line")
    shop = photos(here, 1)
    content = b'{"path": "my notes, not a record'
    (here / "notes.jsonl").write_bytes(content)
    result = cli("batch", str(shop), "-o", "notes.jsonl", *model_args(), *QUICK, cwd=here)
    whole = (here / "notes.jsonl").read_bytes() == content
    return (
        f"exit {result.returncode}, file whole: {whole}: {short(first_line(result))}",
        result.returncode == 2 and whole,
    )


WRITERS: dict[str, tuple[list[str], str]] = {  # argv with {out}; the input an output must never be
    "merge": (["merge", "run.jsonl", "run2.jsonl", "-o", "{out}"], "run2.jsonl"),
    "export": (["export", "run.jsonl", "-o", "{out}"], "run.jsonl"),
    "import-review": (["import-review", "review.json", "-o", "{out}"], "review.json"),
    "gold from-feed": (["gold", "from-feed", "feed.tsv", "-o", "{out}", "--template", "shop.toml"], "shop.toml"),
    "learn": (["learn", "gold.jsonl", "--run", "run.jsonl", "-o", "{out}"], "gold.jsonl"),
    "eval --html": (["eval", "run.jsonl", "--gold", "gold.jsonl", "--html", "{out}"], "gold.jsonl"),
    "compare --html": (["compare", "run.jsonl", "run2.jsonl", "--gold", "gold.jsonl", "--html", "{out}"], "run.jsonl"),
    "export --label-studio": (["export", "tasks.json", "--label-studio", "{out}"], "."),
}


def writer_check(name: str) -> Callable[[], tuple[str, bool]]:
    def run() -> tuple[str, bool]:
        here = world("writer-" + re.sub(r"\W+", "-", name))
        (here / "tasks.json").write_bytes((here / "run.jsonl").read_bytes())  # records under Label Studio's name
        argv, own_input = WRITERS[name]
        elsewhere = folder("elsewhere-" + re.sub(r"\W+", "-", name))
        if name == "export --label-studio":  # folders: a stranger's folder, a link to it
            (elsewhere / "tasks.json").write_text("my tasks")
            (here / "theirs").mkdir()
            (here / "theirs" / "tasks.json").write_text("my tasks")
            (here / "link").symlink_to(elsewhere)
            targets = {"input": own_input, "symlink": "link", "stranger": "theirs"}
        else:
            (elsewhere / "victim.txt").write_text("precious\n")
            (here / "link").symlink_to(elsewhere / "victim.txt")
            (here / "theirs.txt").write_text("id,title\n1,my own sheet\n")
            targets = {"input": own_input, "symlink": "link", "stranger": "theirs.txt"}
        observed, ok = [], True
        for case, target in targets.items():
            before, outside = snapshot(here), snapshot(elsewhere)
            result = cli(*[target if a == "{out}" else a for a in argv], cwd=here)
            untouched = snapshot(here) == before and snapshot(elsewhere) == outside
            observed.append(f"{case}: exit {result.returncode}{'' if untouched else ' WRITTEN'}")
            ok = ok and result.returncode == 2 and untouched and not crashed(result)
        return "; ".join(observed), ok

    return run


for _name in WRITERS:
    check(f"`{_name}` output at its own input, a symlink, a stranger's file", "exit 2 each, nothing written")(
        writer_check(_name)
    )


@check("`serve --audit-log` at the model file", "exit 2 before the model loads, the model untouched")
def audit_log_at_model() -> tuple[str, bool]:
    here = folder("audit-model")
    args = model_args()
    assert MODEL is not None
    before = MODEL.model.read_bytes()
    result = cli("serve", "--port", "0", "--audit-log", str(MODEL.model), *args, cwd=here, timeout=120)
    untouched = MODEL.model.read_bytes() == before
    ok = result.returncode == 2 and untouched
    return f"exit {result.returncode}, model untouched: {untouched}: {short(first_line(result))}", ok


def shopify(ids: list[tuple[str, str]], name: str) -> tuple[str, bool]:
    here = world(name)
    with (here / "ids.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "id"), *ids])
    result = cli("export", "run.jsonl", "--format", "shopify-csv", "--ids", "ids.csv",
                 "--image-base-url", "https://x.example/", "-o", "shop.csv", cwd=here)  # fmt: skip
    if result.returncode == 0:
        rows = list(csv.DictReader(io.StringIO((here / "shop.csv").read_text(encoding="utf-8-sig"))))
        handles = {row["URL handle"] for row in rows if row["Title"]}
        return f"exit 0, handles {sorted(handles)}", len(handles) == 2
    ok = result.returncode == 2 and "handle" in text(result) and not (here / "shop.csv").exists()
    return f"exit {result.returncode}: {short(first_line(result))}", ok


@check("Shopify export of ids `连衣裙-001` / `衬衫-001`", "unique handles, or exit 2 naming the clash")
def shopify_cjk() -> tuple[str, bool]:
    return shopify([("a.jpg", "连衣裙-001"), ("b.jpg", "衬衫-001")], "shopify-cjk")


@check("Shopify export of ids `SKU A` / `sku-a`", "unique handles, or exit 2 naming the clash")
def shopify_case() -> tuple[str, bool]:
    return shopify([("a.jpg", "SKU A"), ("b.jpg", "sku-a")], "shopify-case")


SEPARATORS = ["\u2028", "\x85", "\x0b"]


@check("U+2028 / \\x85 / \\x0b inside titles: export a feed, read it back", "3 products back, titles whole")
def separators_feed() -> tuple[str, bool]:
    here = world("separators")
    records = [record(f"p{i}.jpg", copy={"en": {"title": f"Red{s}tee {i}", "description": "x"}})
               for i, s in enumerate(SEPARATORS)]  # fmt: skip
    jsonl(here / "odd.jsonl", records)
    exported = cli("export", "odd.jsonl", "--format", "shopify-csv", "--image-base-url", "https://x.example/",
                   "-o", "f.csv", cwd=here)  # fmt: skip
    back = cli("gold", "from-feed", "f.csv", "--map", "https://x.example/=.", "-o", "g.jsonl", cwd=here)
    if exported.returncode or back.returncode:
        return f"exit {exported.returncode}/{back.returncode}: {short(first_line(back) or first_line(exported))}", False
    gold = [json.loads(line) for line in (here / "g.jsonl").read_bytes().split(b"\n") if line]
    titles = [g["label"]["copy"]["en"]["title"] for g in gold]
    ok = titles == [r["label"]["copy"]["en"]["title"] for r in records]
    return f"{len(gold)} products back, titles whole: {ok}", ok


@check("U+2028 / \\x85 / \\x0b inside CSV cells for `lint-copy --file`", "one answer per row (3)")
def separators_lint() -> tuple[str, bool]:
    here = folder("separators-lint")
    with (here / "copy.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["title"], *[[f"Soft{s}tee"] for s in SEPARATORS]])
    result = cli("lint-copy", "--lang", "en", "--file", "copy.csv", "--column", "title", cwd=here)
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    ok = result.returncode == 0 and [a["text"] for a in answers] == [f"Soft{s}tee" for s in SEPARATORS]
    return f"exit {result.returncode}, {len(answers)} answers", ok


# -- crashes (exit 70) -----------------------------------------------------------------------------------------


def mistyped(args: list[str]) -> tuple[str, bool]:
    here = world("mistyped-" + re.sub(r"\W+", "-", args[0] + "-" + args[-1]))
    jsonl(
        here / "bad.jsonl",
        [record(str(here / "a.jpg")), record(str(here / "b.jpg"), category={"id": "212", "path": 5})],
    )
    review = json.loads((here / "review.json").read_text())
    review[1]["annotations"][0]["result"][0]["value"] = {"text": 5, "choices": 5, "taxonomy": "Apparel"}
    (here / "bad-review.json").write_text(json.dumps(review))
    result = cli(*args, cwd=here)
    ok = result.returncode == 2 and not crashed(result) and "field" in text(result)
    return f"exit {result.returncode}: {short(first_line(result))}", ok


@check("mistyped record fields to `export --label-studio`", "exit 2 naming file:line and field")
def mistyped_label_studio() -> tuple[str, bool]:
    return mistyped(["export", "bad.jsonl", "--label-studio", "ls", "--root", "."])


@check("mistyped fields in a Label Studio export to `import-review`", "exit 2 naming task and field")
def mistyped_review() -> tuple[str, bool]:
    return mistyped(["import-review", "bad-review.json", "-o", "g.jsonl"])


@check("mistyped record fields to `eval`", "exit 2 naming file:line and field")
def mistyped_eval() -> tuple[str, bool]:
    return mistyped(["eval", "bad.jsonl", "--gold", "gold.jsonl", "--root", "."])


@check("mistyped record fields to `compare`", "exit 2 naming file:line and field")
def mistyped_compare() -> tuple[str, bool]:
    return mistyped(["compare", "run.jsonl", "bad.jsonl", "--gold", "gold.jsonl", "--root", "."])


@check("mistyped record fields to `learn`", "exit 2 naming file:line and field")
def mistyped_learn() -> tuple[str, bool]:
    return mistyped(["learn", "gold.jsonl", "--run", "bad.jsonl", "--root", "."])


def gold_csv(here: Path, rows: list[list[str]]) -> None:
    with (here / "gold.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


@check("a gold CSV cell of 200 KB (`eval`)", "read: exit 0, 1 photo matched")
def long_cell() -> tuple[str, bool]:
    here = world("long-cell")
    gold_csv(here, [["path", "category_id", "visible_text"], ["a.jpg", "212", "ARLA " * 40_000]])
    result = cli("eval", "run.jsonl", "--gold", "gold.csv", "--json", cwd=here)
    matched = json.loads(result.stdout).get("matched_with_gold") if result.returncode == 0 else None
    return f"exit {result.returncode}, matched {matched}", result.returncode == 0 and matched == 1


@check("a gold CSV row with an extra cell (`eval`)", "exit 2 naming the line")
def extra_cell() -> tuple[str, bool]:
    here = world("extra-cell")
    gold_csv(here, [["path", "category_id"], ["a.jpg", "212"], ["b.jpg", "212", "oops"]])
    result = cli("eval", "run.jsonl", "--gold", "gold.csv", cwd=here)
    ok = result.returncode == 2 and "gold.csv:3:" in text(result) and not crashed(result)
    return f"exit {result.returncode}: {short(first_line(result))}", ok


@check("`²` as a gold category id (`eval`)", "exit 2 naming the line")
def superscript_id() -> tuple[str, bool]:
    here = world("superscript")
    gold_csv(here, [["path", "category_id"], ["a.jpg", "²"]])
    result = cli("eval", "run.jsonl", "--gold", "gold.csv", cwd=here)
    ok = result.returncode == 2 and "gold.csv:2" in text(result) and not crashed(result)
    return f"exit {result.returncode}: {short(first_line(result))}", ok


def bad_stdin(*args: str) -> tuple[str, bool]:
    result = cli(*args, cwd=WORK, stdin=b"Apparel & Accessories\nApparel \xff\n")
    ok = result.returncode == 2 and "not UTF-8" in text(result) and not crashed(result)
    return f"exit {result.returncode}: {short(first_line(result))}", ok


@check("invalid UTF-8 on stdin of `taxonomy map`", "exit 2 naming the line")
def stdin_taxonomy() -> tuple[str, bool]:
    return bad_stdin("taxonomy", "map")


@check("invalid UTF-8 on stdin of `lint-copy`", "exit 2 naming the line")
def stdin_lint() -> tuple[str, bool]:
    return bad_stdin("lint-copy", "--lang", "en")


def serve_option(option: str, value: str) -> tuple[str, bool]:
    result = cli("serve", "--port", "0", option, value, *model_args(), cwd=WORK, timeout=120)
    lines = [line for line in text(result).splitlines() if line.strip()]
    ok = result.returncode == 2 and len(lines) == 1 and option in lines[0]
    return f"exit {result.returncode}, {len(lines)} line: {short(first_line(result))}", ok


@check("`serve --max-body-mb inf`", "exit 2, one line")
def max_body_inf() -> tuple[str, bool]:
    return serve_option("--max-body-mb", "inf")


@check("`serve --grace inf`", "exit 2, one line")
def grace_inf() -> tuple[str, bool]:
    return serve_option("--grace", "inf")


# -- resource limits -------------------------------------------------------------------------------------------


def refused_batch(*extra: str, name: str) -> tuple[str, bool]:
    here = folder(name)
    (here / "shop" / "p").mkdir(parents=True)
    shutil.copy(PRODUCTS / "ms04-red_main.jpg", here / "shop" / "p" / ("a" * 60 + "!.jpg"))
    broken = here / "broken.gguf"  # loading it would be exit 4: exit 2 shows the refusal came first
    broken.write_bytes(b"GGUF" + bytes(64))
    started = time.monotonic()
    result = cli("batch", "shop", "-o", "out.jsonl", *extra, "--model", str(broken), "--mmproj", str(broken), cwd=here)
    seconds = time.monotonic() - started
    ok = result.returncode == 2 and not crashed(result) and not (here / "out.jsonl").exists()
    return f"exit {result.returncode} in {seconds:.1f} s: {short(first_line(result))}", ok


@check("`batch --group-by folder --product-max-tokens 1000000000`", "exit 2 before the model loads")
def product_tokens() -> tuple[str, bool]:
    return refused_batch("--group-by", "folder", "--product-max-tokens", "1000000000", name="product-tokens")


@check("`batch --group-by folder --product-max-photos 100000`", "exit 2 before the model loads")
def product_photos() -> tuple[str, bool]:
    return refused_batch("--group-by", "folder", "--product-max-photos", "100000", name="product-photos")


@check("`batch --ray --actors 30` on this machine", f"exit 2 ({os.cpu_count()} CPUs)")
def ray_actors() -> tuple[str, bool]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "skipped: Ray is not installed", True
    return refused_batch("--ray", "--actors", "30", name="ray-actors")


@check("`batch --group-pattern '^(a+)+$'` on a 60-`a` name", "exit 2 at once, no backtracking")
def costly_pattern() -> tuple[str, bool]:
    return refused_batch("--group-by", "pattern", "--group-pattern", "^(a+)+$", name="costly-pattern")


@check("`lint-copy --fix` on 2.5 MB of flagged copy", "answers in under 60 s (was 146 s)")
def lint_fix_big() -> tuple[str, bool]:
    copy = ("The best tee. Cures colds. Soft cotton. " * 64_000).encode() + b"\n"  # 2.56 MB
    started = time.monotonic()
    result = cli("lint-copy", "--lang", "en", "--fix", cwd=WORK, stdin=copy, timeout=300)
    seconds = time.monotonic() - started
    answer = json.loads(result.stdout) if result.returncode == 1 else {}
    flags = len(answer.get("flags", []))
    ok = result.returncode == 1 and seconds < 60 and "best" not in answer.get("fixed", "best").lower().split()
    return f"{len(copy) / 1e6:.2f} MB in {seconds:.1f} s, exit {result.returncode}, {flags} flags", ok


# -- injection and exposure ------------------------------------------------------------------------------------


@check("`learn` with wording `egg\\n[channels.evil]` (TOML read with tomllib)", "no `channels` table, wording kept")
def learn_injection() -> tuple[str, bool]:
    here = world("learn-injection")
    wording = "eggshell\n[channels.evil]\ntitle_limit = 1"
    jsonl(here / "run.jsonl", [record("a.jpg", attributes={"colors": [{"raw": wording, "value": None}]})])
    jsonl(here / "gold.jsonl", [{"path": "a.jpg", "label": {"attributes": {"colors": ["white"]}}}])
    result = cli("learn", "gold.jsonl", "--run", "run.jsonl", "-o", "shop.toml", "--force", cwd=here)
    if result.returncode:
        return f"exit {result.returncode}: {short(first_line(result))}", False
    tables = tomllib.loads((here / "shop.toml").read_text(encoding="utf-8"))
    kept = tables.get("vocabularies", {}).get("colors", {}).get("white", {}).get("synonyms") == [wording]
    return f"tables {sorted(tables)}, wording kept as a synonym: {kept}", "channels" not in tables and kept


@check(
    "`<` and `&` in record fields to `export --label-studio` (config.xml read with xml.etree)",
    "well-formed, values intact",
)
def label_studio_xml() -> tuple[str, bool]:
    here = world("label-studio-xml")
    wording = 'a<b & c"</Choice><View/>'
    jsonl(here / "odd.jsonl", [record(str(here / "a.jpg"), category={"id": 212, "path": [wording, "x"]}),
                               record(str(here / "b.jpg"))])  # fmt: skip
    result = cli("export", "odd.jsonl", "--label-studio", "ls", "--root", ".", cwd=here)
    if result.returncode:
        return f"exit {result.returncode}: {short(first_line(result))}", False
    view = ElementTree.parse(here / "ls" / "config.xml").getroot()
    values = {element.get("value") for element in view.iter()}
    nested = [element.tag for element in view.iter() if element.tag == "View"]
    ok = wording in values and nested == ["View"]
    return f"parsed; the wording is one attribute value: {wording in values}; <View> elements: {len(nested)}", ok


def feed_with(path: str, name: str, *extra: str) -> tuple[str, bool]:
    here = world(name)
    jsonl(here / "odd.jsonl", [record(path)])
    (here / "ids.csv").write_text(f"path,id\n{path},SKU-1\n")
    result = cli("export", "odd.jsonl", "--format", "gmc-tsv", "--ids", "ids.csv",
                 "--image-base-url", "https://cdn.example/", "-o", "out.tsv", *extra, cwd=here)  # fmt: skip
    written = (here / "out.tsv").read_text() if (here / "out.tsv").exists() else ""
    leaked = "/home/alice" in written or "../" in written
    ok = result.returncode == 2 and not leaked and not crashed(result)
    return f"exit {result.returncode}, leaked: {leaked}: {short(first_line(result))}", ok


@check("a feed of a photo at `/home/alice/shop/a.jpg`", "exit 2, no local path published")
def feed_absolute() -> tuple[str, bool]:
    return feed_with("/home/alice/shop/a.jpg", "feed-absolute")


@check("a feed of a photo at `../private/a.jpg` (with `--root .`)", "exit 2, no `../` published")
def feed_dotdot() -> tuple[str, bool]:
    return feed_with("../private/a.jpg", "feed-dotdot", "--root", ".")


# -- silently accepted -----------------------------------------------------------------------------------------


@check("`export --csv a.csv -o b.csv`", "exit 2, neither written")
def csv_and_o() -> tuple[str, bool]:
    here = world("csv-and-o")
    result = cli("export", "run.jsonl", "--csv", "a.csv", "-o", "b.csv", cwd=here)
    written = [n for n in ("a.csv", "b.csv") if (here / n).exists()]
    return (
        f"exit {result.returncode}, written {written}: {short(first_line(result))}",
        result.returncode == 2 and not written,
    )


@check("`export --format gmc-tsv --image-base-url http://…`", "exit 2 (https only without --allow-http)")
def http_base() -> tuple[str, bool]:
    here = world("http-base")
    (here / "ids.csv").write_text("path,id\na.jpg,A\nb.jpg,B\n")
    result = cli("export", "run.jsonl", "--format", "gmc-tsv", "--ids", "ids.csv",
                 "--image-base-url", "http://cdn.example/", "-o", "out.tsv", cwd=here)  # fmt: skip
    ok = result.returncode == 2 and not (here / "out.tsv").exists()
    return f"exit {result.returncode}: {short(first_line(result))}", ok


@check("`export --ids` whose rows match no record", "not exit 0; the unmatched paths named")
def ids_unmatched() -> tuple[str, bool]:
    here = world("ids-unmatched")
    (here / "ids.csv").write_text("path,id\nzzz.jpg,Z\nyyy.jpg,Y\n")
    result = cli("export", "run.jsonl", "--format", "gmc-tsv", "--ids", "ids.csv",
                 "--image-base-url", "https://cdn.example/", "-o", "out.tsv", cwd=here)  # fmt: skip
    ok = result.returncode != 0 and "zzz.jpg" in text(result) and not crashed(result)
    return f"exit {result.returncode}: {short(first_line(result))}", ok


@check("`import-review` of a task with `data.path: null`", "no gold entry with a null path; said so")
def review_null_path() -> tuple[str, bool]:
    here = world("review-null")
    review = json.loads((here / "review.json").read_text())
    review[0]["data"]["path"] = None
    (here / "review.json").write_text(json.dumps(review))
    result = cli("import-review", "review.json", "-o", "gold.out.jsonl", cwd=here)
    entries = (
        [json.loads(line) for line in (here / "gold.out.jsonl").read_bytes().splitlines()]
        if result.returncode == 0
        else []
    )
    nulls = sum(1 for e in entries if not isinstance(e.get("path"), str) or not e["path"])
    ok = result.returncode == 0 and nulls == 0 and "without data.path" in text(result)
    return f"exit {result.returncode}, {len(entries)} entries, {nulls} without a path", ok


@check(
    "`lint-copy --lang en` of `the best` split by U+200B, U+00AD, U+2060, U+034F, U+FE00, or full-width `ｂｅｓｔ`",
    "all flagged (exit 1)",
)
def compliance_evasion() -> tuple[str, bool]:
    texts = [f"The b{c}est tee" for c in ("\u200b", "\u00ad", "\u2060", "\u034f", "\ufe00")]
    texts.append("The \uff42\uff45\uff53\uff54 tee")
    result = cli("lint-copy", "--lang", "en", *texts, cwd=WORK)
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    flagged = [bool(a.get("flags")) for a in answers]
    return f"exit {result.returncode}, flagged {flagged}", result.returncode == 1 and flagged == [True] * len(texts)


@check("a product whose photos are all unreadable, run twice", "the second run labels nothing again")
def unreadable_product() -> tuple[str, bool]:
    here = folder("unreadable-product")
    shirt = here / "shop" / "shirt"
    shirt.mkdir(parents=True)
    (shirt / "front.jpg").write_bytes(b"not a photo at all")
    (shirt / "back.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    args = ("batch", "shop", "--group-by", "folder", "-o", "out.jsonl", *model_args(), *QUICK)
    first, again = cli(*args, cwd=here), cli(*args, cwd=here)
    lines = (here / "out.jsonl").read_bytes().splitlines()
    status = json.loads(lines[0])["status"] if lines else None
    ok = len(lines) == 1 and "already done" in text(again) and not crashed(again)
    return f"exit {first.returncode}/{again.returncode}, {len(lines)} record ({status}) after two runs", ok


@check("`eval` of 10 photos, all wrong", "a category interval wider than 0.0–0.0%")
def all_wrong_interval() -> tuple[str, bool]:
    here = folder("all-wrong")
    names = [f"p{i}.jpg" for i in range(10)]
    jsonl(here / "run.jsonl", [record(n) for n in names])
    jsonl(here / "gold.jsonl", [{"path": n, "label": {"category": {"id": 212}}} for n in names])
    result = cli("eval", "run.jsonl", "--gold", "gold.jsonl", "--json", cwd=here)
    exact = json.loads(result.stdout)["category"]["exact"] if result.returncode == 0 else {}
    low, high = (exact.get("ci95") or [None, None])[:2]
    ok = exact.get("hits") == 0 and isinstance(high, float) and high > 0.25
    return f"exit {result.returncode}, 0/10 interval {low}–{high}", ok


@check("`compare` of two 10,000-record runs with gold (exact McNemar, intervals)", "exit 0 in under 60 s (was minutes)")
def compare_10k() -> tuple[str, bool]:
    here = folder("compare-10k")
    names = [f"p{i:05d}.jpg" for i in range(10_000)]
    shirts = {"id": 212, "path": [*CLOTHING, "Shirts & Tops"], "raw": ["Apparel & Accessories", "tee"], "match": 0.9}
    jsonl(here / "a.jsonl", [record(n, **({"category": shirts} if i % 2 else {})) for i, n in enumerate(names)])
    jsonl(here / "b.jsonl", [record(n, **({"category": shirts} if i % 3 else {})) for i, n in enumerate(names)])
    jsonl(here / "gold.jsonl", [{"path": n, "label": {"category": {"id": 212}}} for n in names])
    started = time.monotonic()
    result = cli("compare", "a.jsonl", "b.jsonl", "--gold", "gold.jsonl", "--json", cwd=here, timeout=600)
    seconds = time.monotonic() - started
    return f"exit {result.returncode} in {seconds:.1f} s", result.returncode == 0 and seconds < 60


def default_sigint() -> None:
    """A shell starts background jobs with SIGINT ignored, and qvl-label keeps a parent's "ignore": undo that,
    as a terminal's Ctrl-C reaches a foreground command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@check("Ctrl-C 0.1, 0.3 and 1 s after `qvl-label taxonomy map` starts (reading stdin)", "one line, exit 130")
def early_ctrl_c() -> tuple[str, bool]:
    observed, ok = [], True
    for delay in (0.1, 0.3, 1.0):
        process = subprocess.Popen(
            command("taxonomy", "map"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env(), preexec_fn=default_sigint,
        )  # fmt: skip
        time.sleep(delay)  # the hostile user's finger: a fixed delay is the point of this check
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        lines = [line for line in stderr.decode().splitlines() if line.strip()]
        observed.append(f"{delay} s: exit {process.returncode}, {len(lines)} line(s)")
        ok = ok and process.returncode == 130 and len(lines) <= 1 and b"Traceback" not in stderr
    return "; ".join(observed), ok


# -- the server, over real HTTP on loopback ---------------------------------------------------------------------


class Server:
    """`qvl-label serve` with no API key on a free loopback port, --allow-dir, --audit-log and small caps."""

    MAX_CONNECTIONS = 12
    PER_CLIENT = 6

    def __init__(self) -> None:
        self.here = folder("serve")
        allowed = self.here / "allowed"
        allowed.mkdir()
        shutil.copy(PRODUCTS / "ms04-red_main.jpg", allowed / "photo.jpg")
        (allowed / "loop-a.jpg").symlink_to(allowed / "loop-b.jpg")
        (allowed / "loop-b.jpg").symlink_to(allowed / "loop-a.jpg")
        self.audit = self.here / "audit.jsonl"
        args = command("serve", "--port", "0", "--allow-dir", str(allowed), "--audit-log", str(self.audit),
                       "--max-body-mb", "2", "--max-images", "4", "--max-connections", str(self.MAX_CONNECTIONS),
                       "--max-connections-per-client", str(self.PER_CLIENT), "--header-timeout", "2",
                       "--lang", "en", "--image-max-tokens", "64", "--max-tokens", "64", "--max-chat-tokens", "32",
                       "--no-cache", *model_args())  # fmt: skip
        self.process = subprocess.Popen(args, cwd=self.here, stderr=subprocess.PIPE, text=True, env=env())
        assert self.process.stderr is not None
        deadline = time.monotonic() + 240
        self.port = 0
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if found := re.search(r"serving on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(found.group(1))
                break
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"serve exited {self.process.returncode}")
        if not self.port:
            raise RuntimeError("serve did not start in 240 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def connect(self, source: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=(source, 0))

    def audited(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_bytes().splitlines() if line.strip()]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


SERVER: Server | None = None


@contextmanager
def server() -> Iterator[Server]:
    global SERVER
    if SERVER is None:
        SERVER = Server()
    yield SERVER


def closed_by_server(sock: socket.socket, seconds: float) -> bytes | None:
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def httpx_module() -> Any:
    import httpx

    return httpx


@check("no-key server: `Host: evil.example` (DNS rebinding)", "403")
def host_check() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        evil = httpx.get(live.url("/v1/models"), headers={"Host": "evil.example"}, timeout=30).status_code
        own = httpx.get(live.url("/v1/models"), timeout=30).status_code
    return f"evil host {evil}, own host {own}", evil == 403 and own == 200


@check("no-key server: cross-site form post (`Origin: http://evil.example`)", "403, nothing labelled")
def origin_check() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        files = [("image", ("a.jpg", (PRODUCTS / "ms04-red_main.jpg").read_bytes(), "image/jpeg"))]
        evil = httpx.post(live.url("/v1/label"), files=files, headers={"Origin": "http://evil.example"}, timeout=60)
        labelled = [e for e in live.audited() if e.get("request_id") == evil.headers.get("x-request-id")]
    cors = "access-control-allow-origin" in evil.headers
    return (
        f"{evil.status_code}, CORS header: {cors}, audited as {[e['status'] for e in labelled]}",
        evil.status_code == 403 and not cors,
    )


@check("a product request with two photos both named `same.jpg`", "both photos in the record")
def same_name_photos() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        files = [("image", ("same.jpg", (VIEWS / "mh01-gray_back.jpg").read_bytes())),
                 ("image", ("same.jpg", (VIEWS / "mh01-gray_main.jpg").read_bytes()))]  # fmt: skip
        response = httpx.post(live.url("/v1/label"), files=files, data={"product": "P1"}, timeout=120)
    if response.status_code != 200:
        return f"{response.status_code}: {short(response.text)}", False
    images = response.json()["records"][0].get("images", [])
    hashes = {i.get("sha256") for i in images}
    return f"200, images {[i['path'] for i in images]}, {len(hashes)} distinct photos", len(hashes) == 2


@check("a symlink loop under `--allow-dir` named in `paths`", "200 with an `unreadable` record (not 500)")
def symlink_loop() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        response = httpx.post(live.url("/v1/label"), json={"paths": ["loop-a.jpg"]}, timeout=120)
    status = response.json()["records"][0]["status"] if response.status_code == 200 else None
    return f"{response.status_code}, record status {status}", response.status_code == 200 and status == "unreadable"


@check("50 multipart `path` fields in a 2 KB request (`--max-images 4`)", "413 before any file is read")
def many_paths() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        started = time.monotonic()
        response = httpx.post(live.url("/v1/label"), data={"path": ["photo.jpg"] * 50},
                              files=[("image", ("x.jpg", b"x"))], timeout=60)  # fmt: skip
        seconds = time.monotonic() - started
    return f"{response.status_code} in {seconds:.2f} s", response.status_code == 413


@check("`temperature: true` in /v1/chat/completions", "400")
def temperature_true() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        image = "data:image/jpeg;base64," + base64.b64encode((PRODUCTS / "ms04-red_main.jpg").read_bytes()).decode()
        content = [{"type": "text", "text": "Colour?"}, {"type": "image_url", "image_url": {"url": image}}]
        body = {"messages": [{"role": "user", "content": content}], "temperature": True, "max_tokens": 4}
        response = httpx.post(live.url("/v1/chat/completions"), json=body, timeout=120)
    ok = response.status_code == 400 and "temperature" in response.text
    return f"{response.status_code}: {short(response.text, 80)}", ok


@check(
    "10 idle connections from one client (`--max-connections-per-client 6`), then another client",
    "the extra ones 429, the other client served",
)
def idle_connections() -> tuple[str, bool]:
    httpx = httpx_module()
    with server() as live:
        idle = [live.connect("127.0.0.1") for _ in range(live.PER_CLIENT + 4)]
        try:
            refused = [closed_by_server(s, 5.0) for s in idle[live.PER_CLIENT :]]
            other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30)
            with other:
                served = other.get(live.url("/health")).status_code
        finally:
            for sock in idle:
                sock.close()
    too_many = sum(1 for r in refused if r is not None and r.startswith(b"HTTP/1.1 429"))
    ok = too_many == len(refused) and served == 200
    return f"{too_many} of {len(refused)} extra got 429; other client {served}", ok


@check("the audit log records 413 and 503 refusals", "entries with status 413 and 503")
def audit_refusals() -> tuple[str, bool]:
    with server() as live:
        with live.connect("127.0.0.1") as sock:  # a body declared over --max-body-mb
            sock.sendall(b"POST /v1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 99999999\r\n\r\n")  # fmt: skip
            big = (closed_by_server(sock, 10.0) or b"")[:12]
        held = [live.connect(f"127.0.0.{3 + i % 5}") for i in range(live.MAX_CONNECTIONS + 3)]
        try:
            replies = [closed_by_server(s, 3.0) for s in held[live.MAX_CONNECTIONS :]]
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.5)  # the log line is written as the refusal is sent; give the server its turn
        statuses = sorted({e.get("status") for e in live.audited()})
    unavailable = sum(1 for r in replies if r and r.startswith(b"HTTP/1.1 503"))
    ok = big.startswith(b"HTTP/1.1 413") and 413 in statuses and 503 in statuses and unavailable > 0
    return f"replies {big.decode(errors='replace')!r}, {unavailable}×503; audited statuses {statuses}", ok


# -- the table -------------------------------------------------------------------------------------------------


def run_all(selected: str | None) -> list[Row]:
    rows: list[Row] = []
    try:
        for example, expected, function in CHECKS:
            if selected and selected not in example:
                continue
            started = time.monotonic()
            try:
                observed, ok = function()
            except Exception as exc:  # a check that cannot run is a failed check, shown as such
                observed, ok = f"the check failed: {type(exc).__name__}: {short(str(exc), 90)}", False
            rows.append((example, expected, f"{short(observed, 160)} ({time.monotonic() - started:.0f} s)", ok))
            print(f"{'ok  ' if ok else 'FAIL'} {example}: {observed}", file=sys.stderr, flush=True)
    finally:
        if SERVER is not None:
            SERVER.stop()
    return rows


def table(rows: list[Row], seconds: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node()}: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    machine += f", Python {platform.python_version()}"
    held = sum(1 for row in rows if row[3])
    lines = [
        f"Run {when} on {machine}; {held} of {len(rows)} held; {seconds:.0f} s in all.",
        "",
        "| example | expected | observed | ok |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {e} | {x} | {o} | {'yes' if ok else '**no**'} |" for e, x, o, ok in rows]
    return "\n".join(lines) + "\n"


SECTION = "## Adversarial pass"


def write_docs(page: Path, body: str) -> None:
    intro = (
        f"{SECTION}\n\nA fresh pass over issue #24's examples, each tried the way a hostile user would: the real\n"
        "command line (`python -m qvl_label ...`) in a temporary folder with the generated tiny model, or real\n"
        "HTTP against `qvl-label serve` (no API key) on a loopback port. Written by\n"
        "`python scripts/adversarial_pass.py --docs docs/reference/reliability.md` (the table below is its output).\n"
        "The model-verification row calls the ledger from four processes, since the command line verifies only\n"
        "downloaded presets; a `500` cannot be provoked from outside, so the audit row covers 413 and 503 (the\n"
        "500 is `test_413_and_500_are_one_json_shape_and_audited`).\n\n"
    )
    current = page.read_text(encoding="utf-8")
    start = current.find(SECTION)
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + intro + body
    else:
        following = current.find("\n## ", start + len(SECTION))
        rest = current[following + 1 :] if following != -1 else ""
        updated = current[:start] + intro + body + ("\n" + rest if rest else "")
    page.write_text(updated, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, help="also write the table into this page's 'Adversarial pass' section")
    parser.add_argument("--only", help="run only the checks whose example contains this text")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()
    started = time.monotonic()
    try:
        rows = run_all(options.only)
    finally:
        if not options.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    body = table(rows, time.monotonic() - started)
    print(body, end="")
    if options.docs:
        write_docs(options.docs, body)
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
