"""End to end through the CLI on the generated tiny Qwen3-VL, run by the real llama.cpp engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label import tinymodel
from qvl_label.cli import app
from qvl_label.labeling.config import load_config
from qvl_label.labeling.schema import answer_schema
from qvl_label.labeling.taxonomy import load_taxonomy
from qvl_label.pipeline.records import OK

from .conftest import AWKWARD, PRODUCTS

MODEL_STATUSES = {OK, "invalid_output", "unparseable_output", "truncated_output"}
runner = CliRunner()


def _model_args(model: tinymodel.GeneratedModel) -> list[str]:
    return ["--model", str(model.model), "--mmproj", str(model.mmproj), "--image-max-tokens", "64"]


def _records(text: str | bytes) -> list[dict]:
    return [
        orjson.loads(line) for line in (text.encode() if isinstance(text, str) else text).splitlines() if line.strip()
    ]


def _check_record(record: dict, languages: tuple[str, ...]) -> None:
    """Every record is a schema-valid ok label, or a failure status with its evidence."""
    assert record["schema_version"] == 2 and record["run"]
    if record["status"] == OK:
        label = record["label"]
        assert label is not None and record["error"] is None
        assert set(label["copy"]) == set(languages)
        taxonomy = load_taxonomy()
        category = label["category"]
        assert taxonomy.nodes[category["id"]].path == tuple(category["path"]), "always a real taxonomy node"
        assert category["raw"][0] == category["path"][0]
        for lang in languages:
            assert set(label["copy"][lang]) == {"title", "description", "selling_points", "tags"}
            if lang != "en":
                assert len(category["names"][lang]) == len(category["path"])
        for values in label["attributes"].values():
            assert all(set(v) == {"raw", "value"} for v in values)
        assert isinstance(label["compliance"]["flags"], list)
    elif record["status"] in MODEL_STATUSES:
        assert record["raw_output"] is not None and record["error"]
        assert record["label"] is None
    else:
        assert record["error"] and record["label"] is None and record["tokens"] is None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "catalogue"
    (root / "b-shoes").mkdir(parents=True)
    (root / "a-shirts").mkdir()
    shutil.copy(PRODUCTS / "ms04-red_main.jpg", root / "a-shirts" / "red tee.jpg")
    shutil.copy(PRODUCTS / "wj04-white_main.jpg", root / "a-shirts" / "白色夹克.JPG")
    shutil.copy(PRODUCTS / "Arla-Standard-Milk_Iconic.jpg", root / "b-shoes" / "milk.jpeg")
    shutil.copy(AWKWARD / "truncated_photo.jpg", root / "b-shoes" / "cut.jpg")
    (root / "b-shoes" / "notes.jpg").write_text("not a photo")
    (root / "b-shoes" / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_describe_prints_one_valid_record_per_image(tiny_model: tinymodel.GeneratedModel) -> None:
    images = [
        PRODUCTS / "ms04-red_main.jpg",
        PRODUCTS / "Tropicana-Apple-Juice_001.jpg",
        AWKWARD / "corrupt_header.jpg",
    ]
    result = runner.invoke(app, ["describe", *map(str, images), "--lang", "en,zh", *_model_args(tiny_model)])
    records = _records(result.stdout)
    assert [r["path"] for r in records] == [str(p) for p in images]
    for record in records:
        _check_record(record, ("en", "zh"))
    assert records[2]["status"] == "corrupt"
    assert records[0]["image"]["model_input"][0] % 32 == 0
    assert records[0]["tokens"]["image"] <= 64
    assert records[0]["model"]["model_file"] == tiny_model.model.name
    assert result.exit_code == 1  # one image failed


def test_describe_long_budget_reaches_ok_labels(tiny_model: tinymodel.GeneratedModel) -> None:
    """With room for the whole bounded answer, the tiny model's grammar-shaped gibberish validates."""
    images = sorted(PRODUCTS.iterdir())
    result = runner.invoke(
        app, ["describe", *map(str, images), "--lang", "en", "--max-tokens", "12000", *_model_args(tiny_model)]
    )
    records = _records(result.stdout)
    assert len(records) == len(images)
    statuses = {r["status"] for r in records}
    assert OK in statuses
    for record in records:
        _check_record(record, ("en",))
        if record["status"] == OK:
            vocabulary = load_config().vocabularies
            for name, values in record["label"]["attributes"].items():
                for value in values:  # a value is always a known id of its vocabulary, or None
                    assert value["value"] is None or value["value"] in vocabulary[name].values


def test_describe_question_cut_off_is_truncated_output(tiny_model: tinymodel.GeneratedModel) -> None:
    result = runner.invoke(
        app,
        [
            "describe",
            str(PRODUCTS / "wb04-blue-0.jpg"),
            "--prompt",
            "Is this suitable for winter?",
            "--max-tokens",
            "2",
            *_model_args(tiny_model),
        ],
    )
    (record,) = _records(result.stdout)
    # An answer that hits --max-tokens is reported as cut off, never passed off as complete
    # (it used to be `ok` with " …" appended); one that ended by itself is `ok`.
    assert record["prompt_version"].startswith("question") and record["label"] is None
    if record["tokens"]["completion"] == 2:
        assert result.exit_code == 1
        assert record["status"] == "truncated_output" and record["answer"] is None and record["raw_output"]
    else:
        assert result.exit_code == 0 and record["status"] == OK and isinstance(record["answer"], str)


