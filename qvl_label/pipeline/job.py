"""A label job: what one kind of request asks the model (prompt, schema, budget) and how its answer is shaped."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from ..engine.protocol import GenerationRequest
from ..labeling.config import LabelConfig
from ..labeling.prompts import Prompt, label_prompt, question_prompt
from ..labeling.schema import answer_schema, max_answer_tokens
from ..labeling.shaping import LabelShaper
from ..settings import EngineSettings, LabelSettings
from .images import LoadedImage
from .records import RunContext

QUESTION_MAX_TOKENS = 512


@dataclass(frozen=True)
class LabelJob:
    """The prompt, answer schema, output budget and shaping of one label setting, and its records' run context."""

    label: LabelSettings
    prompt: Prompt
    schema: dict[str, Any] | None
    max_tokens: int
    shaper: LabelShaper | None
    run: RunContext

    def request(self, key: int, image: LoadedImage, temperature: float | None = None) -> GenerationRequest:
        return GenerationRequest(
            key=key,
            image=image.prepared,
            prefix=self.prompt.prefix,
            suffix=self.prompt.suffix,
            schema=self.schema,
            max_tokens=self.max_tokens,
            temperature=temperature,
        )


def token_budgets(settings: EngineSettings, prompt: Prompt, max_tokens: int) -> tuple[int, int]:
    """Upper bounds of (prefix tokens, tokens one sequence needs) the engine sizes its context with.

    UTF-8 byte counts bound token counts from above for byte-level BPE.
    """
    per_sequence = settings.image_max_tokens + 8 + len(prompt.suffix.encode()) + max_tokens
    return len(prompt.prefix.encode()), per_sequence


def build_job(
    label: LabelSettings,
    config: LabelConfig,
    engine: EngineSettings,
    model: Any,
    model_ref: Any,
) -> LabelJob:
    """The job for these label settings; `model` identifies the model files in the run fingerprint."""
    channel = config.channel(label.channel)
    shaper: LabelShaper | None = None
    if label.question:
        prompt = question_prompt(label.question)
        schema: dict[str, Any] | None = None
        max_tokens = label.max_tokens or QUESTION_MAX_TOKENS
    else:
        prompt = label_prompt(label.languages, config, channel)
        schema = answer_schema(label.languages, config, channel)
        # Derived from the schema's own bounds, so a valid answer is never cut off by the default.
        max_tokens = label.max_tokens or max_answer_tokens(schema)
        shaper = LabelShaper(config, channel, label.languages, label.strict)
    # Everything that changes a label: model, prompt, budget, sampling.
    parts = {
        "model": model,
        "prompt": prompt.version,
        "prefix": hashlib.sha256((prompt.prefix + prompt.suffix).encode()).hexdigest(),
        "languages": list(label.languages),
        "label_config": [config.digest, label.channel, label.strict],
        "max_tokens": max_tokens,
        "image_tokens": [engine.image_min_tokens, engine.image_max_tokens],
        "sampling": [engine.temperature, engine.seed],
    }
    fingerprint = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    run = RunContext(
        model=model_ref,
        prompt_version=prompt.version,
        languages=label.languages if schema is not None else (),
        schema=schema,
        fingerprint=fingerprint,
        shaper=shaper,
    )
    return LabelJob(label=label, prompt=prompt, schema=schema, max_tokens=max_tokens, shaper=shaper, run=run)


def sized_for(engine: EngineSettings, jobs: list[LabelJob]) -> EngineSettings:
    """Engine settings whose context holds the largest of these jobs (its prefix and one sequence)."""
    budgets = [token_budgets(engine, job.prompt, job.max_tokens) for job in jobs]
    return dataclasses.replace(
        engine,
        prefix_tokens=max(prefix for prefix, _ in budgets),
        sequence_tokens=max(sequence for _, sequence in budgets),
        prefix_text=jobs[0].prompt.prefix,
    )
