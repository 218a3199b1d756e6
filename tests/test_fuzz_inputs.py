"""Fuzz: random bytes and random JSON as outputs to resume, merge and export inputs, and template files.

No command may end in an internal error (exit 70) or show a traceback, and none may change a
file it was not asked to write.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qvl_label.cli import app

from .conftest import PRODUCTS

runner = CliRunner()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
RECORD_FIELDS = ["path", "status", "label", "languages", "duplicate_of", "run", "file", "answer", "error", "sha256"]
RECORDISH = st.fixed_dictionaries(
    {"path": st.text(max_size=12) | JSON, "status": st.sampled_from(["ok", "corrupt", "x"]) | JSON},
    optional={name: JSON for name in RECORD_FIELDS[2:]},
)
LINES = st.lists(
    st.one_of(JSON.map(orjson.dumps), RECORDISH.map(orjson.dumps), st.binary(max_size=40)), max_size=8
).map(lambda lines: b"\n".join(lines) + b"\n")
CONTENT = st.one_of(st.binary(max_size=300), LINES)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_crash(output: str, exit_code: int) -> None:
    assert exit_code != 70, output
    assert "Traceback" not in output and "internal error" not in output, output


@FUZZ
@given(content=CONTENT)
def test_merge_and_export_survive_any_input(tmp_path_factory, content: bytes) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("fuzz")
    source = folder / "in.jsonl"
    source.write_bytes(content)
    before = _digest(source)
    merged = runner.invoke(app, ["merge", str(source), "-o", str(folder / "merged.jsonl")])
    _no_crash(merged.output, merged.exit_code)
    exported = runner.invoke(app, ["export", str(source), "--csv", str(folder / "out.csv")])
    _no_crash(exported.output, exported.exit_code)
    assert merged.exit_code in (0, 2, 5) and exported.exit_code in (0, 2, 5)
    assert _digest(source) == before  # inputs are only read


@FUZZ
@given(content=CONTENT)
def test_batch_refuses_or_resumes_any_output_file(tmp_path_factory, content: bytes) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("fuzz")
    out = folder / "out.jsonl"
    out.write_bytes(content)
    before = out.read_bytes()
    broken = folder / "model.gguf"  # loading it fails (exit 4): every earlier check has run by then
    broken.write_bytes(b"GGUF" + bytes(32))
    result = runner.invoke(
        app, ["batch", str(PRODUCTS), "-o", str(out), "--model", str(broken), "--mmproj", str(broken), "--no-cache"]
    )
    _no_crash(result.output, result.exit_code)
    assert result.exit_code in (2, 4), result.output
    after = out.read_bytes()
    if result.exit_code == 2 or not content:
        assert after == before  # refused: untouched
    else:  # accepted as our records: at most our own torn tail cut, or a newline added
        assert after == before.rstrip(b"\n") + b"\n" or before.startswith(after)


@FUZZ
@given(
    tables=st.dictionaries(
        st.sampled_from(["prompt", "vocabularies", "templates", "channels", "compliance", "other"]),
        st.dictionaries(st.text(min_size=1, max_size=8), JSON, max_size=3),
        max_size=3,
    )
)
def test_any_template_file_is_usage_or_works(tmp_path_factory, tables: dict) -> None:  # type: ignore[no-untyped-def]
    import tomli_w

    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "shop.toml"
    try:
        path.write_text(tomli_w.dumps(tables))
    except (TypeError, ValueError):  # not expressible in TOML (None, mixed arrays): write raw bytes instead
        path.write_bytes(orjson.dumps(tables))
    before = _digest(path)
    result = runner.invoke(app, ["schema", "--template", str(path)])
    _no_crash(result.output, result.exit_code)
    assert result.exit_code in (0, 2)
    assert _digest(path) == before


@FUZZ
@given(content=st.binary(max_size=200))
def test_any_template_bytes_are_usage_or_work(tmp_path_factory, content: bytes) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("fuzz") / "shop.toml"
    path.write_bytes(content)
    result = runner.invoke(app, ["schema", "--template", str(path)])
    _no_crash(result.output, result.exit_code)
    assert result.exit_code in (0, 2)
