"""Shared fixtures: the generated tiny Qwen3-VL model and the image fixture folders."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from qvl_label import tinymodel

FIXTURES = Path(__file__).parent / "fixtures"
PRODUCTS = FIXTURES / "products"
CATALOGUE = FIXTURES / "catalogue"
AWKWARD = FIXTURES / "awkward"


# The default `python -m pytest` leaves these out (`-m "not slow"` in pyproject.toml); CI and
# `python -m pytest -m "slow or not slow"` run them. Chosen by measured duration: whole modules that
# run a server, a Ray cluster, a browser, a killed real batch or fuzzing through the CLI, and single
# tests that run the real engine over many photos, the real Qwen tokenizer, or llama-mtmd-cli.
SLOW_MODULES = {
    "test_ray.py",
    "test_serve.py",
    "test_serve_hostile.py",
    "test_serve_openai.py",
    "test_serve_page.py",
    "test_eval_report.py",
    "test_crash.py",
    "test_fuzz_inputs.py",
    "test_scheduler.py",
    "test_pipeline_properties.py",
}
SLOW_TESTS = {
    "test_engine.py": {
        "test_parallel_matches_sequential",
        "test_answers_depend_on_the_photo",
        "test_admission_in_pieces_interleaves_with_decode_steps",
        "test_string_lengths_hold_in_decoded_characters",
        "test_jump_forward_writes_what_decoding_every_token_writes",
        "test_full_answers_parse_validate_and_decide_in_schema_order",
        "test_requests_with_other_instructions_share_one_engine",
        "test_two_photos_in_one_sequence_match_llama_mtmd_cli",
        "test_ignore_eos_runs_every_answer_to_max_tokens",
        "test_admission_control_keeps_sequences_within_the_context",
        "test_forced_runs_longer_than_the_batch_still_decode",
    },
    "test_batch_runs.py": {
        "test_ctrl_c_stops_cleanly_and_says_how_to_resume",
        "test_second_ctrl_c_stops_at_once",
        "test_a_run_started_with_sigint_ignored_keeps_ignoring_it",
        "test_near_duplicates_reuse_labels_but_not_across_colours",
        "test_cache_reuses_work_across_runs_and_outputs",
        "test_identical_files_are_labelled_once",
    },
    "test_cli.py": {"test_describe_long_budget_reaches_ok_labels", "test_grammar_engine_and_jump_forward_options"},
    "test_models.py": {"test_random_model_with_the_real_qwen_tokenizer"},
    "test_hostile_files.py": {
        "test_batch_output_that_is_the_cache_or_its_companions_is_refused",
        "test_concurrent_verifications_keep_every_entry",
    },
    "test_hostile_inputs.py": {"test_cells_over_the_csv_modules_default_limit_are_read"},
    "test_hostile_input.py": {"test_sigterm_stops_like_ctrl_c_and_removes_the_temporary_cache"},
    "test_products.py": {"test_batch_group_by_pattern_resumes_and_reuses_by_the_set_of_photo_hashes"},
}
SLOW_FIXTURES = {"qwen_vocab_model"}  # the real 152k-entry tokenizer: seconds per model load


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.name
        name = getattr(item, "originalname", item.name)
        if (
            module in SLOW_MODULES
            or name in SLOW_TESTS.get(module, set())
            or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.slow)


_interrupted: list[int] = []


def _stop_the_suite(signum: int, frame: FrameType | None) -> None:
    _interrupted.append(signum)
    raise KeyboardInterrupt


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_stops_the_suite() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the suite, also while a test runs the CLI in-process.

    An in-process batch takes the signal itself (finish the image in hand, exit 130) and then passes it
    on to the handler it found (cli/label.py `_pass_on`), this one; the test's own teardown then ends
    the session (`stop_after_an_interrupt`).
    """
    previous = {number: signal.signal(number, _stop_the_suite) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)


@pytest.fixture(autouse=True)
def stop_after_an_interrupt() -> Iterator[None]:
    yield
    if _interrupted:
        pytest.exit(f"interrupted by signal {_interrupted[0]}", returncode=130)


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
