"""A missing model: the messages name both files and their total size, and say how to go on offline."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from qvl_label.cli import app

from .conftest import PRODUCTS

BOTH_FILES = (
    "Qwen3VL-8B-Instruct-Q4_K_M.gguf (5.03 GB)",
    "mmproj-Qwen3VL-8B-Instruct-F16.gguf (1.16 GB)",
    "= 6.19 GB",
)
OFFLINE_WAY = ("--model MODEL.gguf --mmproj MMPROJ.gguf", "qvl-label doctor")


def _said(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines at spaces


def test_offline_describe_names_both_files_the_total_and_the_way_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["describe", str(sorted(PRODUCTS.iterdir())[0])])
    said = _said(result.output)
    assert result.exit_code == 3, said
    assert "downloads are off" in said
    for part in (*BOTH_FILES, *OFFLINE_WAY, "qvl-label models pull qwen3-vl-8b"):
        assert part in said, (part, said)


def test_no_network_announces_and_names_both_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> object:
        raise OSError(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    result = CliRunner().invoke(app, ["describe", str(sorted(PRODUCTS.iterdir())[0])])
    said = _said(result.output)
    assert result.exit_code == 3, said
    assert "fetching it now (one time): " + " + ".join(BOTH_FILES[:2]) + " = 6.19 GB" in said
    assert "cannot reach" in said and "downloads are off" not in said
    for part in (*BOTH_FILES, *OFFLINE_WAY):
        assert part in said, (part, said)


def test_models_path_does_not_say_downloads_are_off_when_they_are_not() -> None:
    result = CliRunner().invoke(app, ["models", "path", "qwen3-vl-8b"])
    said = _said(result.output)
    assert result.exit_code == 3, said
    assert "downloads are off" not in said
    for part in (*BOTH_FILES, "qvl-label models pull qwen3-vl-8b"):
        assert part in said, (part, said)
