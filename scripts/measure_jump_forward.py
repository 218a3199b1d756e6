"""What jump-forward saves, without model weights: realistic answers teacher-forced through the grammar.

    python scripts/measure_jump_forward.py            # the real Qwen tokenizer (random weights)

Each answer in tests/data/realistic_answers.json (four products, zh and en) is written as the
compact JSON the grammar admits and run through llguidance's matcher as decoding with
jump-forward would: at each point the grammar's forced tokens are appended if it has any, else
the next token of the answer's canonical tokenization is "sampled". Decode steps: without
jump-forward one per token plus the end token; with it one per sampled token.
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
from qvl_label.labeling.config import load_config
from qvl_label.labeling.schema import answer_schema
from qvl_label.settings import EngineSettings

ANSWERS = Path(__file__).resolve().parent.parent / "tests" / "data" / "realistic_answers.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", choices=tinymodel.VOCABULARIES, default="qwen")
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


if __name__ == "__main__":
    main()
