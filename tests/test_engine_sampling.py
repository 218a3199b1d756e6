"""The engine's two ways of choosing greedy tokens agree: llama.cpp's backend sampler and the host's arg-max."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qvl_label import tinymodel
from qvl_label.engine import sampling
from qvl_label.engine.llama import LlamaCppEngine
from qvl_label.engine.protocol import GenerationRequest
from qvl_label.engine.sampling import Sampling
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import label_prompt
from qvl_label.labeling.schema import answer_schema
from qvl_label.pipeline.images import load_image
from qvl_label.settings import EngineSettings

TITLE_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 40}},
    "required": ["title"],
    "additionalProperties": False,
}


def _requests(paths: list[Path], schema: dict | None, max_tokens: int) -> list[GenerationRequest]:
    config = load_config()
    prompt = label_prompt(("en",), config, config.channel("generic"))
    return [
        GenerationRequest(i, load_image(p, 8, 64).prepared, prompt.prefix, prompt.suffix, schema, max_tokens)
        for i, p in enumerate(paths)
    ]


def _engine(model: tinymodel.GeneratedModel, backend: bool) -> LlamaCppEngine:
    settings = EngineSettings(
        model_path=model.model, mmproj_path=model.mmproj, n_ctx=8192, image_max_tokens=64, n_parallel=4,
        backend_sampling=backend,
    )  # fmt: skip
    return LlamaCppEngine(settings)


def test_device_and_host_choose_the_same_tokens_on_the_same_logits(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At every decode step, the token the backend sampler chose for each row is the host's arg-max of that row."""
    engine = _engine(tiny_model, backend=True)
    compared: list[int] = []
    mismatches: list[tuple[int, int, int]] = []
    choose = engine._choose_tokens

    def checking(live, outputs):  # type: ignore[no-untyped-def]
        device = engine._device_best(outputs)
        assert device is not None, "llama.cpp chose no token on the device"
        host = engine._step_logits(len(live), outputs).argmax(axis=1)
        compared.append(len(live))
        mismatches.extend((row, int(d), int(h)) for row, (d, h) in enumerate(zip(device, host, strict=True)) if d != h)
        return choose(live, outputs)

    monkeypatch.setattr(engine, "_choose_tokens", checking)
    with engine:
        assert engine._backend_sampling
        results = list(engine.generate(_requests(product_paths[:4], None, max_tokens=40)))
    assert all(r.error is None for r in results)
    assert sum(compared) >= 100 and max(compared) == 4  # many rows, four sequences per step at first
    assert mismatches == []


def test_answers_are_the_same_with_and_without_backend_sampling(
    tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]
) -> None:
    """Greedy, under the grammar and without: the device path writes what the host path writes."""
    for schema in (TITLE_SCHEMA, None):
        requests = _requests(ten_photos[:6], schema, max_tokens=40)
        answers = {}
        for backend in (False, True):
            with _engine(tiny_model, backend) as engine:
                assert engine._backend_sampling == backend
                answers[backend] = {r.key: r.text for r in engine.generate(requests)}
                if schema is not None:
                    assert engine.grammar_full_passes > 0  # rejected rows were masked on this path too
        assert len(set(answers[True].values())) == 6
        assert answers[True] == answers[False]


def test_masks_of_many_rows_in_one_call_match_one_at_a_time(tiny_model: tinymodel.GeneratedModel) -> None:
    """llguidance's batch masks (on its pool without the GIL, or on the engine thread) are each row's own, in order."""
    from qvl_label.engine.constraints import LlguidanceConstraint, LlguidanceFactory

    with _engine(tiny_model, backend=False) as engine:
        factory = engine.constraints
        assert isinstance(factory, LlguidanceFactory)
        n_vocab = engine._n_vocab
        constraints = [factory.new(TITLE_SCHEMA) for _ in range(3)]
        # three grammar states: the start, inside the title string, and at its end
        assert constraints[1].forced() and constraints[2].forced()  # `{"title":"`
        assert all(isinstance(c, LlguidanceConstraint) for c in constraints)
        (quote,) = engine.tokenize('"')
        constraints[2].accept(quote)
        # One thread: every mask on the calling thread. Two: the executor's pool (this machine
        # may have too few cores to choose it by itself).
        for threads in (1, 2):
            factory.mask_threads = threads
            batch = factory.allowed_rows(constraints)
            assert (factory._executor is not None) == (threads == 2)
            for row, constraint in enumerate(constraints):
                one = np.zeros(n_vocab, dtype=np.float32)
                constraint.mask(one)
                assert np.array_equal(batch[row], one == 0), (threads, row)
            assert not np.array_equal(batch[0], batch[1]) and not np.array_equal(batch[1], batch[2])
        # Costly rows only go to the pool: a cheap one in between stays in its own row.
        bits = factory.allowed_bits(constraints, [True, False, True])
        assert np.array_equal(np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :n_vocab], batch)


def test_answers_are_the_same_with_masks_only(
    qwen_vocab_model: tinymodel.GeneratedModel, ten_photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full label schema, the real vocabulary: next-best checks and the probes change no token against masks alone.

    Three runs: the default (probes choose which rejected rows look for next-best tokens), every
    rejected row looking for them, and none (plain masked arg-max from the bits, the reference).
    """
    config = load_config()
    schema = answer_schema(("en",), config, config.channel("generic"))
    requests = _requests(ten_photos[:6], schema, max_tokens=120)
    answers, masks = {}, {}
    for variant in ("default", "always", "never"):
        with monkeypatch.context() as patched:
            if variant == "always":
                patched.setattr(Sampling, "_in_free_text", lambda self, constraint: True)
            if variant == "never":
                patched.setattr(sampling, "candidate_order", lambda row, best=None, gap=None: None)
            with _engine(qwen_vocab_model, backend=False) as engine:
                answers[variant] = {r.key: r.text for r in engine.generate(requests)}
                masks[variant] = engine.grammar_full_passes
    assert answers["always"] == answers["default"] == answers["never"]
    assert masks["always"] < masks["never"] and masks["default"] < masks["never"]  # rows answered without a mask