def test_grammar_engine_and_jump_forward_options(tiny_model: tinymodel.GeneratedModel) -> None:
    """llguidance with jump-forward by default (forced tokens counted); GBNF decodes every token."""
    photo = str(PRODUCTS / "ms04-red_main.jpg")
    forced = {}
    for extra in ([], ["--no-jump-forward"], ["--grammar", "gbnf"]):
        result = runner.invoke(app, ["describe", photo, "--lang", "en", "--no-cache", *extra, *_model_args(tiny_model)])
        (record,) = _records(result.stdout)
        _check_record(record, ("en",))
        forced[" ".join(extra)] = record["tokens"]["forced"]
    assert forced[""] > 0
    assert forced["--no-jump-forward"] == 0 and forced["--grammar gbnf"] == 0


def test_describe_pretty(tiny_model: tinymodel.GeneratedModel) -> None:
    result = runner.invoke(app, ["describe", str(AWKWARD / "truncated.png"), "--pretty", *_model_args(tiny_model)])
    assert result.stdout.startswith("{\n  ")
    assert orjson.loads(result.stdout)["status"] == "truncated"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["describe", "missing.jpg"], 2, "no such file"),
        (["describe", str(PRODUCTS)], 2, "is a directory"),
        (["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--preset", "nope"], 2, "unknown model preset"),
        (["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--lang", "zh,xx"], 2, "unknown language"),
        (["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--model", "m.gguf"], 2, "go together"),
        (["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--offline"], 3, "not downloaded"),
        (["batch", "nowhere", "-o", "x.jsonl"], 2, "no such file"),
        (["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--grammar", "regex"], 2, "--grammar must be one of"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_batch_walks_in_stable_order_and_resumes(
    tiny_model: tinymodel.GeneratedModel, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    first = runner.invoke(app, ["batch", str(folder), "-o", str(out), *_model_args(tiny_model)])
    records = _records(out.read_bytes())
    names = [Path(r["path"]).name for r in records]
    assert names == ["red tee.jpg", "白色夹克.JPG", "cut.jpg", "milk.jpeg", "notes.jpg"]
    for record in records:
        _check_record(record, ("zh",))
    statuses = {Path(r["path"]).name: r["status"] for r in records}
    assert statuses["cut.jpg"] == "truncated" and statuses["notes.jpg"] == "not_an_image"
    assert first.exit_code == 1
    assert "summary" in first.stderr

    again = runner.invoke(app, ["batch", str(folder), "-o", str(out), *_model_args(tiny_model)])
    redone = _records(out.read_bytes())[len(records) :]
    # permanent failures and ok records are skipped; model failures are tried again
    retried = {Path(r["path"]).name for r in redone}
    assert retried == {Path(r["path"]).name for r in records if r["status"] in MODEL_STATUSES - {OK}}
    assert "already done" in again.stderr

    forced = runner.invoke(app, ["batch", str(folder), "-o", str(out), "--force", *_model_args(tiny_model)])
    relabelled = _records(out.read_bytes())[len(records) + len(redone) :]
    assert sorted(Path(r["path"]).name for r in relabelled) == sorted(names)  # --force: every image again
    assert "already done" not in forced.stderr


def test_batch_reads_paths_from_stdin_and_writes_stdout(tiny_model: tinymodel.GeneratedModel, folder: Path) -> None:
    listing = "\n".join(str(p) for p in sorted(folder.rglob("*.jp*g"))) + "\n"
    result = runner.invoke(app, ["batch", "-", "-o", "-", "--quiet", *_model_args(tiny_model)], input=listing)
    records = _records(result.stdout)
    assert [r["path"] for r in records] == listing.splitlines()
    assert result.stderr == ""


def test_doctor_runs_a_real_inference() -> None:
    result = runner.invoke(app, ["doctor", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "smoke test passed" in result.stdout
    assert "llama-cpp-python  0.3." in result.stdout
    assert "1 thread, " in " ".join(result.stdout.split())  # rich wraps the line


def test_schema_command_prints_the_answer_schema() -> None:
    result = runner.invoke(app, ["schema", "--lang", "zh,en", "--channel", "amazon"])
    assert result.exit_code == 0
    config = load_config()
    assert orjson.loads(result.stdout) == answer_schema(("zh", "en"), config, config.channel("amazon"))
    record = runner.invoke(app, ["schema", "--record", "--lang", "zh"])
    assert orjson.loads(record.stdout)["properties"]["category"]["properties"]["id"]["type"] == "integer"


def test_python_dash_m_and_console_script(tiny_model: tinymodel.GeneratedModel) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qvl_label",
            "describe",
            str(PRODUCTS / "ms04-red_main.jpg"),
            "--max-tokens",
            "16",
            *_model_args(tiny_model),
        ],
        capture_output=True,
        check=False,
    )
    (record,) = _records(proc.stdout)
    assert record["status"] == "truncated_output" and proc.returncode == 1
    assert b"Traceback" not in proc.stderr
