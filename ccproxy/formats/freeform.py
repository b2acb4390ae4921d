"""OpenAI custom (freeform) tools on Anthropic tools (used by the Responses clients on Anthropic).

Anthropic tools take a JSON object, OpenAI custom tools a free-form string (optionally constrained by a
grammar). A custom tool becomes an Anthropic tool whose schema is one required string property, ``input``;
the grammar, which Anthropic cannot enforce, is spelled out in the description instead.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccproxy.formats.base import JSON, TranslationError
from ccproxy.formats.common import json_dumps

FREEFORM_PROPERTY = "input"
FREEFORM_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        FREEFORM_PROPERTY: {"type": "string", "description": "The complete free-form input of the tool."}
    },
    "required": [FREEFORM_PROPERTY],
    "additionalProperties": False,
}


def anthropic_freeform_tool(name: Any, description: Any, fmt: Any, param: str) -> JSON:
    """Anthropic tool definition for an OpenAI custom tool (``format``: text, or a lark/regex grammar)."""
    if not isinstance(name, str) or not name:
        raise TranslationError("custom tools need a name", param=f"{param}.name")
    parts = [description] if isinstance(description, str) and description else []
    parts.append(
        f"This tool takes free-form text, not JSON arguments: pass the whole text as the "
        f"`{FREEFORM_PROPERTY}` string, exactly as the tool should receive it."
    )
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        syntax, definition = fmt.get("syntax"), fmt.get("definition")
        if syntax not in ("lark", "regex") or not isinstance(definition, str) or not definition:
            raise TranslationError(
                "grammar formats need a syntax (lark or regex) and a definition", param=f"{param}.format"
            )
        grammar = f"```{syntax}\n{definition}\n```"
        parts.append(f"The `{FREEFORM_PROPERTY}` text must match this {syntax} grammar:\n{grammar}")
    elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise TranslationError("custom tool format must be text or grammar", param=f"{param}.format")
    return {
        "name": name,
        "description": "\n\n".join(parts),
        "input_schema": orjson.loads(orjson.dumps(FREEFORM_SCHEMA)),  # a fresh copy per request
    }


def freeform_input(tool_input: Any) -> str:
    """The free-form text of an Anthropic ``tool_use`` input for a custom tool: the ``input`` string; a lone
    string under another key; otherwise (the model ignored the schema) the input as JSON text, so nothing
    is lost."""
    if isinstance(tool_input, dict):
        value = tool_input.get(FREEFORM_PROPERTY)
        if isinstance(value, str):
            return value
        if len(tool_input) == 1:
            (only,) = tool_input.values()
            if isinstance(only, str):
                return only
        if not tool_input:
            return ""
    if isinstance(tool_input, str):
        return tool_input
    return json_dumps(tool_input)


def _freeform_head_end(text: str) -> int | None:
    """End of ``{"input": "`` at the start of ``text`` (whitespace allowed between tokens); ``None`` while
    ``text`` is still a prefix of it, ``-1`` when it cannot become one."""
    i = 0
    for token in ("{", f'"{FREEFORM_PROPERTY}"', ":", '"'):
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        got = text[i : i + len(token)]
        if got != token[: len(got)]:
            return -1
        if len(got) < len(token):
            return None
        i += len(token)
    return i


class FreeformInputDecoder:
    """Streams the ``input`` string of a custom tool's ``tool_use`` out of Anthropic ``input_json_delta``
    fragments: ``feed`` returns the newly decoded text (escapes resolved, never split inside an escape), work
    proportional to the fragment. ``text()`` is the authoritative final input (``freeform_input`` of the
    whole JSON). When the JSON does not start with the ``input`` key, nothing streams and only ``text()``
    has the input."""

    __slots__ = ("_fragments", "_head", "_pending", "_state", "streamed")

    def __init__(self) -> None:
        self._fragments: list[str] = []
        self._head = ""
        self._pending = ""  # escaped string text not decoded yet (an escape cut by the fragment boundary)
        self._state = "head"  # head → string → tail; or buffer (no streaming)
        self.streamed: list[str] = []

    def feed(self, fragment: str) -> str:
        self._fragments.append(fragment)
        if self._state == "head":
            self._head += fragment
            end = _freeform_head_end(self._head)
            if end is None:
                return ""
            if end < 0:
                self._state = "buffer"
                return ""
            self._state = "string"
            fragment, self._head = self._head[end:], ""
        if self._state != "string":
            return ""
        text = self._pending + fragment
        cut, closed = _escaped_prefix(text)
        self._pending = "" if closed else text[cut:]
        if closed:
            self._state = "tail"
        try:
            decoded = orjson.loads(b'"' + text[:cut].encode() + b'"')
        except orjson.JSONDecodeError:
            self._state = "buffer"
            return ""
        if not isinstance(decoded, str) or not decoded:
            return ""
        self.streamed.append(decoded)
        return decoded

    def text(self) -> str:
        raw = "".join(self._fragments)
        if not raw.strip():
            return ""
        try:
            return freeform_input(orjson.loads(raw))
        except orjson.JSONDecodeError:  # cut off (max_tokens): what was decoded so far, else the raw text
            return "".join(self.streamed) if self._state in ("string", "tail") else raw


def _escaped_prefix(text: str) -> tuple[int, bool]:
    """``(cut, closed)``: the longest prefix of JSON string content in ``text`` that decodes on its own
    (no escape or surrogate pair cut in half), and whether an unescaped closing quote ends it there."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i, True
        if c != "\\":
            i += 1
            continue
        if i + 1 >= n:
            break
        if text[i + 1] != "u":
            i += 2
            continue
        if i + 6 > n:
            break
        high = text[i + 2 : i + 6].lower()
        if "d800" <= high <= "dbff":  # a high surrogate needs its low half in the same piece
            if i + 12 > n:
                break
            i += 12
            continue
        i += 6
    return i, False
