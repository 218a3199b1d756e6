"""The real llama.cpp engine on the generated tiny Qwen3-VL: grammar, prefix reuse, budget, parallel slots."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qvl_label import tinymodel
from qvl_label.engine.llama import LlamaCppEngine
from qvl_label.engine.protocol import GenerationRequest, PreparedImage
from qvl_label.errors import EngineLoadError
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import Prompt, label_prompt
from qvl_label.labeling.schema import validate
from qvl_label.pipeline.images import load_image
from qvl_label.settings import EngineSettings

SMALL_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "colors": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
    },
    "required": ["title", "colors"],
    "additionalProperties": False,
}


# Long enough for answers to diverge: the first characters of random-weight text are often alike.
TITLE_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 40}},
    "required": ["title"],
    "additionalProperties": False,
}


def _prompt() -> Prompt:
    config = load_config()
    return label_prompt(("en",), config, config.channel("generic"))


def _engine(model: tinymodel.GeneratedModel, **overrides: object) -> LlamaCppEngine:
    options: dict[str, object] = {"n_ctx": 4096, "image_max_tokens": 64}
    options.update(overrides)
    return LlamaCppEngine(EngineSettings(model_path=model.model, mmproj_path=model.mmproj, **options))  # type: ignore[arg-type]


def _requests(
    paths: list[Path], schema: dict | None, max_tokens: int = 400, budget: int = 64
) -> list[GenerationRequest]:
    prompt = _prompt()
    return [
        GenerationRequest(
            key=i,
            image=load_image(p, 8, budget).prepared,
            prefix=prompt.prefix,
            suffix=prompt.suffix,
            schema=schema,
            max_tokens=max_tokens,
        )
        for i, p in enumerate(paths)
    ]


def test_settings_take_effect(tiny_model: tinymodel.GeneratedModel) -> None:
    with _engine(tiny_model, n_ctx=3072, threads=1, n_parallel=3) as engine:
        assert llama_cpp.llama_n_ctx(engine._ctx) == 3072
        assert llama_cpp.llama_n_threads(engine._ctx) == 1
        assert llama_cpp.llama_n_seq_max(engine._ctx) == 4
        info = engine.info
        assert (info.n_ctx, info.threads, info.n_parallel) == (3072, 1, 3)
        assert info.image_max_tokens == 64


def test_grammar_is_applied(tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]) -> None:
    """With the schema every answer parses and fits it; without, random weights give no JSON."""
    with _engine(tiny_model) as engine:
        constrained = list(engine.generate(_requests(product_paths, SMALL_SCHEMA)))
        free = list(engine.generate(_requests(product_paths[:2], None, max_tokens=40)))
    assert len(constrained) == len(product_paths)
    for result in constrained:
        assert result.error is None and result.finish_reason == "stop"
        answer = json.loads(result.text)  # strict: no raw control characters inside strings
        assert validate(answer, SMALL_SCHEMA) == []  # maxLength counted in decoded characters
    for result in free:
        with pytest.raises(ValueError):
            json.loads(result.text)


def test_prefix_evaluated_once(tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]) -> None:
    with _engine(tiny_model) as engine:
        results = sorted(engine.generate(_requests(product_paths, SMALL_SCHEMA)), key=lambda r: r.key)
        assert engine.prefix_evaluations == 1
    assert results[0].tokens.prefix_evaluated > 100
    for later in results[1:]:
        assert later.tokens.prefix_evaluated == 0
        assert later.tokens.prefix_reused == results[0].tokens.prefix_evaluated
        # per image only the image, its two delimiters and the short suffix are evaluated
        suffix_bytes = len(_prompt().suffix.encode())
        assert later.tokens.prompt_evaluated <= later.tokens.image + 2 + suffix_bytes


@pytest.mark.parametrize("budget", [16, 64, 144])
def test_image_token_budget(tiny_model: tinymodel.GeneratedModel, product_paths: list[Path], budget: int) -> None:
    image = load_image(product_paths[0], 8, budget).prepared
    expected = (image.width // 32) * (image.height // 32)
    assert expected <= budget
    with _engine(tiny_model, image_min_tokens=8, image_max_tokens=budget) as engine:
        (result,) = engine.generate(_requests(product_paths[:1], SMALL_SCHEMA, budget=budget))
    assert result.tokens.image == expected


def test_answers_depend_on_the_photo(tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]) -> None:
    """The generated model must tell photos apart, or order and mix-up tests below could not fail."""
    with _engine(tiny_model, n_parallel=1) as engine:
        answers = {r.key: r.text for r in engine.generate(_requests(ten_photos, TITLE_SCHEMA))}
    assert len(answers) == 10 and len(set(answers.values())) == 10


@pytest.mark.parametrize("piece", [0, 16], ids=["prefilled-whole", "prefilled-in-pieces"])
def test_parallel_matches_sequential(tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path], piece: int) -> None:
    """Each photo gets its own answer whether it runs alone or beside others: a mix-up of sequences shows.

    With pieces, the images admitted while others decode are prefilled 16 embeddings at a time
    between decode steps (their positions computed here, not by mtmd's helper).
    """
    requests = _requests(ten_photos, TITLE_SCHEMA)
    with _engine(tiny_model, n_parallel=1) as engine:
        sequential = {r.key: r.text for r in engine.generate(requests)}
    # 8192: room for four sequences beside the 3,375-token prefix (in 4096 they ran one at a time)
    with _engine(tiny_model, n_parallel=4, n_ctx=8192, prefill_piece_tokens=piece) as engine:
        parallel = {r.key: r.text for r in engine.generate(requests)}
        assert engine.admissions_during_decode >= 6  # sequences did run side by side
        assert (engine.admission_pieces > 0) == (piece > 0)
    assert sequential.keys() == parallel.keys() == set(range(10))
    assert len(set(sequential.values())) == 10
    # llama.cpp may sum in a batch-size-dependent order, so a near tie could flip one greedy
    # choice; at most one of the ten may differ, and a swapped pair of answers never passes.
    same = [k for k in sequential if sequential[k] == parallel[k]]
    assert len(same) >= 9, (sequential, parallel)


def test_admission_in_pieces_interleaves_with_decode_steps(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image admitted while another sequence decodes is prefilled a piece per decode step."""
    # every answer runs to 60 tokens: the first keeps decoding while the second is admitted
    engine = _engine(tiny_model, n_parallel=2, n_ctx=8192, prefill_piece_tokens=16, ignore_eos=True)
    seen: list[tuple[int, int]] = []  # (sequence being admitted, decode steps so far) at each piece
    advance = engine._advance

    def recording(slot):  # type: ignore[no-untyped-def]
        seen.append((slot.seq_id, engine.decode_steps))
        return advance(slot)

    monkeypatch.setattr(engine, "_advance", recording)
    with engine:
        results = list(engine.generate(_requests(product_paths[:3], None, max_tokens=60)))
    assert all(r.error is None for r in results)
    # the 64-embedding image alone takes 4 pieces; with tokenizing, encoding and the text around it, more
    first = [steps for seq, steps in seen if seq == seen[0][0]]
    assert len(first) >= 7, seen
    assert all(later > earlier for earlier, later in itertools.pairwise(first)), seen
    assert engine.longest_stall_seconds < engine.decode_stall_seconds


def test_a_sequence_cancelled_during_its_admission_frees_its_cells(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = _requests(product_paths[:3], TITLE_SCHEMA)
    with _engine(tiny_model, n_parallel=1) as engine:
        alone = {r.key: r.text for r in engine.generate(requests)}
    engine = _engine(tiny_model, n_parallel=2, n_ctx=8192, prefill_piece_tokens=16)
    advance = engine._advance
    admitted: list[int] = []

    def cancel_midway(slot):  # type: ignore[no-untyped-def]
        if slot.request.key == 1 and engine.admission_pieces == 3:
            admitted.append(slot.seq_id)
            engine.cancel(1)
        return advance(slot)

    monkeypatch.setattr(engine, "_advance", cancel_midway)
    with engine:
        results = {r.key: r for r in engine.generate(requests)}
        assert admitted, "request 1 was not admitted in pieces"
        assert results[1].finish_reason == "cancelled"
        assert llama_cpp.llama_memory_seq_pos_max(engine._memory, admitted[0]) == -1
    assert results[0].text == alone[0] and results[2].text == alone[2]


def test_failing_slot_does_not_disturb_others(tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]) -> None:
    requests = _requests(product_paths[:3], SMALL_SCHEMA)
    broken = GenerationRequest(
        key=99,
        image=PreparedImage(rgb=b"\x00" * 10, width=64, height=64),
        prefix=requests[0].prefix,
        suffix=requests[0].suffix,
        schema=SMALL_SCHEMA,
        max_tokens=100,
    )
    with _engine(tiny_model, n_parallel=2) as engine:
        alone = {r.key: r.text for r in engine.generate(requests)}
        mixed = {r.key: r for r in engine.generate([requests[0], broken, requests[1], requests[2]])}
    assert mixed[99].error is not None and mixed[99].finish_reason == "error"
    for key, text in alone.items():
        assert mixed[key].error is None
        assert mixed[key].text == text


def test_on_text_gets_every_byte_and_one_that_raises_ends_only_its_sequence(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    """The streaming hook: each step's new bytes, in order; a consumer that fails costs only its own answer."""
    requests = _requests(product_paths[:3], SMALL_SCHEMA)
    pieces: dict[int, list[bytes]] = {0: [], 2: []}

    def failing(piece: bytes) -> None:
        raise RuntimeError("the consumer is gone")

    hooked = [
        dataclasses.replace(requests[0], on_text=pieces[0].append),
        dataclasses.replace(requests[1], on_text=failing),
        dataclasses.replace(requests[2], on_text=pieces[2].append),
    ]
    with _engine(tiny_model, n_parallel=2) as engine:
        alone = {r.key: r.text for r in engine.generate(requests)}
        results = {r.key: r for r in engine.generate(hooked)}
    assert results[1].finish_reason == "error" and "on_text callback failed" in (results[1].error or "")
    for key in (0, 2):
        assert results[key].error is None and results[key].text == alone[key]
        assert len(pieces[key]) > 1 and b"".join(pieces[key]).decode() == alone[key]


def test_output_length_is_bounded(tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]) -> None:
    with _engine(tiny_model) as engine:
        (result,) = engine.generate(_requests(product_paths[:1], SMALL_SCHEMA, max_tokens=7))
    assert result.finish_reason == "length"
    assert result.tokens.completion == 7


def test_context_too_small_is_a_per_image_error(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    with _engine(tiny_model, n_ctx=1536) as engine:
        (result,) = engine.generate(_requests(product_paths[:1], SMALL_SCHEMA))
    assert result.error is not None and "prefix" in result.error and "does not fit" in result.error
    with _engine(tiny_model, n_ctx=8192) as engine:
        (result,) = engine.generate(_requests(product_paths[:1], SMALL_SCHEMA, max_tokens=6000))
    assert result.error is not None and "output tokens does not fit" in result.error


def test_missing_files_fail_to_load(tmp_path: Path, tiny_model: tinymodel.GeneratedModel) -> None:
    with pytest.raises(EngineLoadError):
        LlamaCppEngine(EngineSettings(model_path=tmp_path / "nope.gguf", mmproj_path=tiny_model.mmproj))
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(EngineLoadError):
        LlamaCppEngine(EngineSettings(model_path=bogus, mmproj_path=tiny_model.mmproj))


def test_automatic_parallelism_and_context_size(tiny_model: tinymodel.GeneratedModel) -> None:
    settings = EngineSettings(
        model_path=tiny_model.model, mmproj_path=tiny_model.mmproj, n_parallel=0,
        prefix_tokens=4000, sequence_tokens=1000, image_max_tokens=64,
    )  # fmt: skip
    with LlamaCppEngine(settings) as engine:
        info = engine.info
        assert 1 <= info.n_parallel <= 8
        assert info.n_ctx >= 4000 + info.n_parallel * 1000
        assert llama_cpp.llama_n_seq_max(engine._ctx) == info.n_parallel + 1
        assert engine.kv_bytes_per_token() == 2 * 3 * 2 * 16 * 2  # K+V, 3 layers, 2 kv heads of 16, f16
        assert engine.run_summary() == f"{info.n_parallel} sequences in parallel (chosen from free memory)"


def test_admission_control_keeps_sequences_within_the_context(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    """Four slots but room for about two answers at once: nothing fails, all finish."""
    requests = _requests(product_paths[:4], None, max_tokens=300)
    need = requests[0].image.width // 32 * (requests[0].image.height // 32) + 2 + len(requests[0].suffix) + 300
    with _engine(tiny_model, n_parallel=4, n_ctx=4096 + 2 * need + 64) as engine:
        results = list(engine.generate(requests))
    assert len(results) == 4 and all(r.error is None for r in results)


def test_ignore_eos_runs_every_answer_to_max_tokens(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    with _engine(tiny_model, ignore_eos=True, n_parallel=2) as engine:
        results = list(engine.generate(_requests(product_paths[:3], None, max_tokens=50)))
    assert [r.tokens.completion for r in results] == [50, 50, 50]
    assert all(r.finish_reason == "length" for r in results)


@pytest.mark.parametrize("grammar", ["llguidance", "gbnf"])
def test_greedy_checks_the_grammar_against_the_best_token_first(
    grammar: str, tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    with _engine(tiny_model, grammar_engine=grammar) as engine:
        assert engine.info.grammar_engine == grammar
        results = list(engine.generate(_requests(product_paths[:2], SMALL_SCHEMA)))
        assert all(r.finish_reason == "stop" for r in results)
        if grammar == "gbnf":  # every token is sampled, and each answer ends with a sampled end token
            sampled = sum(r.tokens.completion for r in results) + len(results)
            assert all(r.tokens.forced == 0 for r in results)
        else:  # forced tokens are appended unsampled; a complete answer ends without sampling an end token
            sampled = sum(r.tokens.completion - r.tokens.forced for r in results)
            assert all(r.tokens.forced > 0 for r in results)
        assert engine.grammar_checks == sampled
        assert 0 < engine.grammar_full_passes <= engine.grammar_checks
    for result in results:
        json.loads(result.text, strict=False)


@pytest.mark.parametrize("grammar", ["llguidance", "gbnf"])
def test_string_lengths_hold_in_decoded_characters(
    grammar: str, tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    """Sampled random-weight text tries every byte: the grammar still bounds decoded lengths and bars controls."""
    requests = _requests(product_paths, SMALL_SCHEMA)
    for seed in range(4):
        with _engine(tiny_model, temperature=1.5, seed=seed, n_parallel=5, grammar_engine=grammar) as engine:
            for result in engine.generate(requests):
                assert result.finish_reason == "stop", result
                answer = json.loads(result.text)
                assert validate(answer, SMALL_SCHEMA) == [], (answer, result.text)
                assert len(answer["title"]) <= 12
                assert not any(ord(c) < 0x20 or c == "\x7f" for c in answer["title"])


def _full_schema() -> dict:
    from qvl_label.labeling.schema import answer_schema

    config = load_config()
    return answer_schema(("en",), config, config.channel("generic"))


def _inside_a_string(json_prefix: str) -> bool:
    """Whether a JSON text cut here is inside a string value (escaped quotes do not end one)."""
    inside = escaped = False
    for char in json_prefix:
        if escaped:
            escaped = False
        elif inside and char == "\\":
            escaped = True
        elif char == '"':
            inside = not inside
    return inside


def test_inside_a_string_reads_escapes() -> None:
    assert _inside_a_string('{"a":"x')
    assert _inside_a_string('{"a":"x\\"y')  # an escaped quote does not close the string
    assert not _inside_a_string('{"a":"x\\\\"')  # an escaped backslash, then the closing quote
    assert not _inside_a_string('{"a":"x",')


@pytest.mark.parametrize("schema_name", ["title", "full"])
def test_jump_forward_writes_what_decoding_every_token_writes(
    schema_name: str, tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]
) -> None:
    """Greedy, one sequence at a time: the same answers, with fewer decode steps.

    (With several sequences per step the batch's shape changes how llama.cpp sums, so a near
    tie can flip either way, as between --parallel 1 and 4; scripts/measure_jump_forward.py.)
    """
    schema = TITLE_SCHEMA if schema_name == "title" else _full_schema()
    photos = ten_photos[:4]
    runs = {}
    for jump_forward in (True, False):
        with _engine(tiny_model, n_ctx=12288, n_parallel=1, jump_forward=jump_forward) as engine:
            # random text is rich in 4-byte characters, a token per byte in this vocabulary: room beyond the bound
            budget = 3000 if schema_name == "title" else 6000
            results = sorted(engine.generate(_requests(photos, schema, max_tokens=budget)), key=lambda r: r.key)
            runs[jump_forward] = (results, engine.decode_steps)
    (with_jf, steps_jf), (without, steps_plain) = runs[True], runs[False]
    # A forced run is appended in one llama_decode batch, whose shape changes how llama.cpp sums:
    # on a near tie of the random model's logits the next free-text token can flip. That happened
    # 1,320 bytes into a random string of the full schema, and on another machine (2026-11-26)
    # 1,796 bytes in, after escaped quotes: at most one answer may part, and only late, inside
    # free text; the rest are byte-identical.
    same = [a.text == b.text for a, b in zip(with_jf, without, strict=True)]
    assert sum(same) >= len(same) - (1 if schema_name == "full" else 0)
    for a, b in zip(with_jf, without, strict=True):
        if a.text != b.text:
            parted = next(i for i, (x, y) in enumerate(zip(a.text, b.text, strict=False)) if x != y)
            assert parted > 500 and _inside_a_string(a.text[:parted])
    assert [r.tokens.completion for r, alike in zip(with_jf, same, strict=True) if alike] == [
        r.tokens.completion for r, alike in zip(without, same, strict=True) if alike
    ]
    forced = sum(r.tokens.forced for r in with_jf)
    assert forced > 0 and all(r.tokens.forced == 0 for r in without)
    # every forced token is a decode step saved, less the steps that carry several tokens at once
    assert steps_jf < steps_plain
    assert steps_plain - steps_jf <= forced
    for result in with_jf:
        assert result.finish_reason == "stop"
        assert validate(json.loads(result.text), schema) == []


def test_full_answers_parse_validate_and_decide_in_schema_order(
    tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]
) -> None:
    """llguidance with jump-forward, several sequences: the category first, a template before its fields."""
    schema = _full_schema()
    # Random text is rich in 4-byte characters, a token per byte in this vocabulary: 3,000 tokens
    # cut answers off on one machine (2026-11-26); 6,000 each, and room for four beside the prefix.
    with _engine(tiny_model, n_ctx=28672, n_parallel=4) as engine:
        results = list(engine.generate(_requests(ten_photos[:6], schema, max_tokens=6000)))
    for result in results:
        assert result.finish_reason == "stop", result
        answer = json.loads(result.text)  # compact: no whitespace outside strings
        assert validate(answer, schema) == []
        assert list(answer) == list(schema["properties"])
        assert next(iter(answer["details"])) == "template"
        assert result.text.startswith('{"scene":"')


def test_forced_runs_longer_than_the_batch_still_decode(
    tiny_model: tinymodel.GeneratedModel, ten_photos: list[Path]
) -> None:
    """With --batch smaller than a step's tokens, the forced heads go first: the same answers as one batch."""
    schema = _full_schema()
    texts = []
    for n_batch in (16, 2048):
        # 6,000 tokens each, as above, and room for all three beside the prefix
        with _engine(tiny_model, n_ctx=22528, n_parallel=3, n_batch=n_batch) as engine:
            results = sorted(engine.generate(_requests(ten_photos[:3], schema, max_tokens=6000)), key=lambda r: r.key)
        for result in results:
            assert result.error is None and result.finish_reason == "stop", result
            assert validate(json.loads(result.text), schema) == []
        texts.append([r.text for r in results])
    assert texts[0] == texts[1]


def test_auto_grammar_falls_back_to_gbnf_without_llguidance(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qvl_label.engine import constraints

    monkeypatch.setattr(constraints, "llguidance_available", lambda: False)
    with _engine(tiny_model) as engine:
        assert engine.info.grammar_engine == "gbnf"
        (result,) = engine.generate(_requests(product_paths[:1], SMALL_SCHEMA))
    assert result.finish_reason == "stop" and result.tokens.forced == 0
    assert validate(json.loads(result.text), SMALL_SCHEMA) == []
    with pytest.raises(EngineLoadError, match="needs the llguidance package"):
        _engine(tiny_model, grammar_engine="llguidance")
    assert "llguidance is not installed" in constraints.grammar_engine_description()


def test_template_is_named_before_its_fields() -> None:
    """The grammar orders `details` so the model picks the template first, then fills that template's fields."""
    import re

    from qvl_label.engine.grammar import json_grammar
    from qvl_label.labeling.schema import answer_schema

    config = load_config()
    grammar = json_grammar(answer_schema(("zh",), config, config.channel("generic")))
    branches = [line for line in grammar.splitlines() if re.match(r"details-\d+ ::=", line)]
    assert len(branches) == len(config.templates)
    for line in branches:
        keys = re.findall(r"details-\d+-([a-z0-9-]+)-kv", line)
        assert keys[0] == "template", line
    root = next(line for line in grammar.splitlines() if line.startswith("root ::="))
    order = re.findall(r"([a-z0-9-]+)-kv", root)
    assert order[:3] == ["scene", "category", "colors"] and order[-2:] == ["copy", "items"]


# Product copy as a shop writes it, repeated to fill a string to its maxLength.
_COPY_TEXT = {
    "zh": "酒红色圆领短袖T恤，采用柔软透气的纯棉面料，版型修身，适合日常通勤、健身与户外运动，百搭舒适。",
    "en": "A wine-red short-sleeve tee in soft, breathable cotton with a crew neck and a regular fit, "
    "made for everyday wear, the gym and weekend runs. ",
    "ja": "柔らかく通気性のあるコットン素材のクルーネック半袖Tシャツ。普段使いからジムまで快適に着られます。",
    "de": "Weinrotes Kurzarm-T-Shirt aus weicher, atmungsaktiver Baumwolle mit Rundhalsausschnitt "
    "für Alltag und Sport. ",
}


def _maximal(schema: dict, text: str) -> object:
    """The schema's largest answer: every list at maxItems, every string at maxLength of `text`."""
    if "anyOf" in schema:
        return max((_maximal(b, text) for b in schema["anyOf"]), key=lambda v: len(json.dumps(v, ensure_ascii=False)))
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v, ensure_ascii=False).encode()))
    if schema["type"] == "object":
        return {
            name: _maximal(sub, _COPY_TEXT.get(name, text)) for name, sub in schema["properties"].items()
        }  # a copy block's strings are in its own language
    if schema["type"] == "array":
        return [_maximal(schema["items"], text) for _ in range(schema["maxItems"])]
    return (text * (schema["maxLength"] // len(text) + 1))[: schema["maxLength"]]


@pytest.mark.parametrize("languages", [("zh",), ("en",), ("zh", "en", "ja", "de")])
def test_default_output_budget_holds_a_schema_maximal_answer(
    languages: tuple[str, ...], qwen_vocab_model: tinymodel.GeneratedModel
) -> None:
    """The default --max-tokens (derived from the schema) against the largest answers, in the real tokenizer."""
    from qvl_label.labeling.schema import answer_schema, max_answer_tokens

    config = load_config()
    for channel in ("generic", "amazon"):
        schema = answer_schema(languages, config, config.channel(channel))
        budget = max_answer_tokens(schema)
        with _engine(qwen_vocab_model) as engine:
            for filler in ("zh", "en"):  # attributes, path and visible text written in either script
                answer = _maximal(schema, _COPY_TEXT[filler])
                assert validate(answer, schema) == []
                text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
                assert len(engine.tokenize(text)) <= budget, (channel, filler)


def test_realistic_answers_teacher_forced_through_the_grammar(qwen_vocab_model: tinymodel.GeneratedModel) -> None:
    """Real tokenizer: every realistic answer fits the grammar; forced runs are canonical tokens, ~20 % of them."""
    from qvl_label.engine.constraints import LlguidanceFactory
    from qvl_label.labeling.schema import answer_schema

    config = load_config()
    answers = json.loads((Path(__file__).parent / "data" / "realistic_answers.json").read_text())
    with _engine(qwen_vocab_model) as engine:
        factory = engine.constraints
        assert isinstance(factory, LlguidanceFactory)
        for item in answers:
            schema = answer_schema(tuple(item["languages"]), config, config.channel("generic"))
            text = json.dumps(item["answer"], ensure_ascii=False, separators=(",", ":"))
            result = factory.teacher_force(schema, text)
            assert result.tokens == result.canonical == len(engine.tokenize(text))
            assert 0.15 < result.forced / result.tokens < 0.35, (item["name"], result)
            with pytest.raises(ValueError, match="leaves the grammar"):
                factory.teacher_force(schema, text.replace('"colors":[', '"colours":['))


@given(
    values=st.lists(st.sampled_from([-np.inf, -1.5, 0.0, 0.25, 2.0, 7.0]) | st.floats(-30, 30, width=32), max_size=400),
    invalid=st.sets(st.integers(0, 399)),
    limit=st.sampled_from([1, 3, 40]),
)
@example(values=[float(v) for v in range(400)], invalid=set(range(100, 400)), limit=3)  # widen past 64
@settings(max_examples=200, deadline=None)
def test_best_valid_tokens_are_the_full_sorts(values: list[float], invalid: set[int], limit: int) -> None:
    """The partial sort picks exactly what sorting every allowed token would, ties by id, UTF-8 checked."""
    from qvl_label.engine.llama import _Slot

    engine = object.__new__(LlamaCppEngine)
    engine._pieces = {t: (b"\xff" if t in invalid else b"a") for t in range(len(values))}
    logits = np.array(values, dtype=np.float32)
    finite = np.flatnonzero(logits > -np.inf)
    reference = [int(t) for t in finite[np.argsort(-logits[finite], kind="stable")] if t not in invalid][:limit]
    assert engine._best_valid(_Slot(seq_id=1), logits, limit) == reference


def test_a_grammar_failure_ends_only_its_own_sequence(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the grammar engine refuses a token mid-answer, that image is an error; the batch goes on."""
    from qvl_label.engine import constraints

    created: list[constraints.LlguidanceConstraint] = []
    original_init = constraints.LlguidanceConstraint.__init__
    original_accept = constraints.LlguidanceConstraint.accept
    accepted: dict[int, int] = {}

    def init(self: constraints.LlguidanceConstraint, *args: object) -> None:
        original_init(self, *args)  # type: ignore[arg-type]
        created.append(self)

    def accept(self: constraints.LlguidanceConstraint, token: int) -> None:
        accepted[id(self)] = accepted.get(id(self), 0) + 1
        if self is created[0] and accepted[id(self)] == 3:
            raise RuntimeError("the grammar refused a token it had allowed: test")
        original_accept(self, token)

    monkeypatch.setattr(constraints.LlguidanceConstraint, "__init__", init)
    monkeypatch.setattr(constraints.LlguidanceConstraint, "accept", accept)
    with _engine(tiny_model, n_parallel=2) as engine:
        results = {r.key: r for r in engine.generate(_requests(product_paths[:3], SMALL_SCHEMA))}
    assert results[0].finish_reason == "error" and "refused a token" in (results[0].error or "")
    for key in (1, 2):
        assert results[key].finish_reason == "stop", results[key]
        assert validate(json.loads(results[key].text), SMALL_SCHEMA) == []


def test_requests_with_other_instructions_share_one_engine(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    """Interleaved requests with two instruction prefixes (a server's languages): each answer is the
    one that prefix gives alone, and a new prefix waits for the sequences holding the old one."""
    config = load_config()
    english, chinese = (label_prompt((lang,), config, config.channel("generic")) for lang in ("en", "zh"))
    paths = product_paths[:4]

    def requests(prompts: list[Prompt]) -> list[GenerationRequest]:
        return [
            GenerationRequest(i, load_image(p, 8, 64).prepared, pr.prefix, pr.suffix, TITLE_SCHEMA, 40)
            for i, (p, pr) in enumerate(zip(paths, prompts, strict=True))
        ]

    mixed_prompts = [english, chinese, english, chinese]
    with _engine(tiny_model, n_parallel=1) as engine:
        alone = {r.key: r.text for r in engine.generate(requests(mixed_prompts))}
        longest = max(len(engine.tokenize(p.prefix)) for p in (english, chinese))
    need = LlamaCppEngine._need(requests(mixed_prompts)[0])
    # Room for one prefix and two sequences, not for two prefixes at once.
    with _engine(tiny_model, n_parallel=2, n_ctx=longest + 2 * need + 16) as engine:
        results = list(engine.generate(requests(mixed_prompts)))
        assert engine.prefix_evaluations == 4  # en, zh, en, zh
    assert [r.error for r in results] == [None] * 4
    assert {r.key: r.text for r in results} == alone


def test_a_request_may_choose_its_own_temperature(
    tiny_model: tinymodel.GeneratedModel, product_paths: list[Path]
) -> None:
    prompt = _prompt()
    image = load_image(product_paths[0], 8, 64).prepared

    def answer(temperature: float | None) -> str:
        request = GenerationRequest(0, image, prompt.prefix, prompt.suffix, TITLE_SCHEMA, 40, temperature)
        with _engine(tiny_model) as engine:
            return next(iter(engine.generate([request]))).text

    greedy = answer(None)
    assert answer(0.0) == greedy
    assert answer(1.5) != greedy  # a random-weight model sampled hot leaves the arg-max path at once


def test_importing_the_package_loads_llama_cpp_before_numpy() -> None:
    """A CUDA model loaded after numpy segfaulted on an H200 (docs/benchmarks.md, "GPU")."""
    import subprocess
    import sys

    order = subprocess.run(
        [sys.executable, "-c", "import sys, qvl_label.pipeline.labeler; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert order.index("llama_cpp.llama_cpp") < order.index("numpy")


MTMD_CLI = Path.home() / ".cache" / "qvl-label-bench" / "build" / "bin" / "llama-mtmd-cli"
VIEWS = Path(__file__).parent / "fixtures" / "views"


@pytest.mark.parametrize(
    ("first", "second"), [("mh01-gray_back.jpg", "mh01-gray_main.jpg"), ("mh01-gray_alt1.jpg", "mh01-gray_back.jpg")]
)
def test_two_photos_in_one_sequence_match_llama_mtmd_cli(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path, first: str, second: str
) -> None:
    """Two image chunks in one sequence, positioned as llama.cpp's reference places them.

    llama-mtmd-cli with two --image puts both before the prompt; greedy. qvl-label's sampler
    never emits bytes that are not UTF-8 (nor control tokens), so llama-mtmd-cli gets a grammar
    that allows any UTF-8 text; on these two pairs it then never picks a control token.
    """
    import subprocess

    from PIL import Image

    if not MTMD_CLI.exists():
        pytest.skip("llama-mtmd-cli is not built: scripts/build_llama_tools.sh (.ci/run runs it)")
    prepared = [load_image(VIEWS / name, 8, 64).prepared for name in (first, second)]
    files = []
    for i, image in enumerate(prepared):  # the same pixels for both, after qvl-label's own resizing
        files.append(tmp_path / f"{i}.png")
        Image.frombytes("RGB", (image.width, image.height), image.rgb).save(files[-1])
    question, n_tokens = "Describe these photos.", 24
    engine = _engine(tiny_model, image_min_tokens=64, ignore_eos=True, threads=2)
    try:
        request = GenerationRequest(
            key=0,
            image=prepared[0],
            more_images=(prepared[1],),
            prefix="<|im_start|>user\n",
            suffix=f"{question}<|im_end|>\n<|im_start|>assistant\n",
            schema=None,
            max_tokens=n_tokens,
        )
        ours = next(iter(engine.generate([request])))
    finally:
        engine.close()
    assert ours.tokens.image == 2 * 72 and ours.tokens.completion == n_tokens
    cli = subprocess.run(
        [str(MTMD_CLI), "-m", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj), "-p", question,
         "-n", str(n_tokens + 16), "--temp", "0", "-c", "4096", "-t", "2", "--image-min-tokens", "64",
         "--image-max-tokens", "64", "--no-warmup", "--ignore-eos", "--grammar", r"root ::= [\x01-\U0010FFFF]*",
         "--image", str(files[0]), "--image", str(files[1])],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    # llama-mtmd-cli's printed text can stop early: in full test runs it ended inside a character
    # (after 12 and after 25 of 26 bytes; it prints through a logging thread). So it writes 16
    # tokens more, and what it printed must agree byte for byte with qvl-label's answer, over
    # qvl-label's whole answer or all it printed, and at least its first 8 bytes.
    written, answer = cli.strip(b"\n"), ours.text.encode()
    # llama-mtmd-cli's UTF-8 grammar also admits control tokens, printed as their text (seen on
    # another machine, 2026-11-26: `<|box_end|>` 19 bytes in); qvl-label never samples one, so
    # the two agree up to the first of them.
    control = re.search(rb"<\|[a-z_]+\|>", written)
    if control is not None:
        written = written[: control.start()]
    assert len(written) >= 8 and written[: len(answer)] == answer[: len(written)]
