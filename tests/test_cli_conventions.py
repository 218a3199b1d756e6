"""Command-line conventions: -h, examples that parse, flags shown as flags, variables, --json outputs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from qvl_label import tinymodel
from qvl_label.cli import app
from qvl_label.cli._examples import EXAMPLES

from .conftest import PRODUCTS

# typer 0.29 carries its own copy of click (typer._click): the commands are walked by what they do.
Command = Any


def _is_group(command: Command) -> bool:
    return hasattr(command, "list_commands")


def _root() -> Command:
    command = typer.main.get_command(app)
    assert _is_group(command)
    return command


def _commands(group: Command, prefix: str = "") -> dict[str, Command]:
    found: dict[str, Command] = {}
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if _is_group(command):
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


COMMANDS = _commands(_root())


def _help(*words: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "qvl_label", *words, "-h"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "100", **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_command_has_examples_and_only_real_commands_do() -> None:
    assert set(EXAMPLES) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_each_example_parses_with_the_command_s_own_options(command: str) -> None:
    for line in EXAMPLES[command]:
        words = shlex.split(line.split("|")[-1])
        words = words[words.index("qvl-label") + 1 :]
        group = _root()
        while _is_group(group):
            name = words.pop(0)
            found = group.get_command(group.context_class(group), name)
            assert found is not None, line
            group = found
        assert group.name == COMMANDS[command].name, line
        group.make_context(command, list(words))  # raises a usage error on an unknown or missing option


def test_help_takes_h_shows_examples_and_flags_as_flags() -> None:
    text = _help("batch")
    assert "Examples:\n    qvl-label batch ./images -o out.jsonl" in text
    assert "--force " in text and "<bool>" not in text
    assert "label[ray])" in text  # square brackets are text, not markup
    flowing = " ".join(text.split())  # click wraps help text at word boundaries
    assert "[env var: QVL_LABEL_LANG;" in flowing and "[env var: QVL_LABEL_PRESET]" in flowing
    assert "Examples:" in _help("cache", "stats") and "-h, --help" in _help("models", "list")
    served = " ".join(_help("serve").split())
    for variable in ("QVL_LABEL_HOST", "QVL_LABEL_PORT", "QVL_LABEL_API_KEY"):
        assert f"env var: {variable}" in served


def test_variables_set_the_defaults_people_set_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qvl_label", "schema"], capture_output=True, timeout=60,
        env={**os.environ, "QVL_LABEL_LANG": "en,ja"},
    )  # fmt: skip
    copy = json.loads(result.stdout)["properties"]["copy"]["properties"]
    assert sorted(copy) == ["en", "ja"]


def _json(*words: str, exit_code: int = 0) -> Any:
    result = subprocess.run([sys.executable, "-m", "qvl_label", *words], capture_output=True, timeout=900)
    assert result.returncode == exit_code, result.stderr
    return json.loads(result.stdout)


def test_models_list_and_cache_stats_as_json(tmp_path: Path) -> None:
    presets = _json("models", "list", "--json")
    assert isinstance(presets, list) and [p["default"] for p in presets].count(True) == 1
    first = presets[0]
    assert first["bytes"] == sum(f["bytes"] for f in first["files"])
    assert {f["role"] for f in first["files"]} == {"model", "mmproj"} and first["state"] == "not downloaded"
    stats = _json("cache", "stats", "--json", "--cache", str(tmp_path / "none.sqlite"))
    assert stats == {"path": str(tmp_path / "none.sqlite"), "labels": 0, "runs": 0, "bytes": 0}


@pytest.mark.slow
def test_doctor_and_batch_summary_as_json(tmp_path: Path, tiny_model: tinymodel.GeneratedModel) -> None:
    report = _json("doctor", "--json")
    assert report["smoke_test"]["ok"] is True and report["backend"]["llama_cpp_python"]
    out = tmp_path / "out.jsonl"
    model = ["--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj), "--max-tokens", "64"]
    # 64 tokens cut every answer short: each photo is truncated_output, so the run exits 1 (some not ok)
    summary = _json("batch", str(PRODUCTS), "-o", str(out), "--no-cache", "--lang", "en", *model, "--json", exit_code=1)
    records = out.read_bytes().splitlines()
    assert summary["statuses"] == {"truncated_output": len(records)} and summary["not_ok"] == len(records)
    assert summary["labelled"] == len(records) == len(list(PRODUCTS.iterdir()))
    assert sum(summary["statuses"].values()) == summary["labelled"] and summary["output"] == str(out)
    refused = subprocess.run(
        [sys.executable, "-m", "qvl_label", "batch", str(PRODUCTS), "-o", "-", "--json", *model],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "--json" in refused.stderr and refused.stdout == ""
