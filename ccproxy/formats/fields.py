"""Every top-level request field of each inbound format: its expected shape, and what each route does with it.

One table per client format (Anthropic Messages, Chat Completions, Responses). For every field it holds a
shape check and one disposition per upstream: on ``/api`` (an Anthropic Messages upstream) and on
``/api/codex`` (the ChatGPT Codex backend, a Responses upstream):

- ``honoured``: sent to the upstream as given (the client's own format);
- ``translated``: carried over into the upstream's equivalent;
- ``ignored``: dropped, for the documented reason (it does not change what the model is asked to do, or the
  upstream cannot take it and nothing better exists);
- ``refused``: a 400 naming the field whenever it is set to anything but its neutral value.

``validate`` runs at the edge of every route before translation: one dict lookup and a type check per field
the body actually carries; nested structures (messages, content blocks, tools) are walked only on routes that
translate them, because passthrough routes leave them to the upstream, which judges them itself. A field no
table knows is forwarded on a passthrough route (the upstream judges it) and refused on a translating route,
where it would otherwise be lost without a word. ``docs/formats.md`` carries the table as
``disposition_markdown()`` writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from ccproxy.formats.base import JSON, Format, TranslationError
from ccproxy.formats.shapes import (
    INT64,
    MAX_DEPTH,
    MAX_TOKENS,
    Check,
    Invalid,
    anything,
    array,
    boolean,
    check_keys,
    integer,
    messages,
    number,
    obj,
    objects,
    shaped,
    stop,
    string,
    string_list,
    string_or_array,
    string_or_object,
    string_values,
    too_deep,
)
from ccproxy.formats.shapes import depth_error as depth_error  # ccproxy.proxy imports it from here


class Kind(StrEnum):
    HONOURED = "honoured"
    TRANSLATED = "translated"
    IGNORED = "ignored"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Disposition:
    kind: Kind
    reason: str = ""
    allow: Callable[[Any], bool] | None = None  # refused: values still accepted (default: neutral ones)

    def refuses(self, value: Any) -> bool:
        if self.kind is not Kind.REFUSED:
            return False
        return not (self.allow(value) if self.allow is not None else value in (None, False, [], {}, ""))


@dataclass(frozen=True, slots=True)
class Field:
    check: Check  # the shape of a non-null value, on every route
    claude: Disposition  # /api: an Anthropic Messages upstream
    codex: Disposition  # /api/codex: the ChatGPT Codex backend (Responses)
    deep: Check | None = None  # the nested walk, run only on routes that translate the field

    def on(self, upstream: Format) -> Disposition:
        return self.claude if upstream is Format.ANTHROPIC else self.codex


def same(check: Check, disposition: Disposition, deep: Check | None = None) -> Field:
    """A field every route treats alike."""
    return Field(check, disposition, disposition, deep)


H = Disposition(Kind.HONOURED)
T = Disposition(Kind.TRANSLATED)


def ignored(reason: str) -> Disposition:
    return Disposition(Kind.IGNORED, reason)


def refused(reason: str, allow: Callable[[Any], bool] | None = None) -> Disposition:
    return Disposition(Kind.REFUSED, reason, allow)


# --- per-format nested checks (each is given a non-null value) -------------------------------------------


def _typed(item: JSON) -> None:
    kind = item.get("type")
    if kind is not None and type(kind) is not str:
        raise Invalid("a string", kind, "type")


_parts = objects("content parts", _typed)


def _message(item: JSON) -> None:
    """A message: a string ``role``; ``content`` a string or an array of typed parts (the common case of a
    two-key message costs two lookups)."""
    role = item.get("role")
    if type(role) is not str:
        raise Invalid("a string", role, "role")
    content = item.get("content")
    if content is not None and type(content) is not str:
        try:
            _parts(content)
        except Invalid as bad:
            raise bad.at("content") from None


_function_call = shaped({"name": string, "arguments": string_or_object})
_CHAT_MESSAGE_KEYS: dict[str, Check] = {
    "tool_calls": objects(
        "tool calls",
        lambda call: check_keys(call, {"type": string, "id": string, "function": _function_call}),
    ),
    "tool_call_id": string,
    "name": string,
    "refusal": string,
    "reasoning_content": string,
    "thinking_blocks": array,
}


def _chat_message(item: JSON) -> None:
    _message(item)
    check_keys(item, _CHAT_MESSAGE_KEYS)


_function = shaped({"name": string, "description": string, "parameters": obj})
_CHAT_TOOL_KEYS: dict[str, Check] = {"type": string, "function": _function, "custom": _function}
_FLAT_TOOL_KEYS: dict[str, Check] = {
    "type": string,
    "name": string,
    "description": string,
    "parameters": obj,
    "input_schema": obj,
}
_ITEM_KEYS: dict[str, Check] = {
    "type": string,
    "call_id": string,
    "name": string,
    "id": string,
    "arguments": string_or_object,
    "summary": array,
}


def _responses_item(item: JSON) -> None:
    if "role" in item:
        _message(item)
    check_keys(item, _ITEM_KEYS)


def _responses_input(value: Any) -> None:
    if type(value) is not str:
        objects("input items", _responses_item)(value)


def _system(value: Any) -> None:
    if type(value) is not str:
        objects("text blocks", _typed)(value)


def _tool_choice(value: Any) -> None:
    string_or_object(value)
    if type(value) is dict:
        _typed(value)


def echoed(check: Check) -> Check:
    """``check``, then proof that the value can be written back: the Responses object a translating route
    returns echoes these fields, so orjson must be able to serialise them (at most ``MAX_DEPTH`` levels)."""

    def run(value: Any) -> None:
        check(value)
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            steps = too_deep(value, 1) or []
            raise Invalid(f"at most {MAX_DEPTH} levels of nesting", {}, *steps) from None

    return run


def _one(value: Any) -> bool:
    return value is None or value == 1


def _text_only(value: Any) -> bool:
    return value is None or (type(value) is list and all(m == "text" for m in value))


TOKENS = integer(1, MAX_TOKENS)
UNIT = number(0, 1)
PENALTY = number(-2, 2)
LOGPROBS = integer(0, 20)
_thinking = shaped({"type": string, "budget_tokens": integer(0, MAX_TOKENS)})
_output_config = shaped({"effort": string, "format": obj})
_response_format = shaped({"type": string, "json_schema": obj})
_stream_options = shaped({"include_usage": boolean})
_text_config = shaped({"format": obj, "verbosity": string})
_reasoning = shaped({"effort": string, "summary": string})

# --- dispositions shared by several fields ------------------------------------------------------------------

_CODEX_SAMPLING = ignored("the Codex backend takes no sampling parameters and answers 400 to them")
_CODEX_LIMIT = ignored("the Codex backend takes no output-token limit and answers 400 to one")
_CODEX_USER = ignored("the Codex backend takes no end-user id and answers 400 to one")
_STORE_TAGS = ignored("store-side tags for stored completions; this proxy stores none")
_CACHE_TUNING = ignored("prompt caching is the upstream's own; its cache options cannot be set through it")
_NO_LOGPROBS = refused("the upstream returns no token log probabilities")
_ROUTING = ignored("Anthropic account routing and accounting; no Codex backend equivalent")
_SERVICE_TIER = ignored("a subscription is served at the tier of its plan")

# --- Anthropic Messages (POST .../v1/messages, .../v1/messages/count_tokens) -------------------------------

ANTHROPIC: dict[str, Field] = {
    "model": Field(string, H, T),
    "messages": Field(array, H, T, deep=messages(_message)),
    "max_tokens": Field(TOKENS, H, _CODEX_LIMIT),
    "system": Field(string_or_array, H, T, deep=_system),
    "stream": Field(boolean, H, T),
    "temperature": Field(UNIT, H, _CODEX_SAMPLING),
    "top_p": Field(UNIT, H, _CODEX_SAMPLING),
    "top_k": Field(integer(0, INT64), H, _CODEX_SAMPLING),
    "stop_sequences": Field(string_list, H, refused("the Codex backend has no stop sequences")),
    "tools": Field(array, H, T, deep=objects("tools", lambda tool: check_keys(tool, _FLAT_TOOL_KEYS))),
    "tool_choice": Field(obj, H, T, deep=_tool_choice),
    "thinking": Field(obj, H, T, deep=_thinking),
    "output_config": Field(obj, H, T, deep=_output_config),
    "metadata": Field(string_values, H, ignored("the Codex backend takes no metadata")),
    "service_tier": Field(string, H, _SERVICE_TIER),
    "cache_control": Field(obj, H, ignored("the Codex backend caches by session on its own")),
    "context_management": Field(
        anything, H, ignored("context editing is Anthropic-side; no backend equivalent")
    ),
    "container": Field(anything, H, refused("code-execution containers have no Responses equivalent")),
    "mcp_servers": Field(array, H, refused("remote MCP servers are not supported on this upstream")),
    "betas": Field(string_list, H, ignored("Anthropic beta tags mean nothing to the Codex backend")),
    "compaction": Field(anything, H, refused("server-side compaction is Anthropic's; the backend has none")),
    "fallbacks": Field(anything, H, refused("model fallbacks are Anthropic's; the backend has none")),
    "thread": Field(anything, H, refused("server-side threads are Anthropic's; the backend has none")),
    "diagnostics": Field(anything, H, _ROUTING),
    "inference_geo": Field(anything, H, _ROUTING),
    "speed": Field(anything, H, _ROUTING),
    "user_profile_id": Field(anything, H, _ROUTING),
    "workspace_id": Field(anything, H, _ROUTING),
    "billing_policy": Field(anything, H, _ROUTING),
    "fallback_credit_token": Field(anything, H, _ROUTING),
}

# --- OpenAI Chat Completions (POST .../v1/chat/completions) ------------------------------------------------

_ANTHROPIC_EXT = ignored("an Anthropic extension field; use reasoning_effort on this upstream")
CHAT: dict[str, Field] = {
    "model": Field(string, T, T),
    "messages": Field(array, T, T, deep=messages(_chat_message)),
    "stream": Field(boolean, T, T),
    "stream_options": Field(obj, T, T, deep=_stream_options),
    "max_tokens": Field(TOKENS, T, _CODEX_LIMIT),
    "max_completion_tokens": Field(TOKENS, T, _CODEX_LIMIT),
    "temperature": Field(number(0, 2), T, _CODEX_SAMPLING),
    "top_p": Field(UNIT, T, _CODEX_SAMPLING),
    "top_k": Field(integer(0, INT64), T, _CODEX_SAMPLING),  # Anthropic-native extension
    "thinking": Field(obj, T, _ANTHROPIC_EXT, deep=_thinking),  # Anthropic-native extension
    "stop": Field(stop, T, refused("the Codex backend has no stop sequences")),
    "n": same(integer(1, 128), refused("the upstream returns one choice per request; n must be 1", _one)),
    "tools": Field(array, T, T, deep=objects("tools", lambda tool: check_keys(tool, _CHAT_TOOL_KEYS))),
    "tool_choice": Field(anything, T, T, deep=_tool_choice),
    "parallel_tool_calls": Field(boolean, T, H),
    "response_format": Field(obj, T, T, deep=_response_format),
    "reasoning_effort": Field(string, T, T),
    "verbosity": Field(string, ignored("Anthropic has no verbosity setting"), T),
    "metadata": Field(string_values, _STORE_TAGS, _STORE_TAGS),
    "store": Field(boolean, _STORE_TAGS, _STORE_TAGS),
    "user": Field(string, T, _CODEX_USER),
    "safety_identifier": Field(string, T, _CODEX_USER),
    "service_tier": Field(string, _SERVICE_TIER, H),
    "prompt_cache_key": Field(string, ignored("Anthropic caches by cache_control marks"), H),
    "prompt_cache_retention": Field(string, _CACHE_TUNING, _CACHE_TUNING),
    "prompt_cache_options": Field(anything, _CACHE_TUNING, _CACHE_TUNING),
    "seed": same(integer(-INT64 - 1, INT64), ignored("sampling is not reproducible upstream")),
    "frequency_penalty": same(PENALTY, ignored("the upstream has no repetition penalties")),
    "presence_penalty": same(PENALTY, ignored("the upstream has no repetition penalties")),
    "moderation": same(anything, ignored("the upstream applies its own moderation")),
    "logprobs": Field(boolean, _NO_LOGPROBS, _NO_LOGPROBS),
    "top_logprobs": Field(LOGPROBS, _NO_LOGPROBS, _NO_LOGPROBS),
    "logit_bias": same(obj, refused("the upstream has no token biasing")),
    "audio": same(anything, refused("the upstream produces no audio")),
    "modalities": same(string_list, refused("only text output is supported", _text_only)),
    "functions": same(anything, refused("the legacy functions API is not supported; use tools")),
    "function_call": same(anything, refused("the legacy functions API is not supported; use tool_choice")),
    "prediction": same(anything, refused("predicted outputs are not supported")),
    "web_search_options": same(anything, refused("web search options are not supported; use a tool")),
}

# --- OpenAI Responses (POST .../v1/responses) ---------------------------------------------------------------

RESPONSES: dict[str, Field] = {
    "model": Field(string, T, H),
    "input": Field(string_or_array, T, H, deep=_responses_input),
    "instructions": Field(string, T, H),
    "stream": Field(boolean, T, T),  # the backend always streams; a non-streaming answer is collected
    "tools": Field(
        array, T, H, deep=echoed(objects("tools", lambda tool: check_keys(tool, _FLAT_TOOL_KEYS)))
    ),
    "tool_choice": Field(string_or_object, T, H, deep=echoed(_tool_choice)),
    "parallel_tool_calls": Field(boolean, T, H),
    "text": Field(obj, T, H, deep=echoed(_text_config)),
    "reasoning": Field(obj, T, H, deep=echoed(_reasoning)),
    "include": Field(string_list, ignored("Anthropic returns reasoning in full, encrypted or not"), H),
    "store": same(boolean, H),  # false: the proxy's response store does not keep this response
    "max_output_tokens": Field(TOKENS, T, _CODEX_LIMIT),
    "temperature": Field(number(0, 2), T, _CODEX_SAMPLING),
    "top_p": Field(UNIT, T, _CODEX_SAMPLING),
    "user": Field(string, T, _CODEX_USER),
    "safety_identifier": Field(string, T, _CODEX_USER),
    "metadata": Field(string_values, _STORE_TAGS, _STORE_TAGS),
    "service_tier": Field(string, _SERVICE_TIER, H),
    "prompt_cache_key": Field(string, ignored("Anthropic caches by cache_control marks"), H),
    "prompt_cache_retention": Field(string, _CACHE_TUNING, _CACHE_TUNING),
    "prompt_cache_options": Field(anything, _CACHE_TUNING, _CACHE_TUNING),
    "client_metadata": Field(obj, ignored("Codex client details mean nothing to Anthropic"), H),
    "truncation": same(string, ignored("the input is sent whole; one too long fails upstream")),
    "context_management": same(anything, ignored("no server-side context edits upstream")),
    "stream_options": same(obj, ignored("stream obfuscation padding is never added")),
    "moderation": same(anything, ignored("the upstream applies its own moderation")),
    "access_programs": same(anything, ignored("OpenAI platform access programs do not apply")),
    "previous_response_id": same(string, H),  # expanded from the proxy's response store before translation
    "conversation": same(anything, refused("this proxy keeps no conversation state; send the full input")),
    "background": same(boolean, refused("background responses are not supported")),
    "background_options": same(anything, refused("background responses are not supported")),
    "prompt": same(anything, refused("stored prompt templates are not supported")),
    "image": same(anything, refused("image generation options are not supported")),
    "top_logprobs": Field(LOGPROBS, _NO_LOGPROBS, _NO_LOGPROBS),
    "max_tool_calls": same(integer(0, INT64), refused("the upstream has no tool call limit")),
}

TABLES: dict[Format, dict[str, Field]] = {
    Format.ANTHROPIC: ANTHROPIC,
    Format.CHAT: CHAT,
    Format.RESPONSES: RESPONSES,
}


# Per route (client format, upstream format): name → (the JSON type that needs no further check, or None;
# the shape check, or None for ``anything``; the refusal, or None; the nested walk, or None). The plain-type
# fast path spares a function call per field.
_Entry = tuple[type | None, Check | None, Disposition | None, Check | None]
_PLAIN: dict[Check, type] = {string: str, boolean: bool, obj: dict, array: list}


def _entry(spec: Field, client: Format, upstream: Format) -> _Entry:
    disposition = spec.on(upstream)
    return (
        _PLAIN.get(spec.check),
        None if spec.check is anything else spec.check,
        disposition if disposition.kind is Kind.REFUSED else None,
        None if client is upstream else spec.deep,
    )


_ROUTES: dict[Format, dict[Format, dict[str, _Entry]]] = {
    client: {
        upstream: {name: _entry(spec, client, upstream) for name, spec in table.items()}
        for upstream in (Format.ANTHROPIC, Format.RESPONSES)
    }
    for client, table in TABLES.items()
}


def validate(client: Format, upstream: Format, body: JSON) -> None:
    """Raise ``TranslationError`` (a 400 in the caller's format, naming the field) for a malformed body.

    Cost: a dict lookup and a type check per field present; nested walks only on translating routes."""
    table = _ROUTES[client][upstream]
    for name, value in body.items():
        entry = table.get(name)
        if entry is None:
            if client is upstream:
                continue  # the upstream judges fields it knows and this table does not
            raise TranslationError(
                f"{name}: unknown parameter for {client.value} requests on this route", param=name
            )
        if value is None:
            continue  # null is "not set" for every field
        plain, check, refusal, deep = entry
        try:
            if check is not None and type(value) is not plain:
                check(value)
            if deep is not None:
                deep(value)
        except Invalid as bad:
            raise bad.error(name) from None
        if refusal is not None and refusal.refuses(value):
            raise TranslationError(f"{name} is not supported on this route: {refusal.reason}", param=name)


def disposition_markdown() -> str:
    """The field table as documented in ``docs/formats.md`` (a test keeps the two equal)."""
    lines: list[str] = []
    for fmt, title in (
        (Format.ANTHROPIC, "Anthropic Messages"),
        (Format.CHAT, "Chat Completions"),
        (Format.RESPONSES, "Responses"),
    ):
        lines += [
            f"#### {title}",
            "",
            "| field | `/api` (Anthropic) | `/api/codex` (Codex backend) |",
            "|---|---|---|",
        ]
        for name, spec in TABLES[fmt].items():
            lines.append(f"| `{name}` | {_cell(spec.claude)} | {_cell(spec.codex)} |")
        lines.append("")
    return "\n".join(lines)


def _cell(disposition: Disposition) -> str:
    return f"{disposition.kind.value}: {disposition.reason}" if disposition.reason else disposition.kind.value
