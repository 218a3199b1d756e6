"""What jump-forward saves, without model weights: realistic answers teacher-forced through the grammar.

    python scripts/measure_jump_forward.py            # the real Qwen tokenizer (random weights)

Each answer in tests/data/realistic_answers.json (four products, zh and en) is written as the
compact JSON the grammar admits and run through llguidance's matcher as decoding with
jump-forward would: at each point the grammar's forced tokens are appended if it has any, else
the next token of the answer's canonical tokenization is "sampled". Decode steps: without
jump-forward one per token plus the end token; with it one per sampled token.

    python scripts/measure_jump_forward.py --decode   # also: real decoding on the fixture photos

--decode runs the random-weight model on the ten fixture photos (full en answer schema,
greedy) with and without jump-forward at --parallel 1 and 4 and prints how many answers
are byte-identical between each pair of runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from qvl_label import tinymodel
from qvl_label.engine.constraints import LlguidanceFactory
from qvl_label.engine.llama import LlamaCppEngine
from qvl_label.engine.protocol import GenerationRequest
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import label_prompt
from qvl_label.labeling.schema import answer_schema
from qvl_label.pipeline.images import load_image
from qvl_label.settings import EngineSettings

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
ANSWERS = FIXTURES.parent / "data" / "realistic_answers.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", choices=tinymodel.VOCABULARIES, default="qwen")
    parser.add_argument("--decode", action="store_true", help="also decode the fixture photos both ways")
    args = parser.parse_args()
    config = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        model = tinymodel.generate(Path(tmp), vocabulary=args.vocab)
        settings = EngineSettings(model_path=model.model, mmproj_path=model.mmproj, grammar_engine="llguidance")
        with LlamaCppEngine(settings) as engine:
            factory = engine.constraints
            assert isinstance(factory, LlguidanceFactory)
            rows = []
            for item in json.loads(ANSWERS.read_text()):
                languages = tuple(item["languages"])
                schema = answer_schema(languages, config, config.channel("generic"))
                text = json.dumps(item["answer"], ensure_ascii=False, separators=(",", ":"))
                rows.append((item["name"], languages, factory.teacher_force(schema, text)))
        if args.decode:
            agreement = decode_both_ways(model)
    print(f"- machine: {platform.machine()}, Python {platform.python_version()}; vocabulary: {args.vocab}")
    print("- grammar: llguidance on `qvl-label schema --lang <lang>` (channel generic), compact JSON\n")
    print("| answer | lang | tokens | forced | forced share | decode steps without | with | saved |")
    print("|---|---|---|---|---|---|---|---|")
    for name, languages, r in rows:
        saved = r.steps_without - r.sampled
        print(
            f"| {name} | {','.join(languages)} | {r.tokens} | {r.forced} | {r.forced / r.tokens:.1%} | "
            f"{r.steps_without} | {r.sampled} | {saved} ({saved / r.steps_without:.1%}) |"
        )
    tokens = sum(r.tokens for _, _, r in rows)
    forced = sum(r.forced for _, _, r in rows)
    without = sum(r.steps_without for _, _, r in rows)
    sampled = sum(r.sampled for _, _, r in rows)
    print(
        f"| all {len(rows)} | | {tokens} | {forced} | {forced / tokens:.1%} | {without} | {sampled} | "
        f"{without - sampled} ({(without - sampled) / without:.1%}) |"
    )
    if args.decode:
        runs = list(agreement)
        print("\nbyte-identical answers out of 10 (full en schema, greedy):\n")
        print("| run | " + " | ".join(runs) + " |")
        print("|---|" + "---|" * len(runs))
        for a in runs:
            same = [sum(x == y for x, y in zip(agreement[a], agreement[b], strict=True)) for b in runs]
            print(f"| {a} | " + " | ".join(map(str, same)) + " |")


def decode_both_ways(model: tinymodel.GeneratedModel) -> dict[str, list[str]]:
    photos = sorted(FIXTURES.joinpath("products").iterdir()) + sorted(FIXTURES.joinpath("catalogue").iterdir())
    config = load_config()
    prompt = label_prompt(("en",), config, config.channel("generic"))
    schema = answer_schema(("en",), config, config.channel("generic"))
    texts: dict[str, list[str]] = {}
    for parallel in (1, 4):
        for jump_forward in (True, False):
            settings = EngineSettings(
                model_path=model.model, mmproj_path=model.mmproj, n_ctx=16384, n_parallel=parallel,
                image_max_tokens=64, jump_forward=jump_forward,
            )  # fmt: skip
            requests = [
                GenerationRequest(i, load_image(p, 8, 64).prepared, prompt.prefix, prompt.suffix, schema, 3000)
                for i, p in enumerate(photos)
            ]
            with LlamaCppEngine(settings) as engine:
                results = sorted(engine.generate(requests), key=lambda r: r.key)
            name = f"--parallel {parallel}" + ("" if jump_forward else " --no-jump-forward")
            texts[name] = [r.text for r in results]
    return texts


if __name__ == "__main__":
    main()
