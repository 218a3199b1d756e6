"""Long-run features of batch: duplicates, near-duplicates, the cache, shards, merge, CSV export, output failures."""

from __future__ import annotations

import csv
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image
from typer.testing import CliRunner

from qvl_label import tinymodel
from qvl_label.cli import app
from qvl_label.labeling.config import load_config
from qvl_label.labeling.shaping import LabelShaper
from qvl_label.store.export import csv_columns

from .conftest import AWKWARD, CATALOGUE, PRODUCTS, sample_answer
from .test_labeler import ScriptedEngine

runner = CliRunner()
OK_ARGS = ["--lang", "en", "--image-max-tokens", "64", "--max-tokens", "12000"]  # long enough for ok labels


def _args(model: tinymodel.GeneratedModel) -> list[str]:
    return ["--model", str(model.model), "--mmproj", str(model.mmproj)]


def _records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _batch(args: list[str], out: Path) -> list[dict]:
    """Run batch; its exit code must say whether every record it wrote is ok (README, "Exit codes")."""
    before = len(_records(out)) if out.exists() else 0
    result = runner.invoke(app, ["batch", *args, "-o", str(out)])
    written = _records(out)[before:]
    assert written, result.output
    expected = 0 if all(r["status"] == "ok" for r in written) else 1
    assert result.exit_code == expected, result.output
    return _records(out)


