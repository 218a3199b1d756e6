"""Prompt wording and its version; the fixed instructions come before the image so engines can reuse them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .schema import ATTRIBUTE_FIELDS, LANGUAGES

if TYPE_CHECKING:
    from .config import Channel, LabelConfig

# Bump when the wording or the answer schema changes: records carry it, and resume
# treats a different version as work still to do.
LABEL_PROMPT_VERSION = "label-3"
QUESTION_PROMPT_VERSION = "question-1"
MAX_QUESTION_CHARS = 2000  # a question, not a document: 4,000 words took 28 s of prefill per image

_LABEL_INSTRUCTIONS = """You are a catalogue editor for an e-commerce shop. You receive one product photo.
Describe only the product for sale, not the background, the model wearing it or props.
Rules:
- Use only what is visible. Never invent sizes, specifications, certifications, prices or features you cannot see.
- Numbers only when you can read them in the photo.
- No superlatives or absolute claims (best, #1, 最, 第一, 顶级) and no health or medical effects.
- scene: single when the photo shows one product for sale; set when it shows several products sold together (a bundle, a gift set); outfit when it shows a styled look of several items.
- The main product (the most prominent one) gets the full label below. items: each other distinct product for sale in the photo, with its category, colours, materials and a short English title; an empty list for a single product.
- category.top: one of: {top_levels}. category.path: the deeper levels, general to specific, in English (Google Product Taxonomy names where you know them).
{attributes}
- details: pick the template for the product's category and fill its fields; use "not visible" where offered when the photo does not show it.
{templates}
- brand: the brand if its name is legible in the photo, otherwise an empty string.
- visible_text: every piece of text printed on the product or its pack, copied verbatim, one entry per line or label; never put it in the description.
- copy: listing text in each requested language ({languages}). title: a concise product title; description: one paragraph; selling_points: 3 to 5 short points; tags: search keywords.
- Channel: {channel}
- Attribute values are short lowercase English words; copy is written in its own language.{extra}
Answer with JSON only."""

_QUESTION_INSTRUCTIONS = """You are a catalogue editor for an e-commerce shop. You receive one product photo and a question about it.
Answer from what is visible in the photo, briefly. Say so when the photo does not show the answer."""


@dataclass(frozen=True)
class Prompt:
    prefix: str
    suffix: str
    version: str


def _chat_prefix(system: str) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"


def _chat_suffix(user_text: str) -> str:
    return f"{user_text}<|im_end|>\n<|im_start|>assistant\n"


def label_prompt(languages: tuple[str, ...], config: LabelConfig, channel: Channel) -> Prompt:
    attributes = "\n".join(f"- {name}: {hint}." for name, (_, hint) in ATTRIBUTE_FIELDS.items())
    names = ", ".join(f"{code} = {LANGUAGES[code]}" for code in languages)
    templates = "\n".join(
        f"  - {t.name} ({', '.join(f.name for f in t.fields)}): {t.prompt}" for t in config.templates.values()
    )
    limits = ", ".join(f"{code} up to {channel.title_limit(code)} characters" for code in languages)
    emoji = "emoji allowed" if channel.emoji else "no emoji"
    system = _LABEL_INSTRUCTIONS.format(
        top_levels="; ".join(config.taxonomy.top_levels),
        attributes=attributes,
        templates=templates,
        languages=names,
        channel=f"{channel.name}. {channel.style} Titles: {limits}; {emoji}.",
        extra=f"\n- {config.instructions.strip()}" if config.instructions.strip() else "",
    )
    return Prompt(
        prefix=_chat_prefix(system),
        suffix=_chat_suffix("Label this product photo."),
        version=LABEL_PROMPT_VERSION,
    )


def question_prompt(question: str) -> Prompt:
    return Prompt(
        prefix=_chat_prefix(_QUESTION_INSTRUCTIONS),
        suffix=_chat_suffix(question.strip()),
        version=QUESTION_PROMPT_VERSION,
    )


def product_prompt(prompt: Prompt, photos: int) -> Prompt:
    """The same instructions for several photos of one product, shown to the model one after another."""
    user_text = prompt.suffix.removesuffix(_chat_suffix(""))
    if prompt.version == LABEL_PROMPT_VERSION:
        user_text = (
            f"These {photos} photos all show one product. Label that product from all of them together, "
            "and give each photo's role, in the order shown, in photo_roles."
        )
    else:
        user_text = f"These {photos} photos all show one product. {user_text}"
    return Prompt(prefix=prompt.prefix, suffix=_chat_suffix(user_text), version=prompt.version)


CHAT_PROMPT_VERSION = "chat-2"


def conversation_prompt(system: str | None, turns: list[tuple[str, str, bool]]) -> Prompt:
    """An OpenAI-style conversation about one photo in Qwen's chat template: the client's system
    text (or the question instructions), then each (role, text, holds the image) turn as its own
    user or assistant turn, ending with the assistant's opening.

    The image goes first in the user turn that holds it, as Qwen's examples place it, so that the
    prefix (everything before the image) of a conversation that opens with the photo is the same
    for every request and the engine evaluates it once.
    """
    instructions = system.strip() if system and system.strip() else _QUESTION_INSTRUCTIONS
    before = f"<|im_start|>system\n{instructions}<|im_end|>\n"
    after = ""
    seen_image = False
    for role, text, has_image in turns:
        if has_image:
            before += f"<|im_start|>{role}\n"
            after += f"{text.strip()}<|im_end|>\n"
            seen_image = True
        elif seen_image:
            after += f"<|im_start|>{role}\n{text.strip()}<|im_end|>\n"
        else:
            before += f"<|im_start|>{role}\n{text.strip()}<|im_end|>\n"
    return Prompt(prefix=before, suffix=after + "<|im_start|>assistant\n", version=CHAT_PROMPT_VERSION)
