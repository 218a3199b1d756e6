"""Hostile and careless input: no command loses a byte of a file it was not asked to write, none shows a traceback."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label import tinymodel
from qvl_label.cli import app

from .conftest import PRODUCTS

runner = CliRunner()
RECORD = {"path": "a.jpg", "status": "ok", "error": None, "languages": ["en"], "label": None, "run": "x"}


def _model_args(model: tinymodel.GeneratedModel) -> list[str]:
    return ["--model", str(model.model), "--mmproj", str(model.mmproj)]


def _jsonl(path: Path, *records: object) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


# -- outputs that are inputs -------------------------------------------------------------


def test_export_refuses_to_write_its_input(tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "a.jsonl", RECORD)
    before = source.read_bytes()
    result = runner.invoke(app, ["export", str(source), "--csv", str(source)])
    assert result.exit_code == 2 and "same file" in result.output
    assert source.read_bytes() == before


def test_merge_refuses_a_hard_link_of_an_input(tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "a.jsonl", RECORD)
    os.link(source, tmp_path / "b.jsonl")
    result = runner.invoke(app, ["merge", str(source), "-o", str(tmp_path / "b.jsonl")])
    assert result.exit_code == 2 and "same file" in result.output
    assert orjson.loads(source.read_bytes()) == RECORD  # not emptied


def test_batch_refuses_its_cache_or_template_as_output(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    cache = tmp_path / "labels.sqlite"
    cache.write_bytes(b"")
    result = runner.invoke(
        app, ["batch", str(PRODUCTS), "-o", str(cache), "--cache", str(cache), *_model_args(tiny_model)]
    )
    assert result.exit_code == 2 and "same file" in result.output and cache.read_bytes() == b""


# -- appending only to our own outputs ------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"x" * 100_000, b"notes without a newline", b"a text file\nwith lines\n", b"\xff\xd8\xff\xe0 jpeg-ish bytes",
     b'{"not": "a record"}\n', b"null\n5\n", orjson.dumps(RECORD) + b"\nforeign last line\n"],
)  # fmt: skip
def test_batch_appends_only_to_its_own_records(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, content: bytes
) -> None:
    target = tmp_path / "notes.txt"
    target.write_bytes(content)
    for quiet in ([], ["-q"]):
        result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", str(target), *quiet, *_model_args(tiny_model)])
        assert result.exit_code == 2 and "does not hold qvl-label records" in result.output
        assert target.read_bytes() == content  # untouched


def test_a_whole_last_record_without_newline_is_kept(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(orjson.dumps(RECORD))  # a valid record, its newline missing
    result = runner.invoke(app, ["batch", str(PRODUCTS / "ms04-red_main.jpg"), "-o", str(out), "--max-tokens", "4",
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code == 1
    lines = out.read_bytes().splitlines()
    assert orjson.loads(lines[0]) == RECORD and len(lines) == 2


def test_only_our_torn_line_is_cut_and_that_is_said_with_quiet(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(orjson.dumps(RECORD) + b'\n{"path": "b.jpg", "sta')
    result = runner.invoke(app, ["batch", str(PRODUCTS / "ms04-red_main.jpg"), "-o", str(out), "-q",
                                 "--max-tokens", "4", *_model_args(tiny_model)])  # fmt: skip
    assert "repaired a torn last line" in result.stderr
    lines = out.read_bytes().splitlines()
    assert orjson.loads(lines[0]) == RECORD and orjson.loads(lines[1])["path"].endswith("ms04-red_main.jpg")


def test_empty_output_name_is_a_usage_error(tiny_model: tinymodel.GeneratedModel) -> None:
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", "", *_model_args(tiny_model)])
    assert result.exit_code == 2 and "output name is empty" in result.output


# -- a changed file is work again -------------------------------------------------------------


def test_a_file_that_changed_since_its_final_record_is_labelled_again(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = (PRODUCTS / "wj04-white_main.jpg").read_bytes()
    (folder / "copying.jpg").write_bytes(photo[: len(photo) // 3])  # still being copied
    out = tmp_path / "out.jsonl"
    args = ["batch", str(folder), "-o", str(out), "--no-cache", "--max-tokens", "4", *_model_args(tiny_model)]
    runner.invoke(app, args)
    (first,) = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert first["status"] == "truncated" and first["file"]["size"] == len(photo) // 3
    again = runner.invoke(app, args)
    assert "already done" in again.stderr  # unchanged: a final status is not tried again
    (folder / "copying.jpg").write_bytes(photo)  # the copy finished
    runner.invoke(app, args)
    last = orjson.loads(out.read_bytes().splitlines()[-1])
    assert last["status"] != "truncated" and last["file"]["size"] == len(photo)


# -- malformed records in merge, export and resume -------------------------------------------------

ODD_RECORDS = [
    {"path": 5, "status": "ok"},
    {"path": ["a"], "status": "ok"},
    {"path": "b.jpg", "status": "ok", "duplicate_of": "x", "label": "text", "languages": "zh"},
    {"path": "c.jpg", "status": "ok", "languages": ["en"],
     "label": {"category": [1], "attributes": {"colors": ["red", 3, None]}, "compliance": {"flags": ["x", 1]},
               "copy": {"en": {"title": 5, "tags": "t"}}, "details": {"fields": {"a": [1, None]}}}},
]  # fmt: skip


def test_merge_and_export_skip_foreign_lines_and_survive_wrong_types(tmp_path: Path) -> None:
    source = tmp_path / "odd.jsonl"
    source.write_bytes(b'null\n5\n[1]\n"s"\n' + b"".join(orjson.dumps(r) + b"\n" for r in ODD_RECORDS) + b"{torn")
    merged = tmp_path / "merged.jsonl"
    result = runner.invoke(app, ["merge", str(source), "-o", str(merged)])
    assert result.exit_code == 0, result.output
    assert [orjson.loads(line)["path"] for line in merged.read_bytes().splitlines()] == ["b.jpg", "c.jpg"]
    assert "skipped 7 lines that are not records" in result.stderr
    exported = runner.invoke(app, ["export", str(source), "--csv", "-"])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout.lstrip("\ufeff"))))
    assert [r["path"] for r in rows] == ["b.jpg", "c.jpg"]
    assert not (tmp_path / "-").exists()  # `--csv -` is stdout, not a file named "-"


def test_resume_skips_lines_that_are_not_records(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(orjson.dumps(RECORD) + b"\nnull\n[1]\n" + orjson.dumps(RECORD) + b"\n")
    result = runner.invoke(app, ["batch", str(PRODUCTS / "ms04-red_main.jpg"), "-o", str(out), "--max-tokens", "4",
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code == 1 and "skipped 2 lines" in result.stderr and "Traceback" not in result.output


# -- folders -----------------------------------------------------------------------------------


def _deny_listing(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Root reads every folder, so the permission error is made where the walk lists folders."""
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def listdir(path):  # type: ignore[no-untyped-def]
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)


