"""Constrained decoding: the JSON grammar from the answer schema, and the UTF-8 rule sampling keeps."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf


def property_order(schema: dict[str, Any]) -> list[str]:
    """Every property name in the schema's own order, looking inside arrays and `anyOf` branches.

    The GBNF converter orders an object's keys by this list (by name otherwise), so the
    model decides the category before the copy and names a template before its fields.
    """
    order: list[str] = []
    discriminators: list[str] = []  # `const` keys such as `template` name the branch: they go before any field

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                target = discriminators if isinstance(sub, dict) and "const" in sub else order
                if name not in target:
                    target.append(name)
                walk(sub)
            walk(node.get("items"))
            for branch in node.get("anyOf", []):
                walk(branch)

    walk(schema)
    return discriminators + [name for name in order if name not in discriminators]


# The converter's string character admits raw control bytes and \\u escapes (lone
# surrogates among them), and llama.cpp's grammar does not check continuation bytes, so a
# decoded string could be longer than the grammar counted. Here a character is one printable
# code point or an escaped quote, backslash or slash, and _sample keeps the bytes well-formed
# UTF-8, so `maxLength` bounds the decoded length exactly.
STRING_CHAR_RULE = r'char ::= [^"\\\x00-\x1F\x7F] | "\\" ["\\/]'


def json_grammar(schema: dict[str, Any]) -> str:
    """GBNF for the schema: keys in the schema's order, strings of printable characters only."""
    grammar = json_schema_to_gbnf(json.dumps(schema, sort_keys=True), prop_order=property_order(schema))
    lines = grammar.splitlines()
    replaced = [STRING_CHAR_RULE if line.startswith("char ::=") else line for line in lines]
    if replaced == lines and "char" in grammar:
        raise RuntimeError("the JSON grammar has no `char` rule to restrict; the converter changed")
    return "\n".join(replaced) + "\n"


# UTF-8 well-formed byte sequences (Unicode table 3-7): the allowed range of the second
# byte depends on the first, which rules out overlong forms, surrogates and > U+10FFFF.
_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
Utf8State = tuple[int, int, int]  # (continuation bytes still due, lowest and highest allowed next byte)
UTF8_START: Utf8State = (0, 0, 0)


def utf8_advance(state: Utf8State, data: bytes) -> Utf8State | None:
    """The UTF-8 state after `data`, or None when the bytes cannot be part of well-formed UTF-8."""
    remaining, low, high = state
    for byte in data:
        if remaining:
            if not low <= byte <= high:
                return None
            remaining, low, high = remaining - 1, 0x80, 0xBF
        elif byte < 0x80:
            continue
        elif 0xC2 <= byte <= 0xDF:
            remaining, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= byte <= 0xEF:
            remaining, (low, high) = 2, _SECOND_BYTE.get(byte, (0x80, 0xBF))
        elif 0xF0 <= byte <= 0xF4:
            remaining, (low, high) = 3, _SECOND_BYTE.get(byte, (0x80, 0xBF))
        else:
            return None
    return remaining, low, high
