"""Pipeline logic on a scripted fake engine: order, error rows, bounded look-ahead."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from qvl_label.engine.protocol import EngineInfo, Generation, GenerationRequest, Idle, TokenCounts
from qvl_label.pipeline import labeler as labeler_module
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, LabelSettings, Settings

from .conftest import AWKWARD, PRODUCTS, sample_answer

ANSWER = sample_answer(("zh",))


class ScriptedEngine:
    """Holds `slots` requests and finishes them newest first, like a batch where short answers end early."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.max_held = 0
        self.seen: list[int] = []

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("fake", "m", "p", 4096, self.slots, 0, False, 8, 64, False, 1)

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
        held: list[GenerationRequest] = []
        for request in requests:
            if isinstance(request, Idle):  # nothing new: a decode step finishes the newest request
                if held:
                    yield self._answer(held.pop())
                continue
            self.seen.append(request.key)
            held.append(request)
            self.max_held = max(self.max_held, len(held))
            if len(held) == self.slots:
                while held:
                    yield self._answer(held.pop())
        while held:
            yield self._answer(held.pop())

    @staticmethod
    def _answer(request: GenerationRequest) -> Generation:
        return Generation(
            key=request.key, text=json.dumps(ANSWER), finish_reason="stop", tokens=TokenCounts(completion=5)
        )

    def cancel(self, key: int) -> None:
        pass

    def close(self) -> None:
        pass


def _labeler(engine: ScriptedEngine) -> Labeler:
    settings = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=engine.slots))
    return Labeler(settings, engine_factory=lambda _s: engine)


def test_records_come_back_in_input_order() -> None:
    engine = ScriptedEngine(slots=3)
    paths = [str(p) for p in sorted(PRODUCTS.iterdir())] * 3 + [str(AWKWARD / "truncated.png")]
    records = list(_labeler(engine).label(paths))
    assert [r["path"] for r in records] == paths
    assert [r["status"] for r in records] == ["ok"] * (len(paths) - 1) + ["truncated"]
    assert records[0]["label"]["copy"]["zh"]["title"] == "男士酒红色短袖运动T恤"
    assert records[0]["label"]["category"]["names"]["zh"] == ["服饰与配饰", "服装", "衬衫与上衣"]


def test_window_boundaries_and_failures(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(labeler_module, "WINDOW", 4)
    engine = ScriptedEngine(slots=2)
    bad = str(AWKWARD / "corrupt_header.jpg")
    good = str(PRODUCTS / "ms04-red_main.jpg")
    paths = [bad] * 6 + [good, bad, good] + [bad] * 5
    records = list(_labeler(engine).label(paths))
    assert [r["path"] for r in records] == paths
    assert sum(r["status"] == "ok" for r in records) == 2


def test_only_valid_images_reach_the_engine() -> None:
    engine = ScriptedEngine(slots=2)
    paths = [str(AWKWARD / "bomb_65536x65536.png"), str(PRODUCTS / "wb04-blue-0.jpg")]
    records = list(_labeler(engine).label(paths))
    assert len(engine.seen) == 1  # only the photo; the bomb never reaches the engine
    assert records[0]["status"] == "too_large" and records[0]["sha256"]


def test_language_setting_reaches_schema_and_budget() -> None:
    engine = ScriptedEngine(slots=1)
    settings = Settings(
        engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p")),
        label=LabelSettings(languages=("zh", "en", "ja")),
    )
    lab = Labeler(settings, engine_factory=lambda _s: engine)
    assert lab.job.schema is not None and lab.job.schema["properties"]["copy"]["required"] == ["zh", "en", "ja"]
    assert lab.max_tokens > Labeler(Settings(engine=settings.engine), engine_factory=lambda _s: engine).max_tokens
    budget = lab.engine_settings
    assert budget.sequence_tokens >= lab.max_tokens + budget.image_max_tokens
    assert budget.prefix_tokens >= len(lab.job.prompt.prefix)


def test_prefetch_depth_follows_the_engines_resolved_parallelism() -> None:
    """`--parallel 0` means automatic: the look-ahead uses what the engine chose, not the 0."""
    engine = ScriptedEngine(slots=6)
    pulled = 0
    pulled_at_first_request: list[int] = []

    def paths() -> Iterator[str]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield str(sorted(PRODUCTS.iterdir())[i % 5])

    original = engine.generate

    def generate(requests: Iterable[GenerationRequest]) -> Iterator[Generation]:
        def watched() -> Iterator[GenerationRequest]:
            for request in requests:
                if not pulled_at_first_request:
                    pulled_at_first_request.append(pulled)
                yield request

        return original(watched())

    engine.generate = generate  # type: ignore[method-assign]
    settings = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=0))
    lab = Labeler(settings, engine_factory=lambda _s: engine, loader_threads=1)
    assert len(list(lab.label(paths()))) == 40
    assert pulled_at_first_request[0] >= 2 * 6  # two images ready for each of the engine's 6 slots


def test_run_fingerprint_follows_model_content_not_name_and_size(tmp_path: Path) -> None:
    """Two local models with the same names and sizes but different weights are different runs."""
    from qvl_label.engine import identity as model_identity

    first, second = tmp_path / "a", tmp_path / "b"
    header = b"GGUF" + bytes(17 * 1024 * 1024)  # same metadata, as two fine-tunes of one base quantised alike
    for folder, seed in ((first, 1), (second, 2)):
        folder.mkdir()
        weights = np.random.default_rng(seed).integers(0, 256, 24 * 1024 * 1024, dtype=np.uint8).tobytes()
        (folder / "model.gguf").write_bytes(header + weights)  # every tensor differs, as after fine-tuning
        (folder / "mmproj.gguf").write_bytes(b"GGUF" + bytes(1024))
    assert (first / "model.gguf").stat().st_size == (second / "model.gguf").stat().st_size
    assert model_identity.content_digest(first / "model.gguf") != model_identity.content_digest(second / "model.gguf")

    def fingerprint(folder: Path) -> str:
        settings = Settings(engine=EngineSettings(model_path=folder / "model.gguf", mmproj_path=folder / "mmproj.gguf"))
        return Labeler(settings, engine_factory=lambda _s: ScriptedEngine(1)).run.fingerprint

    assert fingerprint(first) != fingerprint(second)
    assert fingerprint(first) == fingerprint(first)
