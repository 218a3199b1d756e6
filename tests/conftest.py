"""Shared fixtures: the generated tiny Qwen3-VL model and the image fixture folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvl_label import tinymodel

FIXTURES = Path(__file__).parent / "fixtures"
PRODUCTS = FIXTURES / "products"
CATALOGUE = FIXTURES / "catalogue"
AWKWARD = FIXTURES / "awkward"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tinymodel.GeneratedModel:
    return tinymodel.generate(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def qwen_vocab_model(tmp_path_factory: pytest.TempPathFactory) -> tinymodel.GeneratedModel:
    """The tiny shape with the real Qwen tokenizer (151,936 entries): real token counts."""
    return tinymodel.generate(tmp_path_factory.mktemp("qwen-vocab-model"), vocabulary="qwen")


@pytest.fixture(scope="session")
def product_paths() -> list[Path]:
    return sorted(PRODUCTS.iterdir())


@pytest.fixture(scope="session")
def ten_photos() -> list[Path]:
    """Ten distinct product photos (products/ and catalogue/)."""
    return sorted(PRODUCTS.iterdir()) + sorted(CATALOGUE.iterdir())


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the model cache and ledger of each test away from the user's real cache."""
    monkeypatch.setenv("QVL_LABEL_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("QVL_LABEL_HF_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def sample_answer(languages: tuple[str, ...] = ("en",), **overrides: object) -> dict:
    """A model answer as the real Qwen3-VL would give it for a red men's tee."""
    copy = {
        "en": {
            "title": "Men's red running tee",
            "description": "A red short-sleeve tee with a crew neck.",
            "selling_points": ["Short sleeves", "Crew neck", "Red"],
            "tags": ["tee", "red"],
        },
        "zh": {
            "title": "男士酒红色短袖运动T恤",
            "description": "酒红色圆领短袖T恤，适合日常与运动。",
            "selling_points": ["圆领设计", "短袖", "酒红色"],
            "tags": ["T恤", "短袖"],
        },
    }
    answer: dict = {
        "scene": "single",
        "category": {"top": "Apparel & Accessories", "path": ["Clothing", "Shirts & Tops"]},
        "colors": ["wine red"],
        "materials": ["cotton"],
        "patterns": ["solid"],
        "style": ["casual"],
        "season": ["summer"],
        "audience": ["men"],
        "usage_scenes": ["gym"],
        "details": {
            "template": "apparel",
            "neckline": "crew",
            "sleeve_length": "short",
            "fit": "regular",
            "length": "hip",
            "closure": "none",
        },
        "brand": "",
        "visible_text": ["HeatTec"],
        "copy": {lang: copy.get(lang, copy["en"]) for lang in languages},
        "items": [],
    }
    answer.update(overrides)
    return answer
