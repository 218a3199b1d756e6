"""OpenAI chat completions: the request checked, its conversation rendered, the answer as JSON or SSE chunks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..engine.protocol import Generation
from ..labeling.prompts import MAX_QUESTION_CHARS, Prompt, conversation_prompt
from .errors import BadRequest
from .paths import Upload

# Parameters this server honours. Any other one is refused with a 400 unless it is given its
# no-op value (the `openai` SDK and other clients send some of these explicitly): a client that
# asks for something the server does not do learns it, instead of getting a quiet wrong answer.
HONOURED = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stream", "stream_options",
    "response_format", "stop", "user",
}  # fmt: skip
NO_OP_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "top_p": (None, 1),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "seed": (None,),
    "store": (None, False),
    "metadata": (None, {}),
    "service_tier": (None, "auto", "default"),
    "modalities": (None, ["text"]),
    "reasoning_effort": (None,),
    "prediction": (None,),
    "audio": (None,),
    "web_search_options": (None,),
}
MAX_STOP_SEQUENCES = 4
SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


@dataclass(frozen=True)
class ChatRequest:
    """What one /v1/chat/completions request asks for, checked."""

    prompt: Prompt
    image: Upload
    schema: dict[str, Any] | None
    max_tokens: int | None
    temperature: float | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_chat(payload: dict[str, Any], decode: Callable[[str, str], bytes]) -> ChatRequest:
    """The checked request; BadRequest names the first parameter that is wrong or not implemented."""
    _refuse_unimplemented(payload)
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string")
    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("user must be a string")
    prompt, image = _conversation(payload.get("messages"), decode)
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    return ChatRequest(
        prompt=prompt,
        image=image,
        schema=_response_schema(payload.get("response_format")),
        max_tokens=_max_tokens(payload),
        temperature=_temperature(payload.get("temperature")),
        stop=_stop(payload.get("stop")),
        stream=bool(stream),
        include_usage=_include_usage(payload.get("stream_options"), bool(stream)),
    )


def _refuse_unimplemented(payload: dict[str, Any]) -> None:
    for name, value in payload.items():
        if name in HONOURED:
            continue
        if name not in NO_OP_VALUES:
            raise BadRequest(f"{name}: this server does not implement this parameter")
        if not any(_same(value, allowed) for allowed in NO_OP_VALUES[name]):
            shown = orjson.dumps(value).decode()[:60]
            raise BadRequest(f"{name}={shown}: this server does not implement it (leave it out)")


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same kind: `true` is not 1, `1.0` is."""
    if isinstance(value, bool) != isinstance(allowed, bool):
        return False
    return bool(value == allowed)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a number")
    return float(value)


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    temperature = _number(value, "temperature")
    if not 0 <= temperature <= 2:
        raise BadRequest("temperature must be between 0 and 2")
    return temperature


def _max_tokens(payload: dict[str, Any]) -> int | None:
    found: int | None = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be an integer")
        if found is not None and value != found:
            raise BadRequest("max_tokens and max_completion_tokens differ; send one")
        found = value
    return found


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("stop must be a non-empty string or a list of them")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise BadRequest(f"stop takes at most {MAX_STOP_SEQUENCES} sequences")
    return tuple(stops)