def test_an_unreadable_subfolder_gets_an_error_record(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "inside.jpg").write_bytes((PRODUCTS / "ms04-red_main.jpg").read_bytes())
    (root / "open.jpg").write_bytes(b"not a photo")
    _deny_listing(monkeypatch, root / "locked")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", str(root), "-o", str(out), *_model_args(tiny_model)])
    records = {Path(r["path"]).name: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert records["locked"]["status"] == "unreadable" and "Permission denied" in records["locked"]["error"]
    assert records["open.jpg"]["status"] == "not_an_image"
    assert result.exit_code == 1


def test_an_unreadable_root_folder_is_not_a_success(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    _deny_listing(monkeypatch, root)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", str(root), "-o", str(out), *_model_args(tiny_model)])
    (record,) = map(orjson.loads, out.read_bytes().splitlines())
    assert record["status"] == "unreadable" and result.exit_code == 1


def test_a_folder_tree_a_thousand_levels_deep(tmp_path: Path) -> None:
    from qvl_label.pipeline.batch import walk_images

    deepest = tmp_path / "tree"
    deepest.mkdir()
    for _ in range(1000):  # one level at a time: Path.mkdir(parents=True) itself recurses
        deepest = deepest / "a"
        deepest.mkdir()
    (deepest / "photo.jpg").write_bytes(b"x")
    (tmp_path / "tree" / "top.png").write_bytes(b"x")
    try:
        found = list(walk_images(tmp_path / "tree"))
        assert [Path(p).name for p in found] == ["top.png", "photo.jpg"]
    finally:  # pytest's own clean-up (shutil.rmtree) recurses and cannot remove such a tree
        (deepest / "photo.jpg").unlink()
        while deepest != tmp_path / "tree":
            deepest.rmdir()
            deepest = deepest.parent


# -- option values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--threads", "100000"], "--threads must be between"),
        (["--threads", "-3"], "--threads must be between"),
        (["--parallel", "256"], "--parallel must be between"),
        (["--temperature", "-1"], "--temperature must be"),
        (["--temperature", "nan"], "--temperature must be"),
        (["--temperature", "inf"], "--temperature must be"),
        (["--temperature", "1e308"], "--temperature must be"),
        (["--seed", "-1"], "--seed must be between"),
        (["--seed", "18446744073709551616"], "--seed must be between"),
        (["--preset", ""], "--preset is empty"),
        (["--shard", ""], "--shard takes I/N"),
        (["--near-dup-distance", "-1"], "--near-dup-distance must be between 0 and 16"),
        (["--near-dup-distance", "65"], "--near-dup-distance must be between 0 and 16"),
        (["--image-max-tokens", "100000"], "--image-min-tokens must be"),
        (["--max-tokens", "-5"], "--max-tokens must be between"),
    ],
)
def test_bad_values_are_usage_errors_before_the_model_loads(tmp_path: Path, option: list[str], message: str) -> None:
    broken = tmp_path / "model.gguf"  # loading it would be exit 4: exit 2 shows the check came first
    broken.write_bytes(b"GGUF" + bytes(64))
    model = [] if option[0] == "--preset" else ["--model", str(broken), "--mmproj", str(broken)]
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", str(tmp_path / "out.jsonl"), *option, *model])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").stat().st_size == 0