@pytest.fixture
def variants(tmp_path: Path) -> Path:
    """One product photo as a shop would have it: copied, re-encoded, resized, cropped, and recoloured."""
    root = tmp_path / "variants"
    (root / "copies").mkdir(parents=True)
    src = PRODUCTS / "ms04-red_main.jpg"
    shutil.copy(src, root / "a-original.jpg")
    shutil.copy(src, root / "copies" / "same-bytes.jpg")
    photo = Image.open(src).convert("RGB")
    w, h = photo.size
    photo.save(root / "b-reencoded.jpg", quality=55)
    photo.resize((w // 2, h // 2)).save(root / "c-half-size.png")
    photo.crop((w * 3 // 100, h * 3 // 100, w - w * 3 // 100, h - h * 3 // 100)).save(root / "d-cropped.jpg")
    hsv = np.array(photo.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(int) + 150) % 256
    Image.fromarray(hsv, "HSV").convert("RGB").save(root / "e-blue-variant.jpg")
    shutil.copy(PRODUCTS / "wb04-blue-0.jpg", root / "f-other-product.jpg")
    return root


def test_identical_files_are_labelled_once(
    tiny_model: tinymodel.GeneratedModel, variants: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    written = _batch([str(variants), "--no-cache", *OK_ARGS, *_args(tiny_model)], out)
    records = {Path(r["path"]).name: r for r in written}
    assert len(records) == 7
    original, copy = records["a-original.jpg"], records["same-bytes.jpg"]
    assert original["status"] == "ok" and original["duplicate_of"] is None
    assert copy["duplicate_of"] == {"path": original["path"], "match": "identical", "distance": 0}
    assert copy["label"] == original["label"] and copy["tokens"] is None
    # without --near-dup, similar but different files each go to the model
    assert all(records[n]["duplicate_of"] is None for n in ("b-reencoded.jpg", "c-half-size.png", "d-cropped.jpg"))


def test_near_duplicates_reuse_labels_but_not_across_colours(
    tiny_model: tinymodel.GeneratedModel, variants: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    written = _batch([str(variants), "--near-dup", *OK_ARGS, *_args(tiny_model)], out)
    records = {Path(r["path"]).name: r for r in written}
    assert len(records) == 7
    source = records["a-original.jpg"]["path"]
    for name in ("b-reencoded.jpg", "c-half-size.png", "d-cropped.jpg"):
        reused = records[name]["duplicate_of"]
        assert reused is not None and reused["path"] == source and reused["match"] == "near", name
        assert 0 <= reused["distance"] <= 8
        assert records[name]["label"] == records["a-original.jpg"]["label"]
    assert records["e-blue-variant.jpg"]["duplicate_of"] is None  # a colour variant is a different product
    assert records["f-other-product.jpg"]["duplicate_of"] is None


def test_cache_reuses_work_across_runs_and_outputs(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(PRODUCTS, folder)
    cache = tmp_path / "labels.sqlite"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    common = ["--cache", str(cache), *OK_ARGS, *_args(tiny_model)]
    _batch([str(folder), *common], first)
    second_records = _batch([str(folder), *common], second)
    ok_first = {r["path"]: r for r in _records(first) if r["status"] == "ok"}
    assert len(ok_first) >= 3 and len(second_records) == 5
    reused = {r["path"]: r for r in second_records if r["duplicate_of"] is not None}
    assert reused.keys() == ok_first.keys()  # every ok label is served from the cache, nothing else is
    for path, record in reused.items():
        assert record["duplicate_of"]["match"] == "identical" and record["tokens"] is None
        assert record["label"] == ok_first[path]["label"]
    stats = runner.invoke(app, ["cache", "stats", "--cache", str(cache)])
    assert f"labels\t{len(ok_first)}" in stats.stdout
    # a different setting is a different fingerprint: nothing is reused
    third = tmp_path / "third.jsonl"
    third_records = _batch([str(folder), "--cache", str(cache), "--seed", "7", "--temperature", "0.5",
                            *OK_ARGS, *_args(tiny_model)], third)  # fmt: skip
    assert len(third_records) == 5 and all(r["duplicate_of"] is None for r in third_records)
    cleared = runner.invoke(app, ["cache", "clear", "--cache", str(cache)])
    assert cleared.exit_code == 0
    assert "labels\t0" in runner.invoke(app, ["cache", "stats", "--cache", str(cache)]).stdout


def test_shards_are_disjoint_and_complete_then_merge_and_export(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (64 + i, 48), (20 * i, 100, 200 - 10 * i)).save(folder / f"item-{i:02d}.png")
    shards = []
    for i in (1, 2, 3):
        out = tmp_path / f"shard{i}.jsonl"
        records = _batch([str(folder), "--shard", f"{i}/3", "--max-tokens", "8", "--image-max-tokens", "16",
                          *_args(tiny_model)], out)  # fmt: skip
        shards.append({r["path"] for r in records})
    assert set.union(*shards) == {str(p) for p in folder.iterdir()}
    assert sum(len(s) for s in shards) == 12  # disjoint
    assert all(shards)

    merged = tmp_path / "all.jsonl"
    result = runner.invoke(app, ["merge", *(str(tmp_path / f"shard{i}.jsonl") for i in (1, 2, 3)), "-o", str(merged)])
    assert result.exit_code == 0
    paths = [r["path"] for r in _records(merged)]
    assert paths == sorted(paths) and len(paths) == 12


def test_bad_shard_value() -> None:
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", "x.jsonl", "--shard", "4/3"])
    assert result.exit_code == 2 and "between 1 and N" in result.output


def test_csv_export_keeps_chinese_and_takes_the_best_record(tmp_path: Path) -> None:
    answer = sample_answer(("zh", "en"), colors=["酒红", "black"], materials=["真丝"])
    answer["category"] = {"top": "Apparel & Accessories", "path": ["Clothing", "Dresses"]}
    answer["copy"]["zh"].update(title="酒红色真丝连衣裙", selling_points=["真丝面料", "V领", "收腰"])
    answer["copy"]["en"].update(title="Burgundy silk dress", selling_points=["Silk", "V-neck", "Fitted waist"])
    answer["copy"]["zh"]["description"] = "最好的夏季连衣裙。"
    config = load_config()
    label = LabelShaper(config, config.channel("generic"), ("zh", "en")).shape(answer)
    first = {"path": "a/裙子.jpg", "status": "truncated_output", "error": "cut", "languages": ["zh", "en"]}
    good = {"path": "a/裙子.jpg", "status": "ok", "error": None, "sha256": "ab" * 32, "languages": ["zh", "en"],
            "label": label, "duplicate_of": None}  # fmt: skip
    later_fail = {"path": "a/裙子.jpg", "status": "engine_error", "error": "x", "languages": ["zh", "en"]}
    other = {"path": "b.jpg", "status": "corrupt", "error": "cannot decode", "languages": ["zh", "en"]}
    source = tmp_path / "out.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in (first, good, later_fail, other)) + b'{"path": "torn')
    target = tmp_path / "out.csv"
    result = runner.invoke(app, ["export", str(source), "--csv", str(target)])
    assert result.exit_code == 0 and "skipped 1 lines that are not records" in result.stderr
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(rows[0]) == csv_columns(["zh", "en"])
    dress = rows[0]
    assert dress["status"] == "ok" and dress["title_zh"] == "酒红色真丝连衣裙"
    assert dress["category_id"] == "2271" and dress["category_zh"] == "服饰与配饰 > 服装 > 连衣裙"
    assert dress["category"] == "Apparel & Accessories > Clothing > Dresses"
    assert dress["colors"] == "red; black" and dress["colors_raw"] == "酒红; black"
    assert dress["materials"] == "silk" and dress["selling_points_en"] == "Silk; V-neck; Fitted waist"
    assert "neckline=crew" in dress["details"]
    assert "copy.zh.description: 最好 (zh-absolute-claim, flagged)" in dress["compliance_flags"]
    assert rows[1]["path"] == "b.jpg" and rows[1]["status"] == "corrupt"


def test_full_disk_is_a_clear_error(tiny_model: tinymodel.GeneratedModel) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", "/dev/full", "--max-tokens", "4", *_args(tiny_model)])
    assert result.exit_code == 5
    assert "No space left on device" in result.output and "Traceback" not in result.output


def test_unwritable_output_fails_before_the_model_loads(tmp_path: Path) -> None:
    """A model file llama.cpp cannot load would fail with exit 4; the output is checked first, so it is 5."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken_model = tmp_path / "model.gguf"
    broken_model.write_bytes(b"GGUF" + b"\0" * 64)
    args = ["--model", str(broken_model), "--mmproj", str(broken_model)]
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", str(blocker / "out.jsonl"), *args])
    assert result.exit_code == 5 and "cannot open" in result.output


def test_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    """Model text that a spreadsheet would run as a formula (OWASP CSV injection) starts with an apostrophe."""
    answer = sample_answer(("en",), brand='=HYPERLINK("http://x")', visible_text=["+1 555", "@SUM(A1)"])
    answer["copy"]["en"].update(title="-2+3", description="\tcmd", tags=["=1+1"])
    config = load_config()
    label = LabelShaper(config, config.channel("generic"), ("en",)).shape(answer)
    record = {"path": "@x.jpg", "status": "ok", "error": None, "languages": ["en"], "label": label}
    source = tmp_path / "out.jsonl"
    source.write_bytes(orjson.dumps(record) + b"\n")
    target = tmp_path / "out.csv"
    result = runner.invoke(app, ["export", str(source), "--csv", str(target)])
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig")))
    assert row["brand"] == '\'=HYPERLINK("http://x")'
    assert row["visible_text"] == "'+1 555 | @SUM(A1)"
    assert row["title_en"] == "'-2+3" and row["tags_en"] == "'=1+1"
    assert row["path"] == "'@x.jpg"
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def _photos(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(count):  # distinct bytes: duplicates would be answered without the model
        source = sorted(PRODUCTS.iterdir())[i % 5].read_bytes()
        (folder / f"p{i:02d}.jpg").write_bytes(source + bytes([i]))
    return folder


def _start_batch(
    folder: Path, out: Path, model: tinymodel.GeneratedModel, sigint: signal.Handlers
) -> subprocess.Popen[bytes]:
    """A real batch in its own process, started with SIGINT as given (a test runner may pass it on ignored)."""
    args = [sys.executable, "-m", "qvl_label", "batch", str(folder), "-o", str(out), "--no-cache", *OK_ARGS,
            *_args(model)]  # fmt: skip
    return subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint)
    )


# Generous limits for events that come in seconds on a quiet machine: a busy CI machine may be 20x slower,
# and a limit that passes is never waited out (each wait ends at its event).
EVENT_LIMIT_S = 600


def _wait_for_lines(out: Path, count: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until `count` records are written (the event), failing if the run ends first or never writes them."""
    deadline = time.monotonic() + EVENT_LIMIT_S
    while not out.exists() or out.read_bytes().count(b"\n") < count:
        assert proc is None or proc.poll() is None, f"the run ended (exit {proc.returncode}) before {count} records"
        assert time.monotonic() < deadline, f"no {count} records in {EVENT_LIMIT_S} s"
        time.sleep(0.02)


def _wait_for_stderr_line(proc: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Read the run's stderr until a line holds `text` (the event); returns what was read."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + EVENT_LIMIT_S
    while text not in seen:
        line = proc.stderr.readline()  # blocks until the run writes a line or closes stderr
        assert line, f"stderr closed before {text!r}: {seen[-2000:]!r}"
        assert time.monotonic() < deadline, f"no {text!r} in {EVENT_LIMIT_S} s"
        seen += line
    return seen


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    proc = _start_batch(_photos(tmp_path, 30), out, tiny_model, signal.SIG_DFL)
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=EVENT_LIMIT_S)
    assert proc.returncode == 130
    assert b"resume with: qvl-label batch" in stderr and b"Traceback" not in stderr
    lines = out.read_bytes().splitlines()
    assert 2 <= len(lines) < 30
    for line in lines:
        orjson.loads(line)


def test_second_ctrl_c_stops_at_once(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    proc = _start_batch(_photos(tmp_path, 30), out, tiny_model, signal.SIG_DFL)
    _wait_for_lines(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    first = _wait_for_stderr_line(proc, b"stopping after the current image")  # the first Ctrl-C taken
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=EVENT_LIMIT_S)
    stderr = first + rest
    assert proc.returncode == 130 and b"Traceback" not in stderr, (proc.returncode, stderr[-3000:])
    lines = out.read_bytes().splitlines()
    assert 1 <= len(lines) < 30 and out.read_bytes().endswith(b"\n")
    for line in lines:
        orjson.loads(line)


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    """nohup and background jobs start with SIGINT ignored; qvl-label does not take it back."""
    out = tmp_path / "out.jsonl"
    proc = _start_batch(_photos(tmp_path, 4), out, tiny_model, signal.SIG_IGN)
    _wait_for_lines(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=EVENT_LIMIT_S)
    assert proc.returncode in (0, 1)
    assert len(out.read_bytes().splitlines()) == 4  # the run went on to the end


def test_fake_engine_duplicates_in_one_window_wait_for_the_original() -> None:
    from qvl_label.pipeline.labeler import Labeler
    from qvl_label.settings import EngineSettings, Settings

    paths = [str(PRODUCTS / "ms04-red_main.jpg")] * 5 + [str(AWKWARD / "grey_alpha.png")]
    for slots in (1, 4):  # with one slot the original is finished before its copies arrive
        engine = ScriptedEngine(slots=slots)
        settings = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=slots))
        records = list(Labeler(settings, engine_factory=lambda _s, e=engine: e).label(paths))  # type: ignore[misc]
        assert len(engine.seen) == 2  # each distinct file reaches the model once
        assert [r["duplicate_of"] is not None for r in records] == [False, True, True, True, True, False]
        assert os.path.basename(records[3]["duplicate_of"]["path"]) == "ms04-red_main.jpg"


def test_torn_tail_longer_than_a_read_block_is_repaired(tmp_path: Path) -> None:
    from qvl_label.pipeline.batch import scan_existing
    from qvl_label.store.outputs import inspect_output, repair_tail

    out = tmp_path / "out.jsonl"
    good = orjson.dumps({"path": "a.jpg", "status": "ok", "run": "f"}) + b"\n"
    torn = b'{"path": "b.jpg", "raw_output": "' + b"x" * 200_000
    out.write_bytes(good * 3 + torn)
    tail = inspect_output(out)
    assert tail.cut_bytes == len(torn)
    repair_tail(out, tail)
    assert out.read_bytes() == good * 3
    assert scan_existing(out, "f", force=False).done == {"a.jpg": None}


def test_non_utf8_and_non_ascii_names_resume(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    data = (PRODUCTS / "wb04-blue-0.jpg").read_bytes()
    (folder / "背包 蓝色.jpg").write_bytes(data + b"\0")  # different bytes, same picture
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(data)
    with open(os.path.join(os.fsencode(folder), b"not-\xff-a-photo.jpg"), "wb") as handle:
        handle.write(b"plain text")
    out = tmp_path / "out.jsonl"
    args = ["batch", str(folder), "-o", str(out), "--no-cache", "--max-tokens", "8", *_args(tiny_model)]
    statuses = {r["path"]: r["status"] for r in _batch(args[1:4] + args[5:], out)}
    assert statuses == {
        str(folder / "背包 蓝色.jpg"): "truncated_output",
        str(folder) + "/caf\\xe9.jpg": "truncated_output",
        str(folder) + "/not-\\xff-a-photo.jpg": "not_an_image",
    }
    # on resume the escaped name matches its record: the permanent failure is not tried again
    again = runner.invoke(app, args)
    assert "resuming: 1 images already done" in again.stderr
    assert {Path(r["path"]).name for r in _records(out)[3:]} == {"caf\\xe9.jpg", "背包 蓝色.jpg"}


def test_unreadable_file_is_an_error_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qvl_label.pipeline import images as images

    target = tmp_path / "locked.jpg"
    target.write_bytes((PRODUCTS / "ms04-red_main.jpg").read_bytes())
    original = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == "locked.jpg":
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(images.ImageLoadError) as info:
        images.load_image(target, 8, 64)
    assert info.value.kind == "unreadable" and "Permission denied" in str(info.value)


def test_a_cache_that_cannot_be_written_is_an_output_error(tmp_path: Path) -> None:
    """A full disk under the label cache stops the run with exit 5's error, not an internal error (70)."""
    from qvl_label.errors import OutputError
    from qvl_label.store.cache import LabelCache

    cache = LabelCache(tmp_path / "cache.sqlite")
    cache.put("a" * 64, "f", "a.jpg", {"status": "ok"})
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = max(p.stat().st_size for p in tmp_path.glob("cache.sqlite*"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limit[1]))  # no file may grow: the disk is full
    try:
        with pytest.raises(OutputError, match="cannot write to the label cache"):
            for i in range(50):
                cache.put(f"{i:064d}", "f", f"{i}.jpg", {"status": "ok", "label": "x" * 4096})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    cache.close()


def test_near_duplicate_after_a_failed_original_end_to_end(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    """The review's run: one photo, 11 others, then a half-size copy of the first; 13 in, 13 records out."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = [*sorted(PRODUCTS.iterdir()), *sorted(CATALOGUE.iterdir())]
    sources += [AWKWARD / "exif_orientation_1_landscape.jpg", AWKWARD / "cmyk_with_profile.jpg"]
    for i, source in enumerate(sources):
        shutil.copy(source, folder / f"{i:02d}-{source.name}")
    with Image.open(sources[0]) as first:
        first.convert("RGB").resize((first.width // 2, first.height // 2)).save(folder / "99-half-of-the-first.png")
    out = tmp_path / "out.jsonl"
    args = [str(folder), "--near-dup", "--max-tokens", "5", "--parallel", "1", "--no-cache", *_args(tiny_model)]
    records = _batch(args, out)  # --max-tokens 5: the original's answer is cut off, a failure
    assert len(records) == 13 and len({r["path"] for r in records}) == 13
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["00-" + sources[0].name]["status"] == "truncated_output"
    half = by_name["99-half-of-the-first.png"]
    assert half["duplicate_of"] is None and half["tokens"] is not None  # its own try with the model
