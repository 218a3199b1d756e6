"""The docs' example outputs, each made by running the real CLI and code (scripts/gen_docs.py writes them)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS = ROOT / "tests" / "fixtures" / "products"
RED_TEE = PRODUCTS / "ms04-red_main.jpg"


class SampleAnswerEngine:
    """Answers every image with conftest's sample answer (the red tee), as the real model would in shape."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        from qvl_label.engine.protocol import EngineInfo
        from tests.conftest import sample_answer

        self.answer = json.dumps(sample_answer(languages), ensure_ascii=False)
        self.info = EngineInfo("sample-answer", "model.gguf", "mmproj.gguf", 4096, 1, 0, False, 8, 64, False, 1)

    def generate(self, requests: Iterable[Any]) -> Iterator[Any]:
        from qvl_label.engine.protocol import Generation, Idle, TokenCounts

        for request in requests:
            if not isinstance(request, Idle):
                yield Generation(key=request.key, text=self.answer, finish_reason="stop", tokens=TokenCounts())

    def cancel(self, key: int) -> None:
        pass

    def close(self) -> None:
        pass


def compact_json(value: Any, indent: str = "") -> str:
    """Indented JSON whose short lists and objects stay on one line, as a person would write it."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(indent) + len(flat) <= 100 or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + "\n" + indent + "]"


def describe_record() -> str:
    """The red tee's record: conftest's sample answer through the real Labeler and shaping code."""
    from qvl_label.pipeline.labeler import Labeler
    from qvl_label.settings import EngineSettings, LabelSettings, Settings

    with tempfile.TemporaryDirectory() as folder:
        model, mmproj = Path(folder) / "model.gguf", Path(folder) / "mmproj.gguf"
        model.write_bytes(b"GGUF model stand-in")
        mmproj.write_bytes(b"GGUF mmproj stand-in")
        settings = Settings(
            engine=EngineSettings(model_path=model, mmproj_path=mmproj, n_parallel=1),
            label=LabelSettings(languages=("zh", "en")),
        )
        cwd = Path.cwd()
        os.chdir(ROOT)
        try:
            with Labeler(settings, engine_factory=lambda _s: SampleAnswerEngine(("zh", "en"))) as labeler:
                (record,) = list(labeler.label([str(RED_TEE.relative_to(ROOT))]))
        finally:
            os.chdir(cwd)
    record.pop("file", None)  # size and mtime of this checkout's copy: not the same on two clones
    record["timings_ms"] = {key: 0.0 for key in record.get("timings_ms") or {}}
    return "```json\n" + compact_json(record) + "\n```"


def batch_run() -> str:
    """`qvl-label batch` twice (a run, then its resume) through the real CLI, Labeler and writer.

    The engine is the sample-answer engine (the real llama.cpp engine on the tiny random model takes
    minutes per photo on a loaded 2-core machine and writes gibberish); the model files are the
    generated tiny model's, so the run fingerprint is computed from real GGUF files.
    """
    import functools
    import shutil

    from typer.testing import CliRunner

    from qvl_label import tinymodel
    from qvl_label.cli import app
    from qvl_label.pipeline.labeler import Labeler

    shown: list[str] = ["$ qvl-label models make-random /tmp/tiny"]
    original_init = Labeler.__init__
    Labeler.__init__ = functools.partialmethod(  # type: ignore[method-assign]
        original_init, engine_factory=lambda _s: SampleAnswerEngine(("en",))
    )
    cwd = Path.cwd()
    try:
        with tempfile.TemporaryDirectory() as folder:
            generated = tinymodel.generate(Path(folder) / "tiny")
            photos = Path(folder) / "photos"
            photos.mkdir()
            for photo in sorted(PRODUCTS.iterdir()):
                shutil.copy(photo, photos / photo.name)
            for broken in ("truncated_photo.jpg", "corrupt_header.jpg"):
                shutil.copy(ROOT / "tests" / "fixtures" / "awkward" / broken, photos / broken)
            os.chdir(folder)
            args = ["batch", "photos", "-o", "out.jsonl", "--lang", "en", "--no-cache",
                    "--model", str(generated.model), "--mmproj", str(generated.mmproj)]  # fmt: skip
            env = {"QVL_LABEL_HOME": str(Path(folder) / "state")}
            for attempt in range(2):
                if attempt:  # the resume: one more photo arrived since
                    shutil.copy(ROOT / "tests" / "fixtures" / "catalogue" / "Granny-Smith_Iconic.jpg", photos)
                    shown.append("$ cp Granny-Smith_Iconic.jpg photos/")
                result = CliRunner().invoke(app, args, env=env, prog_name="qvl-label")
                shown.append("$ qvl-label batch photos -o out.jsonl --lang en --model /tmp/tiny/qwen3vl-tiny-random-"
                             "model.gguf \\\n    --mmproj /tmp/tiny/qwen3vl-tiny-random-mmproj.gguf")  # fmt: skip
                shown += [line.rstrip() for line in result.stderr.rstrip().splitlines()]
                shown.append(f"$ echo $?\n{result.exit_code}")
            statuses = [json.loads(line)["status"] for line in Path("out.jsonl").read_text().splitlines()]
            shown.append(f"$ wc -l < out.jsonl\n{len(statuses)}")
    finally:
        os.chdir(cwd)
        Labeler.__init__ = original_init  # type: ignore[method-assign]
    return "```text\n" + "\n".join(shown) + "\n```"