def _include_usage(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise BadRequest("stream_options is only allowed with stream: true")
    if not isinstance(value, dict) or set(value) - {"include_usage"}:
        raise BadRequest("stream_options takes only include_usage")
    include = value.get("include_usage", False)
    if not isinstance(include, bool):
        raise BadRequest("stream_options.include_usage must be true or false")
    return include


def _response_schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        raise BadRequest("response_format json_object is not implemented; send json_schema with the object's schema")
    if kind != "json_schema":
        raise BadRequest("response_format.type must be text or json_schema")
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise BadRequest("response_format.json_schema.schema must be a JSON schema object")
    check_schema(schema, "response_format.json_schema.schema")
    return schema


def check_schema(node: Any, where: str) -> None:
    """The JSON Schema keywords the grammar compilers read, of the kinds they must be (a wrong one is
    the client's mistake, a 400, not an engine failure)."""
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise BadRequest(f"{where} must be a schema object")
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if (not kinds and kind is not None) or not all(isinstance(k, str) and k in SCHEMA_TYPES for k in kinds):
        raise BadRequest(f"{where}.type must be one of {', '.join(sorted(SCHEMA_TYPES))}")
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        raise BadRequest(f"{where}.properties must be an object")
    for name, sub in properties.items():
        check_schema(sub, f"{where}.properties.{name}")
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise BadRequest(f"{where}.required must be a list of property names")
    for key in ("items", "additionalProperties", "not"):
        if key in node:
            check_schema(node[key], f"{where}.{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node:
            if not isinstance(node[key], list) or not node[key]:
                raise BadRequest(f"{where}.{key} must be a non-empty list of schemas")
            for i, sub in enumerate(node[key]):
                check_schema(sub, f"{where}.{key}[{i}]")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise BadRequest(f"{where}.enum must be a non-empty list")
    for key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if key in node and (isinstance(node[key], bool) or not isinstance(node[key], int) or node[key] < 0):
            raise BadRequest(f"{where}.{key} must be a non-negative integer")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in node:
            _number(node[key], f"{where}.{key}")
    if "pattern" in node and not isinstance(node["pattern"], str):
        raise BadRequest(f"{where}.pattern must be a string")
    for key in ("$defs", "definitions"):
        if key in node:
            if not isinstance(node[key], dict):
                raise BadRequest(f"{where}.{key} must be an object")
            for name, sub in node[key].items():
                check_schema(sub, f"{where}.{key}.{name}")


# -- the conversation ----------------------------------------------------------------------------


def _conversation(messages: Any, decode: Callable[[str, str], bytes]) -> tuple[Prompt, Upload]:
    """The rendered prompt and the one image, from the whole conversation: earlier assistant turns
    stay assistant turns, so a follow-up question about the same photo reads as one."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    system: list[str] = []
    turns: list[tuple[str, str, bool]] = []  # (role, text, holds the image)
    images: list[Upload] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in {"tool", "function"}:
            raise BadRequest(f"messages[{i}]: tool messages are not implemented (this server has no tools)")
        if role not in {"system", "developer", "user", "assistant"}:
            raise BadRequest(f"messages[{i}] needs a role of system, user or assistant")
        assert isinstance(message, dict)
        if role == "assistant" and message.get("tool_calls"):
            raise BadRequest(f"messages[{i}]: tool calls are not implemented")
        unknown = (
            set(message) - {"role", "content", "name"} - ({"refusal", "tool_calls"} if role == "assistant" else set())
        )
        if unknown:
            raise BadRequest(f"messages[{i}]: {', '.join(sorted(unknown))} not implemented")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts")
        texts: list[str] = []
        has_image = False
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            if not isinstance(part, dict):
                raise BadRequest(f"{where} must be an object")
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url" and role == "user":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise BadRequest(f"{where}.image_url needs a url")
                images.append(Upload(f"image-{len(images) + 1}", decode(url, where)))
                has_image = True
            else:
                raise BadRequest(f"{where}: only text parts, and image_url parts in user messages, are supported")
        text = "\n".join(texts)
        if role != "assistant" and len(text) > MAX_QUESTION_CHARS:
            raise BadRequest(f"messages[{i}]: messages are limited to {MAX_QUESTION_CHARS} characters each")
        if role in {"system", "developer"}:
            if turns:
                raise BadRequest(f"messages[{i}]: system messages come before the conversation")
            system.append(text)
        else:
            turns.append((role, text, has_image))
    if len(images) != 1:
        raise BadRequest(f"send exactly one image (as an image_url data URI); this request has {len(images)}")
    if not turns or turns[-1][0] != "user":
        raise BadRequest("the last message must be the user's (this server answers; it does not continue a reply)")
    if not turns[-1][1].strip():
        raise BadRequest("the last user message needs text as well")
    return conversation_prompt("\n".join(system) or None, turns), images[0]


# -- the answer ----------------------------------------------------------------------------------


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass(frozen=True)
class Answer:
    """The reply to send: text, why it ended, and the token counts."""

    id: str
    model: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, request_id: str, model: str, generation: Generation, stops: tuple[str, ...]) -> Answer:
        text, stopped = cut_at_stop(generation.text, stops)
        usage = generation.tokens
        return cls(
            id=f"chatcmpl-{request_id}",
            model=model,
            text=text,
            finish_reason="length" if generation.finish_reason == "length" and not stopped else "stop",
            prompt_tokens=usage.prefix_reused + usage.prefix_evaluated + usage.image + usage.prompt_evaluated,
            completion_tokens=usage.completion,
        )

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}

    def completion(self) -> dict[str, Any]:
        """The whole answer as one chat.completion object."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
        }


@dataclass(frozen=True)
class ChunkFormat:
    """Server-Sent Events in OpenAI's chunk format: the role first, content deltas, the finish
    reason, the usage when asked for, then `data: [DONE]`."""

    id: str
    model: str
    created: int
    include_usage: bool

    def event(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        chunk["model"] = self.model
        chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def role(self) -> bytes:
        return self.event({"role": "assistant", "content": ""})

    def content(self, text: str) -> bytes:
        return self.event({"content": text})

    def finish(self, answer: Answer) -> Iterator[bytes]:
        """The last chunks: the finish reason, the usage when asked for, `[DONE]`."""
        yield self.event({}, answer.finish_reason)
        if self.include_usage:
            yield self.event(None, usage=answer.usage())
        yield DONE

    @staticmethod
    def error(kind: str, message: str) -> bytes:
        """A failure after the stream started (its status line is sent): the SDK raises it as an APIError."""
        return b"data: " + orjson.dumps({"error": {"type": kind, "message": message}}) + b"\n\n"


DONE = b"data: [DONE]\n\n"
