"""The engine scheduler on the real llama.cpp engine: many producers, one continuous batch, cancel, close."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from qvl_label import tinymodel
from qvl_label.engine.scheduler import Scheduler, SchedulerClosed

from .test_engine import TITLE_SCHEMA, _engine, _requests


def test_many_producers_share_one_batch_and_get_their_own_answers(
    tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]
) -> None:
    requests = _requests(ten_photos, TITLE_SCHEMA)
    with _engine(tiny_model, n_parallel=1) as engine:
        alone = {r.key: r.text for r in engine.generate(requests)}
    engine = _engine(tiny_model, n_parallel=4, n_ctx=8192)  # room for four beside the prefix
    scheduler = Scheduler(engine)
    results: dict[int, str] = {}

    def producer(part: list) -> None:  # type: ignore[type-arg]
        futures = [(r.key, scheduler.submit(r)) for r in part]
        for key, future in futures:
            generation = future.result(timeout=120)
            assert generation.key == key  # the caller's own key comes back
            results[key] = generation.text

    threads = [threading.Thread(target=producer, args=(requests[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scheduler.close(drain=True)
    engine.close()
    assert engine.admissions_during_decode >= 6  # the producers' requests did share decode steps
    assert results.keys() == alone.keys()
    assert sum(results[k] == alone[k] for k in alone) >= 9  # batch-size-dependent sums may flip one near tie


def test_cancel_and_close(tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]) -> None:
    requests = _requests(ten_photos, TITLE_SCHEMA, max_tokens=400)
    engine = _engine(tiny_model, n_parallel=1)
    scheduler = Scheduler(engine)
    futures = [scheduler.submit(r) for r in requests]
    scheduler.cancel(futures[-1])  # still waiting: dropped before it reaches the engine
    assert futures[-1].cancelled()
    assert futures[0].result(timeout=120).finish_reason in ("stop", "length")
    scheduler.close(drain=False)  # the rest is cancelled, running ones free their cells
    for future in futures[1:]:
        assert future.done()
        if not future.cancelled():
            with contextlib.suppress(CancelledError):
                future.result()
    with pytest.raises(SchedulerClosed):
        scheduler.submit(requests[0])
    engine.close()
