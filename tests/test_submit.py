"""Labeler.submit, the per-item path of every front end: sharing, reuse, names and cancellation (fake engines)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import wait
from pathlib import Path

from PIL import Image

from qvl_label.engine.protocol import EngineInfo, Generation, GenerationRequest, Idle
from qvl_label.pipeline.labeler import Labeler
from qvl_label.pipeline.submit import CACHED
from qvl_label.settings import EngineSettings, Settings

from .conftest import PRODUCTS
from .test_labeler import ScriptedEngine, _labeler

PHOTO = sorted(PRODUCTS.iterdir())[0]


class HoldingEngine(ScriptedEngine):
    """Holds every request until it is cancelled (then answers it as cancelled) or `answer` is set."""

    def __init__(self) -> None:
        super().__init__(slots=2)
        self.cancelled: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.answer = threading.Event()
        self.held: list[GenerationRequest] = []

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("fake", "m", "p", 4096, 2, 0, False, 8, 64, False, 1)

    def generate(self, requests: Iterable[GenerationRequest | Idle]) -> Iterator[Generation]:
        for request in requests:
            if not isinstance(request, Idle):
                self.seen.append(request.key)
                self.held.append(request)
                continue
            if self.answer.is_set():
                while self.held:
                    yield self._answer(self.held.pop())
            try:
                key = self.cancelled.get(timeout=0.05)  # the engine's decode step, a cancel between them
            except queue.Empty:
                continue
            self.held = [r for r in self.held if r.key != key]
            yield Generation(key=key, text="", finish_reason="cancelled")

    def cancel(self, key: int) -> None:
        self.cancelled.put(key)


def test_identical_images_share_one_generation_and_a_finished_label_comes_from_the_cache() -> None:
    engine = HoldingEngine()
    with _labeler(engine) as lab:
        _, image = lab.load(str(PHOTO))
        assert not isinstance(image, Exception)
        first = lab.submit(("a", 0), "shirt.jpg", image)
        second = lab.submit(("b", 0), "mine.jpg", image)
        engine.answer.set()
        done, _ = wait([first.record, second.record], timeout=30)
        assert len(done) == 2 and len(engine.seen) == 1  # one generation for both
        made, reused = first.record.result(), second.record.result()
        assert first.source is None and made["path"] == "shirt.jpg" and made["duplicate_of"] is None
        assert second.source == ("a", 0) and reused["path"] == "mine.jpg"
        assert reused["duplicate_of"]["path"] == "shirt.jpg" and reused["label"] == made["label"]
        assert made["status"] == "ok"
        third = lab.submit(("c", 0), "later.jpg", image)  # an ok label is cached: no generation at all
        assert third.source == CACHED and third.record.result()["duplicate_of"]["path"] == "shirt.jpg"
        assert len(engine.seen) == 1
        for item in (first, second, third):
            lab.release(item)


def test_a_generation_is_cancelled_only_when_nobody_waits_for_it() -> None:
    engine = HoldingEngine()
    with _labeler(engine) as lab:
        _, image = lab.load(str(PHOTO))
        assert not isinstance(image, Exception)
        first = lab.submit(("a", 0), "a.jpg", image)
        second = lab.submit(("b", 0), "b.jpg", image)
        lab.release(first)  # the other request still waits: the generation goes on
        assert engine.cancelled.empty() and not second.record.done()
        lab.release(second)
        # concurrent.futures.wait is not woken by Future.cancel(); done callbacks are
        ended = {"a": threading.Event(), "b": threading.Event()}
        first.record.add_done_callback(lambda _: ended["a"].set())
        second.record.add_done_callback(lambda _: ended["b"].set())
        assert ended["a"].wait(30) and ended["b"].wait(30)
        assert first.record.cancelled() and second.record.cancelled()


class GarbledEngine(HoldingEngine):
    """Answers with text that is no label: a failed record, which the cache does not keep."""

    @staticmethod
    def _answer(request: GenerationRequest) -> Generation:
        return Generation(key=request.key, text="{not json", finish_reason="stop")


def test_a_batch_run_reuses_a_failed_label_for_identical_bytes_and_a_server_retry_gets_a_new_try() -> None:
    engine = GarbledEngine()
    with _labeler(engine) as lab:
        _, image = lab.load(str(PHOTO))
        assert not isinstance(image, Exception)
        first = lab.submit(("a", 0), "a.jpg", image)
        engine.answer.set()
        made = first.record.result(timeout=30)
        assert made["status"] != "ok"
        # a batch run: not from the cache (failures are not cached), not a new try
        again = lab.submit(("b", 0), "b.jpg", image, reuse_failures=True)
        reused = again.record.result(timeout=30)
        assert again.source == ("a", 0) and len(engine.seen) == 1
        assert reused["path"] == "b.jpg" and reused["status"] == made["status"]
        assert reused["duplicate_of"]["path"] == "a.jpg"
        retry = lab.submit(("c", 0), "a.jpg", image)  # a server client sending it again: a new try
        assert retry.record.result(timeout=30)["duplicate_of"] is None and len(engine.seen) == 2
        for item in (first, again, retry):
            lab.release(item)


def test_a_similar_photo_waits_for_the_generation_in_flight(tmp_path: Path) -> None:
    similar = tmp_path / "recompressed.jpg"
    Image.open(PHOTO).convert("RGB").save(similar, quality=70)  # other bytes, the same picture
    engine = HoldingEngine()
    settings = Settings(engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p"), n_parallel=2))
    with Labeler(settings, engine_factory=lambda _s: engine, near_dup_distance=6) as lab:
        _, image = lab.load(str(PHOTO))
        _, copy = lab.load(str(similar))
        assert not isinstance(image, Exception) and not isinstance(copy, Exception)
        assert image.sha256 != copy.sha256
        first = lab.submit(("a", 0), "a.jpg", image)
        second = lab.submit(("b", 0), "b.jpg", copy)
        engine.answer.set()
        made, reused = first.record.result(timeout=30), second.record.result(timeout=30)
        assert len(engine.seen) == 1 and second.source == ("a", 0)
        assert reused["path"] == "b.jpg" and reused["label"] == made["label"]
        assert reused["duplicate_of"]["path"] == "a.jpg" and reused["duplicate_of"]["match"] == "near"
