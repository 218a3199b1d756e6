"""Files that fight back: two runs on one output, racing verifications, outputs that are inputs, links, caches or
strangers' files, line separators inside fields, an early Ctrl-C (docs/reference/reliability.md)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label import tinymodel
from qvl_label.cli import app
from qvl_label.engine.models import PinnedFile, VerificationLedger
from qvl_label.errors import OutputError, UsageError
from qvl_label.evaluation.feed_gold import read_rows
from qvl_label.evaluation.gold import load_gold
from qvl_label.labeling.config import load_config
from qvl_label.labeling.taxonomy import parse_taxonomy
from qvl_label.pipeline.batch import is_product_done, scan_existing
from qvl_label.pipeline.products import Product, read_groups
from qvl_label.serve.audit import AuditLog
from qvl_label.store.outputs import inspect_output

from .conftest import CATALOGUE, FIXTURES, PRODUCTS

runner = CliRunner()
OK_ARGS = ["--lang", "en", "--image-max-tokens", "64", "--max-tokens", "12000"]
CLOTHING = ["Apparel & Accessories", "Clothing"]
SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def _model_args(model: tinymodel.GeneratedModel) -> list[str]:
    return ["--model", str(model.model), "--mmproj", str(model.mmproj)]


def _env() -> dict[str, str]:
    """Subprocesses import qvl_label from this checkout, as the test process does."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def _wait_for_line(process: subprocess.Popen[str], wanted: str, limit_s: float = 60.0) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if wanted in line:
            return
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no {wanted!r} from the helper process")


def _photos(tmp_path: Path, count: int, distinct: int = 10) -> Path:
    """`count` photos, copies of `distinct` different ones (a copy reuses its original's label: fast runs)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = (sorted(PRODUCTS.iterdir()) + sorted(CATALOGUE.iterdir()))[:distinct]
    for i in range(count):
        source = sources[i % len(sources)]
        shutil.copy(source, folder / f"{i:02d}{source.suffix}")
    return folder


# -- one output, one run at a time -----------------------------------------------------------------------------

HOLD_LOCK = """
import sys
from pathlib import Path
from qvl_label.store.safe_files import OutputLock
stream = open(sys.argv[1], "ab")
OutputLock(stream, Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize(
    "extra", [[], ["--shard", "2/4"], ["--force"], ["--group-by", "folder"], ["--ray"]], ids=lambda a: " ".join(a)
)
def test_batch_on_an_output_another_process_writes_exits_2_naming_the_holder(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, extra: list[str]
) -> None:
    if extra == ["--ray"]:
        pytest.importorskip("ray")
    photos = _photos(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"path": "earlier.jpg", "status": "ok"}\n')
    before = out.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _wait_for_line(holder, "held")
        result = runner.invoke(app, ["batch", str(photos), "-o", str(out), *_model_args(tiny_model), *extra])
    finally:
        holder.communicate("")
    assert result.exit_code == 2, result.output
    assert f"pid {holder.pid} on " in result.output and " since " in result.output
    assert "Traceback" not in result.output
    assert out.read_bytes() == before


def test_two_batch_processes_on_one_output_write_each_photo_once(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    photos = _photos(tmp_path, 15, distinct=1)
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "qvl_label", "batch", str(photos), "-o", str(out), "-q"]
    command += [*_model_args(tiny_model), *OK_ARGS]
    logs = [tmp_path / f"run-{i}.log" for i in range(2)]
    runs = []
    for log in logs:
        with log.open("w") as stderr:
            runs.append(subprocess.Popen(command, stderr=stderr, env=_env()))
    outcomes = [(run.wait(timeout=900), log.read_text()) for run, log in zip(runs, logs, strict=True)]
    for code, stderr in outcomes:
        assert code in (0, 1, 2), stderr
        assert "Traceback" not in stderr
    refused = [stderr for code, stderr in outcomes if code == 2]
    assert all("is being written by another run (pid " in stderr for stderr in refused)
    paths = [orjson.loads(line)["path"] for line in out.read_bytes().splitlines()]
    assert len(paths) == 15 and len(set(paths)) == 15, sorted(paths)


def test_a_refused_run_waits_for_the_holders_note_written_just_after_its_lock(tmp_path: Path) -> None:
    """The race the two-process test met in CI: refused between the holder's lock and its note."""
    from qvl_label.store.safe_files import _holder

    note = tmp_path / "out.jsonl.lock"
    threading.Timer(0.2, note.write_bytes, [b'{"pid": 42, "host": "h", "since": "2026-12-03T22:00:00"}\n']).start()
    assert _holder(note) == "pid 42 on h since 2026-12-03T22:00:00"
    assert _holder(tmp_path / "never.lock", patience_s=0.1) == "a process that has not said who it is yet"


# -- the verification ledger -----------------------------------------------------------------------------------


def _verify_one(ledger_path: str, model_path: str, rounds: int) -> None:
    pinned = PinnedFile(file=Path(model_path).name, size=1, sha256="0" * 64)
    for _ in range(rounds):
        VerificationLedger(Path(ledger_path)).record(Path(model_path), pinned)


@pytest.mark.parametrize("processes", [2, 4, 8])
def test_concurrent_verifications_keep_every_entry(tmp_path: Path, processes: int) -> None:
    ledger = tmp_path / "state" / "verified.json"
    models = []
    for i in range(processes):
        models.append(tmp_path / f"model-{i}.gguf")
        models[-1].write_bytes(b"x")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_verify_one, args=(str(ledger), str(m), 20)) for m in models]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * processes
    entries = json.loads(ledger.read_text())
    assert set(entries) == {str(m.resolve()) for m in models}
    assert not [p for p in ledger.parent.iterdir() if p.name.endswith(".tmp")]


