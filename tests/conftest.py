"""Shared fixtures: the generated tiny Qwen3-VL model and the image fixture folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvl_label import tinymodel

FIXTURES = Path(__file__).parent / "fixtures"
PRODUCTS = FIXTURES / "products"
AWKWARD = FIXTURES / "awkward"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tinymodel.GeneratedModel:
    return tinymodel.generate(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def product_paths() -> list[Path]:
    return sorted(PRODUCTS.iterdir())


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the model cache and ledger of each test away from the user's real cache."""
    monkeypatch.setenv("QVL_LABEL_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("QVL_LABEL_HF_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
