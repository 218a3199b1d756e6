"""Property: the real Labeler gives exactly one record per input path, whatever the order, duplicates and outcomes."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qvl_label.engine.protocol import EngineInfo, Generation, GenerationRequest, Idle, TokenCounts
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, Settings
from qvl_label.store.cache import LabelCache

from .conftest import AWKWARD, PRODUCTS, sample_answer

ANSWER_TEXT = json.dumps(sample_answer(("zh",)))
# What the scripted engine can do with one image: each model-side outcome the record distinguishes.
OUTCOMES = {
    "ok": ("stop", ANSWER_TEXT, None),
    "invalid_output": ("stop", json.dumps({"category": 5}), None),
    "unparseable_output": ("stop", "not json {", None),
    "truncated_output": ("length", '{"category": {"top": "Appar', None),
    "engine_error": ("error", "", "llama_decode failed (-1)"),
}
# Files that never reach the model, with the status their record must carry.
BAD_FILES = {
    "corrupt_header.jpg": "corrupt",
    "truncated.png": "truncated",
    "bomb_65536x65536.png": "too_large",
}


class OutcomeEngine:
    """Holds up to `slots` requests, finishes them in a shuffled order, with an outcome chosen per image."""

    def __init__(self, slots: int, order_seed: int, outcome_of: dict[str, str]) -> None:
        self.slots = slots
        self.rng = random.Random(order_seed)
        self.outcome_of = outcome_of
        self.sent: list[str] = []

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("fake", "m", "p", 4096, self.slots, 0, False, 8, 64, False, 1)

    def outcome(self, request: GenerationRequest) -> str:
        return self.outcome_of[hashlib.sha256(request.image.rgb).hexdigest()]

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
        held: list[GenerationRequest] = []
        for request in requests:
            if isinstance(request, Idle):  # nothing new: a decode step finishes one held request
                if held:
                    self.rng.shuffle(held)
                    yield self._answer(held.pop())
                continue
            held.append(request)
            if len(held) == self.slots:
                self.rng.shuffle(held)
                yield self._answer(held.pop())
        self.rng.shuffle(held)
        while held:
            yield self._answer(held.pop())

    def _answer(self, request: GenerationRequest) -> Generation:
        name = self.outcome(request)
        self.sent.append(name)
        reason, text, error = OUTCOMES[name]
        return Generation(
            key=request.key, text=text, finish_reason=reason, tokens=TokenCounts(completion=5), error=error
        )

    def cancel(self, key: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Distinct photos, their half-size re-encodings (near duplicates), byte copies, and files that fail to load."""
    folder = tmp_path_factory.mktemp("pool")
    photos = sorted(PRODUCTS.iterdir())[:4]
    near = []
    copies = []
    for photo in photos:
        with Image.open(photo) as im:
            small = im.convert("RGB").resize((im.width // 2, im.height // 2))
            target = folder / f"{photo.stem}-half.png"
            small.save(target)
            near.append(target)
        copy = folder / f"{photo.stem}-copy{photo.suffix}"
        copy.write_bytes(photo.read_bytes())
        copies.append(copy)
    bad = [AWKWARD / name for name in BAD_FILES]
    missing = [folder / "gone.jpg"]
    text = folder / "notes.jpg"
    text.write_text("not an image")
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    return {"photos": photos, "near": near, "copies": copies, "bad": [*bad, text, empty, *missing]}


def _expected_load_failure(path: Path) -> str | None:
    if path.name in BAD_FILES:
        return BAD_FILES[path.name]
    return {"notes.jpg": "not_an_image", "empty.png": "empty_file", "gone.jpg": "not_found"}.get(path.name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(st.tuples(st.sampled_from(["photos", "near", "copies", "bad"]), st.integers(0, 6)), max_size=24),
    slots=st.integers(1, 4),
    order_seed=st.integers(0, 2**16),
    outcomes=st.lists(st.sampled_from(sorted(OUTCOMES)), min_size=8, max_size=8),
    near_dup=st.booleans(),
)
def test_one_record_per_path_whatever_happens(
    pool: dict[str, list[Path]],
    picks: list[tuple[str, int]],
    slots: int,
    order_seed: int,
    outcomes: list[str],
    near_dup: bool,
) -> None:
    paths = [pool[group][index % len(pool[group])] for group, index in picks]
    # One outcome per distinct image the model can see: each photo and each near copy.
    outcome_of: dict[str, str] = {}
    for i, photo in enumerate([*pool["photos"], *pool["near"]]):
        for budget_rgb in _prepared_digests(photo):
            outcome_of[budget_rgb] = outcomes[i % len(outcomes)]
    engine = OutcomeEngine(slots, order_seed, outcome_of)
    settings_ = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=slots))
    labeler = Labeler(
        settings_, engine_factory=lambda _s: engine, cache=LabelCache(None), near_dup_distance=8 if near_dup else None
    )
    with labeler:
        records = list(labeler.label([str(p) for p in paths]))

    assert [r["path"] for r in records] == [str(p) for p in paths]
    # A path may occur several times and its later records may reuse a near copy's label, so a
    # reused record is compared with the record its source got from the model in this run.
    originals = {r["path"]: r for r in records if r["duplicate_of"] is None}
    for path, record in zip(paths, records, strict=True):
        expected_failure = _expected_load_failure(path)
        if expected_failure is not None:
            assert record["status"] == expected_failure, record
            continue
        assert record["status"] in OUTCOMES, record
        source = record["duplicate_of"]
        if source is None:
            assert record["status"] == engine.outcome_of[_prepared_digest(path)]
        else:  # a reused label carries its source's status, and the source is in this run
            assert source["path"] in originals
            assert originals[source["path"]]["status"] == record["status"]
            assert source["match"] in ("identical", "near")