# -- the cache is never an output ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["same", "wal", "shm", "journal", "symlink", "hardlink", "dotted"])
def test_batch_output_that_is_the_cache_or_its_companions_is_refused(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, name: str
) -> None:
    photos = _photos(tmp_path, 2)
    cache = tmp_path / "labels.sqlite"
    runner.invoke(app, ["batch", str(photos), "-o", str(tmp_path / "first.jsonl"), "--cache", str(cache),
                        *_model_args(tiny_model), *OK_ARGS])  # fmt: skip
    assert cache.exists()
    before = cache.read_bytes()
    output = {
        "same": cache, "wal": Path(f"{cache}-wal"), "shm": Path(f"{cache}-shm"), "journal": Path(f"{cache}-journal"),
        "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl",
        "dotted": tmp_path / "sub" / ".." / "labels.sqlite",
    }[name]  # fmt: skip
    (tmp_path / "sub").mkdir()
    if name == "symlink":
        output.symlink_to(cache)
    elif name == "hardlink":
        os.link(cache, output)
    result = runner.invoke(app, ["batch", str(photos), "-o", str(output), "--cache", str(cache),
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert cache.read_bytes() == before
    assert not Path(f"{cache}-wal").exists() or name != "wal"


# -- only the tool's own output is repaired ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b'{"path": "a.jpg", "sta', b'{"path":', b'{"path": "x"}', b'{"path": "a.jpg", "status": "ok"} trailing'],
)
def test_a_foreign_one_line_file_is_never_cut(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "notes.jsonl"
    out.write_bytes(content)
    with pytest.raises(UsageError, match="does not hold qvl-label records"):
        inspect_output(out)
    assert out.read_bytes() == content


def test_a_torn_tail_after_our_records_is_still_cut(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"path": "a.jpg", "status": "ok"}\n{"path": "b.jpg", "sta')
    assert inspect_output(out).cut_bytes == len(b'{"path": "b.jpg", "sta')


def test_batch_leaves_a_foreign_one_line_file_whole(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"path": "someone else\'s note')
    result = runner.invoke(app, ["batch", str(_photos(tmp_path, 1)), "-o", str(out), *_model_args(tiny_model)])
    assert result.exit_code == 2, result.output
    assert out.read_bytes() == b'{"path": "someone else\'s note'


# -- every writer: not an input, not a link, not a stranger's file, atomic ------------------------------------------


def _record(path: str) -> dict[str, object]:
    return {
        "path": path, "status": "ok", "run": "r1", "sha256": "ab" * 32, "languages": ["en"],
        "label": {"category": {"id": 1604, "path": CLOTHING, "raw": ["Apparel & Accessories", "tee"], "match": 0.3},
                  "attributes": {"colors": [{"raw": "red", "value": "red"}]},
                  "copy": {"en": {"title": "Red tee", "description": "A red tee."}}},
    }  # fmt: skip


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Inputs for every writing command, in the current folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(PRODUCTS / "ms04-red_main.jpg", tmp_path / "a.jpg")
    shutil.copy(PRODUCTS / "wj04-white_main.jpg", tmp_path / "b.jpg")
    run = b"".join(orjson.dumps(_record(p)) + b"\n" for p in ("a.jpg", "b.jpg"))
    (tmp_path / "run.jsonl").write_bytes(run)
    (tmp_path / "run2.jsonl").write_bytes(run)
    gold = [
        {"path": p, "label": {"category": {"id": 212}, "attributes": {"colors": ["red"]}}} for p in ("a.jpg", "b.jpg")
    ]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold))
    (tmp_path / "feed.tsv").write_text("id\ttitle\tgoogle_product_category\timage_link\nt1\tRed tee\t212\ta.jpg\n")
    shutil.copy(FIXTURES / "labelstudio" / "export.json", tmp_path / "review.json")
    (tmp_path / "shop.toml").write_text("# a template\n")
    (tmp_path / "ids.csv").write_text("path,id\na.jpg,SKU-A\nb.jpg,SKU-B\n")  # the shop's ids, for supplemental feeds
    return tmp_path


# name -> (argv with {out} for the output, the command's inputs that an output must never be)
WRITERS: dict[str, tuple[list[str], list[str]]] = {
    "merge": (["merge", "run.jsonl", "run2.jsonl", "-o", "{out}"], ["run.jsonl", "run2.jsonl"]),
    "export-csv": (["export", "run.jsonl", "-o", "{out}"], ["run.jsonl"]),
    "export---csv": (["export", "run.jsonl", "--csv", "{out}"], ["run.jsonl"]),
    "export-gmc-tsv": (
        [
            "export",
            "run.jsonl",
            "--format",
            "gmc-tsv",
            "--ids",
            "ids.csv",
            "--image-base-url",
            "https://x.example/",
            "-o",
            "{out}",
        ],
        ["run.jsonl"],
    ),
    "export-shopify": (
        ["export", "run.jsonl", "--format", "shopify-csv", "--image-base-url", "https://x.example/", "-o", "{out}"],
        ["run.jsonl"],
    ),
    "export-gmc-xml": (
        [
            "export",
            "run.jsonl",
            "--format",
            "gmc-xml",
            "--ids",
            "ids.csv",
            "--shop-url",
            "https://x.example/",
            "--image-base-url",
            "https://x.example/",
            "-o",
            "{out}",
        ],
        ["run.jsonl"],
    ),
    "import-review": (["import-review", "review.json", "-o", "{out}"], ["review.json"]),
    "gold-from-feed": (
        ["gold", "from-feed", "feed.tsv", "-o", "{out}", "--template", "shop.toml"],
        ["feed.tsv", "shop.toml"],
    ),
    "learn": (
        ["learn", "gold.jsonl", "--run", "run.jsonl", "-o", "{out}", "--template", "shop.toml"],
        ["gold.jsonl", "run.jsonl", "shop.toml"],
    ),
    "eval-html": (["eval", "run.jsonl", "--gold", "gold.jsonl", "--html", "{out}"], ["run.jsonl", "gold.jsonl"]),
    "compare-html": (
        ["compare", "run.jsonl", "run2.jsonl", "--gold", "gold.jsonl", "--html", "{out}"],
        ["run.jsonl", "run2.jsonl", "gold.jsonl"],
    ),
}


def _invoke(name: str, out: Path | str, *extra: str) -> tuple[int, str]:
    argv = [str(out) if a == "{out}" else a for a in WRITERS[name][0]]
    result = runner.invoke(app, [*argv, *extra])
    return result.exit_code, result.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writers_write_and_rewrite_their_own_output_atomically(world: Path, name: str) -> None:
    code, output = _invoke(name, "result.out")
    assert code == 0, output
    first = (world / "result.out").read_bytes()
    assert first
    code, output = _invoke(name, "result.out")  # its own file: replaced without --force
    assert code == 0, output
    assert not [p.name for p in world.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writers_refuse_an_output_that_is_one_of_their_inputs(world: Path, name: str, how: str) -> None:
    (world / "sub").mkdir()
    for item in WRITERS[name][1]:
        before = _snapshot(world)
        target = {"same": item, "symlink": f"link-{item}", "hardlink": f"hard-{item}", "dotted": f"sub/../{item}"}[how]
        if how == "symlink":
            (world / target).symlink_to(world / item)
        elif how == "hardlink":
            os.link(world / item, world / target)
        before = _snapshot(world)
        for extra in ([], ["--force"]):
            code, output = _invoke(name, target, *extra)
            assert code == 2, (item, extra, output)
            assert "Traceback" not in output
            assert _snapshot(world) == before, (item, extra)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writers_never_follow_a_symlink_out(world: Path, name: str) -> None:
    victim = world / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious\n")
    (world / "out.link").symlink_to(victim)
    dangling = world / "dangling.link"
    dangling.symlink_to(world / "elsewhere" / "new.txt")
    for target, extra in (("out.link", []), ("out.link", ["--force"]), ("dangling.link", [])):
        code, output = _invoke(name, target, *extra)
        assert code == 2 and "symbolic link" in output, output
    assert victim.read_bytes() == b"precious\n"
    assert not (world / "elsewhere" / "new.txt").exists()


@pytest.mark.parametrize("foreign", [b"precious\n", b'{"not": "ours"}\n', b"id,title\n1,x\n", b"\x00\xff binary"])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writers_replace_a_strangers_file_only_with_force(world: Path, name: str, foreign: bytes) -> None:
    (world / "theirs.txt").write_bytes(foreign)
    code, output = _invoke(name, "theirs.txt")
    assert code == 2 and "was not written by qvl-label" in output and "--force" in output, output
    assert (world / "theirs.txt").read_bytes() == foreign
    code, output = _invoke(name, "theirs.txt", "--force")
    assert code == 0, output
    assert (world / "theirs.txt").read_bytes() != foreign


@pytest.mark.parametrize("name", ["export-csv", "merge", "eval-html", "learn"])
def test_writers_never_replace_a_photo_their_records_name_even_with_force(world: Path, name: str) -> None:
    before = (world / "a.jpg").read_bytes()
    code, output = _invoke(name, "a.jpg", "--force")
    assert code == 2 and "a photo this command's records name" in output, output
    assert (world / "a.jpg").read_bytes() == before


@pytest.mark.parametrize("name", ["learn", "gold-from-feed"])
def test_writers_refuse_the_template_in_use(world: Path, name: str) -> None:
    code, output = _invoke(name, "shop.toml", "--force")
    assert code == 2 and "an input of this command" in output, output
    assert (world / "shop.toml").read_text() == "# a template\n"


def test_label_studio_folder_follows_the_same_rule(world: Path) -> None:
    folder = world / "ls"
    folder.mkdir()
    (folder / "tasks.json").write_text("my notes")
    args = ["export", "run.jsonl", "--label-studio", str(folder)]
    assert runner.invoke(app, args).exit_code == 2
    assert (folder / "tasks.json").read_text() == "my notes"
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # now its own
    (world / "ls-link").symlink_to(folder)
    assert runner.invoke(app, ["export", "run.jsonl", "--label-studio", "ls-link"]).exit_code == 2


@pytest.mark.parametrize("name", ["merge", "import-review", "gold-from-feed"])
def test_writers_refuse_an_output_a_batch_run_is_writing(world: Path, name: str) -> None:
    out = world / "busy.jsonl"
    out.write_bytes(b'{"path": "earlier.jpg", "status": "ok"}\n')
    command = [sys.executable, "-c", HOLD_LOCK, str(out)]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for_line(holder, "held")
        code, output = _invoke(name, out, "--force")
    finally:
        holder.communicate("")
    assert code == 2 and f"being written by another run (pid {holder.pid} on " in output, output
    assert out.read_bytes() == b'{"path": "earlier.jpg", "status": "ok"}\n'


def test_export_refuses_both_o_and_csv_instead_of_ignoring_one(world: Path) -> None:
    result = runner.invoke(app, ["export", "run.jsonl", "-o", "a.csv", "--csv", "b.csv"])
    assert result.exit_code == 2 and "not both" in result.output
    assert not (world / "a.csv").exists() and not (world / "b.csv").exists()


def test_a_failed_write_leaves_the_old_output_whole(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _invoke("merge", "merged.jsonl")[0] == 0
    before = (world / "merged.jsonl").read_bytes()

    def half_then_full_disk(files: list[Path], stream: IO[bytes]) -> None:
        stream.write(b'{"path": "half')
        raise OutputError("cannot write the merged output: No space left on device")

    monkeypatch.setattr("qvl_label.cli.outputs.merge", half_then_full_disk)
    code, output = _invoke("merge", "merged.jsonl")
    assert code == 5 and "No space left" in output, output
    assert (world / "merged.jsonl").read_bytes() == before
    assert not [p.name for p in world.iterdir() if p.name.endswith(".tmp")]


# -- the audit log ---------------------------------------------------------------------------------------------


def test_audit_log_is_never_an_input_a_link_or_a_strangers_file(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF....")
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"SQLite format 3\x00")
    inputs = [model, cache, Path(f"{cache}-wal")]
    for target in (model, cache, Path(f"{cache}-wal")):
        with pytest.raises(UsageError, match="an input of this command"):
            AuditLog(target, inputs)
    (tmp_path / "link.log").symlink_to(model)
    with pytest.raises(UsageError, match="symbolic link"):
        AuditLog(tmp_path / "link.log", inputs)
    foreign = tmp_path / "notes.log"
    foreign.write_text("mine\n")
    with pytest.raises(UsageError, match="not written by qvl-label"):
        AuditLog(foreign, inputs)
    assert model.read_bytes() == b"GGUF...." and foreign.read_text() == "mine\n"
    log = AuditLog(tmp_path / "audit.log", inputs)
    log.write({"time": "t", "request_id": "r", "endpoint": "/v1/label", "status": 200})
    log.close()
    AuditLog(tmp_path / "audit.log", inputs).close()  # its own log: appended to again


# -- line separators are text, not line ends --------------------------------------------------------------------


@pytest.mark.parametrize("separator", SEPARATORS, ids=[hex(ord(s)) for s in SEPARATORS])
def test_groups_and_gold_keep_fields_with_unicode_line_separators(tmp_path: Path, separator: str) -> None:
    groups = tmp_path / "groups.csv"
    key = f"shirt{separator}blue"
    groups.write_text(f"product,path\n{key},a.jpg\n{key},b.jpg\nother,c.jpg\n", encoding="utf-8", newline="")
    products = read_groups(groups)
    assert [p.key for p in products] == [key, "other"]
    assert [Path(p).name for p in products[0].paths] == ["a.jpg", "b.jpg"]

    gold = tmp_path / "gold.csv"
    gold.write_text(f"path,category,brand\na.jpg,212,Acme{separator}Co\nb.jpg,212,\n", encoding="utf-8", newline="")
    labels = load_gold(gold, load_config(None))
    assert len(labels) == 2

    _, rows = read_rows(f"id\ttitle\timage_link\nt1\tRed{separator}tee\ta.jpg\nt2\tMilk\tb.jpg\n")
    assert [row["id"] for row in rows] == ["t1", "t2"]


def test_taxonomy_names_with_line_separators_stay_whole() -> None:
    taxonomy = parse_taxonomy("1 - Apparel\n2 - Apparel > Odd\u2028Name\r\n3 - Apparel > Odd\x85Other\n")
    assert len(taxonomy.nodes) == 3


def test_a_feed_exported_with_separators_in_titles_reads_back_every_product(world: Path) -> None:
    records = [_record(p) for p in ("a.jpg", "b.jpg")]
    for record, separator in zip(records, ["\u2028", "\x85"], strict=True):
        record["label"]["copy"]["en"]["title"] = f"Red{separator}tee"  # type: ignore[index]
    (world / "odd.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    args = ["export", "odd.jsonl", "--format", "shopify-csv", "--image-base-url", "https://x.example/", "-o", "f.csv"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["gold", "from-feed", "f.csv", "--map", "https://x.example/=.", "-o", "g.jsonl"])
    assert result.exit_code == 0, result.output
    gold = [orjson.loads(line) for line in (world / "g.jsonl").read_bytes().split(b"\n") if line]
    assert [g["label"]["copy"]["en"]["title"] for g in gold] == ["Red\u2028tee", "Red\x85tee"], result.output
    assert "from 2 rows" in result.output


# -- resume ----------------------------------------------------------------------------------------------------


def _product_record(statuses: list[str]) -> dict[str, object]:
    return {
        "path": "shirt", "product": "shirt", "status": "no_readable_photo", "run": "fp",
        "images": [{"path": f"p{i}.jpg", "status": s, "file": None} for i, s in enumerate(statuses)],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("statuses", "done"),
    [(["corrupt"], True), (["corrupt", "not_an_image", "empty_file"], True), (["corrupt", "unreadable"], False),
     (["unreadable"], False)],
)  # fmt: skip
def test_a_product_none_of_whose_photos_can_ever_load_is_done(tmp_path: Path, statuses: list[str], done: bool) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(orjson.dumps(_product_record(statuses)) + b"\n")
    resume = scan_existing(out, "fp", force=False)
    product = Product("shirt", tuple(f"p{i}.jpg" for i in range(len(statuses))))
    assert is_product_done(resume, product) is done


def test_batch_resume_does_not_label_an_unreadable_product_again(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "shop" / "shirt"
    folder.mkdir(parents=True)
    (folder / "front.jpg").write_bytes(b"not a photo at all")
    (folder / "back.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    out = tmp_path / "out.jsonl"
    args = ["batch", str(tmp_path / "shop"), "--group-by", "folder", "-o", str(out), *_model_args(tiny_model)]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    again = runner.invoke(app, args)
    assert "1 products already done" in again.output, again.output
    assert len(out.read_bytes().splitlines()) == 1


# -- an early Ctrl-C -------------------------------------------------------------------------------------------


# What pip's console script `qvl-label` runs, with a line that says the interpreter is up. A signal during
# Python's own start-up, before any qvl-label code, is the interpreter's to report (reliability.md).
CONSOLE_SCRIPT = """
import sys
print("started", flush=True)
sys.argv = [sys.argv[0].replace("-c", "qvl-label"), "models", "list"]
from qvl_label.entry import run
sys.exit(run())
"""


def _assert_one_line_or_before_our_code(returncode: int, stderr: bytes) -> None:
    text = stderr.decode()
    if "Traceback" in text:  # only where the signal landed before the first line of qvl-label ran
        assert "qvl_label" not in text and returncode in (1, -signal.SIGINT), text
        return
    assert returncode in (0, 130, -signal.SIGINT), text
    if returncode == 130:
        assert text.strip() == "interrupted", text


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4])
def test_an_early_ctrl_c_is_one_line_and_exit_130(delay: float) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CONSOLE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    time.sleep(delay)  # the delay is what is tested: where the start-up is when the signal lands
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    _assert_one_line_or_before_our_code(process.returncode, stderr)


# The same, deterministically: a sitecustomize raises the signal while a given module of the start-up is
# being imported, under the console script and under `python -m qvl_label`.
INTERRUPT_AT = """
import os, signal, sys
class InterruptAt:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["INTERRUPT_AT"]:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, InterruptAt())
"""
CONSOLE_SCRIPT_QUIET = """
import sys
sys.argv = ["/usr/local/bin/qvl-label", "models", "list"]
from qvl_label.entry import run
sys.exit(run())
"""
START_UP_MODULES = ["qvl_label.entry", "qvl_label.engine", "llama_cpp", "numpy", "qvl_label.cli", "typer", "rich",
                    "qvl_label.engine.models", "huggingface_hub"]  # fmt: skip


@pytest.mark.parametrize(
    ("how", "module"),
    [*(("console-script", m) for m in START_UP_MODULES), *(("python -m", m) for m in START_UP_MODULES),
     ("python -m", "qvl_label.__main__")],  # after the package, before run(): runpy finds the __main__ module
)  # fmt: skip
def test_a_ctrl_c_anywhere_in_the_start_up_is_one_line_and_exit_130(tmp_path: Path, module: str, how: str) -> None:
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_AT)
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env["INTERRUPT_AT"] = module
    command = [sys.executable, "-c", CONSOLE_SCRIPT_QUIET]
    if how == "python -m":
        command = [sys.executable, "-m", "qvl_label", "models", "list"]
    process = subprocess.run(command, capture_output=True, env=env, timeout=120)
    assert process.stderr.decode().strip() == "interrupted", process.stderr.decode()
    assert process.returncode == 130