def test_an_overlong_question_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--prompt", "word " * 1000])
    assert result.exit_code == 2 and "--prompt takes a question of 1 to 2000 characters" in result.output


@pytest.mark.parametrize("ctx", ["16", "3300"])
def test_a_context_too_small_for_one_image_is_a_usage_error(tiny_model: tinymodel.GeneratedModel, ctx: str) -> None:
    result = runner.invoke(
        app, ["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--ctx", ctx, *_model_args(tiny_model)]
    )
    assert result.exit_code == 2 and "give at least" in result.output and result.stdout == ""


# -- the label cache ------------------------------------------------------------------------------


def _damaged_cache(tmp_path: Path) -> Path:
    """A real cache with a page overwritten in the middle, as a disk error leaves it."""
    from qvl_label.store.cache import LabelCache

    path = tmp_path / "cache.sqlite"
    cache = LabelCache(path)
    for i in range(200):
        cache.put(f"{i:064d}", "f", f"{i}.jpg", {"status": "ok", "label": "x" * 500})
    cache.close()
    data = bytearray(path.read_bytes())
    data[8192:12288] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_cache_is_one_line_everywhere_and_clear_starts_afresh(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    cache = _damaged_cache(tmp_path)
    photo = str(PRODUCTS / "ms04-red_main.jpg")
    described = runner.invoke(app, ["describe", photo, "--cache", str(cache), "--max-tokens", "4",
                                    *_model_args(tiny_model)])  # fmt: skip
    assert described.exit_code in (1, 5) and "Traceback" not in described.output
    if described.exit_code == 5:
        assert "cache clear" in described.output
    stats = runner.invoke(app, ["cache", "stats", "--cache", str(cache)])
    assert stats.exit_code in (0, 5) and "Traceback" not in stats.output and "internal error" not in stats.output
    cleared = runner.invoke(app, ["cache", "clear", "--cache", str(cache)])
    assert cleared.exit_code == 0, cleared.output
    assert runner.invoke(app, ["cache", "stats", "--cache", str(cache)]).stdout.splitlines()[1] == "labels\t0"


def test_cache_clear_never_deletes_a_file_that_is_not_a_cache(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    result = runner.invoke(app, ["cache", "clear", "--cache", str(notes)])
    assert result.exit_code == 2 and notes.read_text() == "my notes"


def test_cache_stats_does_not_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cache.sqlite"
    result = runner.invoke(app, ["cache", "stats", "--cache", str(missing)])
    assert result.exit_code == 0 and "labels\t0" in result.stdout
    assert not missing.exists() and not missing.parent.exists()


# -- standard output ------------------------------------------------------------------------------


def _shell(command: str, model: tinymodel.GeneratedModel) -> subprocess.CompletedProcess[bytes]:
    args = f"--model {model.model} --mmproj {model.mmproj} --max-tokens 4 --no-cache"
    photos = " ".join(str(p) for p in sorted(PRODUCTS.iterdir()))
    script = command.format(qvl=f"{sys.executable} -m qvl_label", photos=photos, args=args)
    return subprocess.run(["bash", "-c", f"set -o pipefail; {script}"], capture_output=True, timeout=300)


def test_a_closed_pipe_stops_quietly(tiny_model: tinymodel.GeneratedModel) -> None:
    result = _shell("{qvl} describe {photos} {args} | head -c 10", tiny_model)
    assert result.returncode == 141 and len(result.stdout) == 10
    assert b"Traceback" not in result.stderr and b"error" not in result.stderr.lower()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_describe_into_a_full_disk_is_exit_5(tiny_model: tinymodel.GeneratedModel) -> None:
    result = _shell("{qvl} describe {photos} {args} > /dev/full", tiny_model)
    assert result.returncode == 5 and b"No space left on device" in result.stderr and b"Traceback" not in result.stderr


def test_batch_to_a_closed_stdout_is_exit_5(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    result = _shell(f"{{qvl}} batch {PRODUCTS} -o - {{args}} >&-", tiny_model)
    assert result.returncode == 5 and b"standard output is closed" in result.stderr


# -- signals and special files ---------------------------------------------------------------------------


def test_a_pipe_or_a_device_is_not_an_image(tmp_path: Path) -> None:
    from qvl_label.pipeline.images import ImageLoadError, load_image

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ImageLoadError) as info:
            load_image(path, 8, 64)  # returns at once: the pipe is never opened
        assert info.value.kind == "not_an_image" and "not a regular file" in str(info.value)


def test_ctrl_c_during_start_up_is_not_a_traceback() -> None:
    """The signal arrives while the program is still importing its libraries."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qvl_label", "schema"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert b"Traceback" not in stderr
    # 130 from our handler; 0 if it had already finished; -SIGINT if the signal came before
    # Python installed any handler at all (the default action, no output either way).
    assert proc.returncode in (0, 130, -signal.SIGINT)


def test_sigterm_stops_like_ctrl_c_and_removes_the_temporary_cache(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(20):
        (folder / f"p{i:02d}.jpg").write_bytes((PRODUCTS / "wb04-blue-0.jpg").read_bytes() + bytes([i]))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "qvl_label", "batch", str(folder), "-o", str(out), "--no-cache",
            "--max-tokens", "12000", "--image-max-tokens", "64", *_model_args(tiny_model)]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(scratch)}
    )
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_bytes().count(b"\n") < 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"resume with" in stderr and b"Traceback" not in stderr
    assert not list(scratch.glob("qvl-label-cache-*"))  # the run's temporary cache is gone
    for line in out.read_bytes().splitlines():
        orjson.loads(line)


# -- template files ------------------------------------------------------------------------------

BAD_TEMPLATES = [
    ('[templates.apparel.fields]\npocket = { enum = ["patch", "zip \\"x\\""] }\n', "line 2", "enum"),
    ('[templates.apparel.fields]\n"po\\"cket" = { enum = ["patch"] }\n', "line 2", "fields"),
    ("[channels.ebay]\ntitle_max = { default = -5 }\n", "line 2", "title_max"),
    ("[channels.ebay]\ntitle_max = { default = 0 }\n", "line 2", "title_max"),
    ('[channels.ebay]\ntitle_max = { default = "eighty" }\n', "line 2", "title_max"),
    ("[channels.ebay]\nemoji = true\n", "", "title_max"),
    ("[templates.apparel.fields]\npocket = { enum = [] }\n", "line 2", "enum"),
    ('[vocabularies.colors.teal]\nsynonyms = "text"\n', "line 2", "synonyms"),
    ('[templates.apparel.fields]\npocket = { regex = "^a" }\n', "line 2", "regex"),
    ("[templates.apparel]\nfields = 3\n", "line 2", "fields"),
    ('[[compliance.rules]]\nid = "x"\nlang = "en"\nterms = []\n', "line 4", "terms"),
    ('[[compliance.rules]]\nid = "x"\nlang = "en"\nterms = ["a"]\nexceptions = ["("]\n', "line 5", "exceptions"),
]


@pytest.mark.parametrize(("content", "line", "key"), BAD_TEMPLATES)
def test_bad_template_files_name_the_file_line_and_key(tmp_path: Path, content: str, line: str, key: str) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(content)
    result = runner.invoke(app, ["schema", "--template", str(path)])
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and key in result.output and line in result.output
    assert "Traceback" not in result.output


def test_a_template_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_bytes(b'[prompt]\ninstructions = "\xff\xfe"\n')
    result = runner.invoke(app, ["schema", "--template", str(path)])
    assert result.exit_code == 2 and "not UTF-8" in result.output