_DIGESTS: dict[Path, str] = {}


def _prepared_digest(path: Path) -> str:
    """sha256 of the pixels the Labeler prepares for the model (the defaults' image budget)."""
    if path not in _DIGESTS:
        from qvl_label.pipeline.images import load_image
        from qvl_label.settings import DEFAULT_IMAGE_MAX_TOKENS, DEFAULT_IMAGE_MIN_TOKENS

        loaded = load_image(path, DEFAULT_IMAGE_MIN_TOKENS, DEFAULT_IMAGE_MAX_TOKENS)
        _DIGESTS[path] = hashlib.sha256(loaded.prepared.rgb).hexdigest()
    return _DIGESTS[path]


def _prepared_digests(path: Path) -> list[str]:
    return [_prepared_digest(path)]


def test_near_duplicate_of_a_failed_original_gets_its_own_record(pool: dict[str, list[Path]]) -> None:
    """The case the review found: the original finishes with a failure before its near copy arrives."""
    photo, half = pool["photos"][0], pool["near"][0]
    others = pool["photos"][1:]
    paths = [photo, *others, half]
    outcome_of = {_prepared_digest(p): "truncated_output" for p in [photo, *others]}
    outcome_of[_prepared_digest(half)] = "ok"
    engine = OutcomeEngine(1, 0, outcome_of)
    settings_ = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=1))
    with Labeler(settings_, engine_factory=lambda _s: engine, cache=LabelCache(None), near_dup_distance=8) as lab:
        records = list(lab.label([str(p) for p in paths]))
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert records[-1]["status"] == "ok" and records[-1]["duplicate_of"] is None


def test_a_lost_record_is_an_internal_error_not_silence(pool: dict[str, list[Path]]) -> None:
    """An engine that never answers one request: the Labeler says so instead of ending short."""
    from qvl_label.errors import InternalError

    class DroppingEngine(OutcomeEngine):
        def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
            given = 0
            for request in requests:
                if isinstance(request, Idle):
                    if given == 3:
                        return  # a broken engine: it ends while one request is still open
                    continue
                given += 1
                if given != 2:  # the second request it is given is never answered
                    yield self._answer(request)

    photos = pool["photos"][:3]
    engine = DroppingEngine(1, 0, {_prepared_digest(p): "ok" for p in photos})
    settings_ = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=1))
    lab = Labeler(settings_, engine_factory=lambda _s: engine, cache=LabelCache(None))
    with lab, pytest.raises(InternalError, match="1 of 3 images"):
        list(lab.label([str(p) for p in photos]))
