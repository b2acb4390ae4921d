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

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from ccproxy.formats.base import JSON, Format, TranslationError

# JSON nesting the proxy can always write back (orjson refuses more than 255 levels).
MAX_DEPTH = 255
INT64 = (1 << 63) - 1
MAX_TOKENS = (1 << 31) - 1  # both upstreams' own ceiling for any token count


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


Check = Callable[[Any, str], None]  # raises TranslationError naming the path and what was expected


@dataclass(frozen=True, slots=True)
class Field:
    check: Check
    claude: Disposition  # /api: an Anthropic Messages upstream
    codex: Disposition  # /api/codex: the ChatGPT Codex backend (Responses)
    deep: Check | None = None  # the nested walk, run only where the field is translated

    def on(self, upstream: Format) -> Disposition:
        return self.claude if upstream is Format.ANTHROPIC else self.codex


def same(check: Check, disposition: Disposition) -> Field:
    """A field every route treats alike."""
    return Field(check, disposition, disposition)


H = Disposition(Kind.HONOURED)
T = Disposition(Kind.TRANSLATED)


def ignored(reason: str) -> Disposition:
    return Disposition(Kind.IGNORED, reason)


def refused(reason: str, allow: Callable[[Any], bool] | None = None) -> Disposition:
    return Disposition(Kind.REFUSED, reason, allow)


# --- shape checks ----------------------------------------------------------------------------------------

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}


def fail(path: str, expected: str, value: Any) -> TranslationError:
    got = "null" if value is None else _JSON_TYPES.get(type(value), "a number")
    if type(value) in (int, float) and expected.startswith(("an integer", "a number")):
        got = repr(value)
    return TranslationError(f"{path}: expected {expected}, got {got}", param=path)


def string(value: Any, path: str) -> None:
    if type(value) is not str:
        raise fail(path, "a string", value)


def boolean(value: Any, path: str) -> None:
    if type(value) is not bool:
        raise fail(path, "a boolean (true or false)", value)


def obj(value: Any, path: str) -> None:
    if type(value) is not dict:
        raise fail(path, "an object", value)


def array(value: Any, path: str) -> None:
    if type(value) is not list:
        raise fail(path, "an array", value)


def optional(check: Check) -> Check:
    def run(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return run


def integer(low: int, high: int) -> Check:
    expected = f"an integer from {low} to {high}"

    def run(value: Any, path: str) -> None:
        if type(value) is not int or not low <= value <= high:
            raise fail(path, expected, value)

    return optional(run)


def number(low: float, high: float) -> Check:
    expected = f"a number from {low:g} to {high:g}"

    def run(value: Any, path: str) -> None:
        if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
            raise fail(path, expected, value)

    return optional(run)


def string_or_array(value: Any, path: str) -> None:
    if value is not None and type(value) not in (str, list):
        raise fail(path, "a string or an array", value)


def string_or_object(value: Any, path: str) -> None:
    if value is not None and type(value) not in (str, dict):
        raise fail(path, "a string or an object", value)


def string_list(value: Any, path: str) -> None:
    if value is None:
        return
    if type(value) is not list:
        raise fail(path, "an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise fail(f"{path}[{i}]", "a string", item)


def stop(value: Any, path: str) -> None:
    if type(value) is not str:
        string_list(value, path)


def string_map(value: Any, path: str) -> None:
    """OpenAI ``metadata``: string keys to string values."""
    if value is None:
        return
    if type(value) is not dict:
        raise fail(path, "an object of strings", value)
    for key, item in value.items():
        if type(item) is not str:
            raise fail(f"{path}.{key}", "a string", item)


def anthropic_metadata(value: Any, path: str) -> None:
    """Anthropic ``metadata``: ``user_id``, a string or null (the API takes no other key)."""
    obj(value, path)
    for key, item in value.items():
        if item is not None and type(item) is not str:
            raise fail(f"{path}.{key}", "a string", item)


ANY: Check = lambda value, path: None  # noqa: E731  (the upstream or the translator judges the value)
OPT_STRING = optional(string)
OPT_BOOL = optional(boolean)
OPT_OBJECT = optional(obj)
OPT_ARRAY = optional(array)


def objects(what: str, item_check: Callable[[JSON, str], None] | None = None) -> Check:
    """An array of objects, each given to ``item_check``."""

    def run(value: Any, path: str) -> None:
        if value is None:
            return
        if type(value) is not list:
            raise fail(path, f"an array of {what}", value)
        for i, item in enumerate(value):
            if type(item) is not dict:
                raise fail(f"{path}[{i}]", f"{what[:-1] if what.endswith('s') else what} object", item)
            if item_check is not None:
                item_check(item, f"{path}[{i}]")

    return run


def _typed(item: JSON, path: str) -> None:
    kind = item.get("type")
    if kind is not None and type(kind) is not str:
        raise fail(f"{path}.type", "a string", kind)


def _content(value: Any, path: str) -> None:
    """Message content: a string or an array of typed part objects."""
    if value is None or type(value) is str:
        return
    objects("content parts", _typed)(value, path)


def _message(item: JSON, path: str) -> None:
    role = item.get("role")
    if type(role) is not str:
        raise fail(f"{path}.role", "a string", role)
    _content(item.get("content"), f"{path}.content")


def _chat_message(item: JSON, path: str) -> None:
    _message(item, path)
    objects("tool calls", _tool_call)(item.get("tool_calls"), f"{path}.tool_calls")
    for key in ("tool_call_id", "name", "refusal", "reasoning_content"):
        OPT_STRING(item.get(key), f"{path}.{key}")
    OPT_ARRAY(item.get("thinking_blocks"), f"{path}.thinking_blocks")


def _tool_call(item: JSON, path: str) -> None:
    _typed(item, path)
    OPT_STRING(item.get("id"), f"{path}.id")
    function = item.get("function")
    if function is not None:
        obj(function, f"{path}.function")
        OPT_STRING(function.get("name"), f"{path}.function.name")
        string_or_object(function.get("arguments"), f"{path}.function.arguments")


def _chat_tool(item: JSON, path: str) -> None:
    _typed(item, path)
    for key in ("function", "custom"):
        spec = item.get(key)
        if spec is not None:
            obj(spec, f"{path}.{key}")
            OPT_STRING(spec.get("name"), f"{path}.{key}.name")
            OPT_STRING(spec.get("description"), f"{path}.{key}.description")
            OPT_OBJECT(spec.get("parameters"), f"{path}.{key}.parameters")


def _flat_tool(item: JSON, path: str) -> None:
    """A Responses or Anthropic tool: ``name``, ``description`` and the schema on the tool itself."""
    _typed(item, path)
    OPT_STRING(item.get("name"), f"{path}.name")
    OPT_STRING(item.get("description"), f"{path}.description")
    for key in ("parameters", "input_schema"):
        OPT_OBJECT(item.get(key), f"{path}.{key}")


def _responses_item(item: JSON, path: str) -> None:
    _typed(item, path)
    if "role" in item or item.get("type") in (None, "message"):
        _message(item, path)
    for key in ("call_id", "name", "id"):
        OPT_STRING(item.get(key), f"{path}.{key}")
    arguments = item.get("arguments")
    if arguments is not None:
        string_or_object(arguments, f"{path}.arguments")
    OPT_ARRAY(item.get("summary"), f"{path}.summary")


def _responses_input(value: Any, path: str) -> None:
    if type(value) is not str:
        objects("input items", _responses_item)(value, path)


def _system(value: Any, path: str) -> None:
    if type(value) is not str:
        objects("text blocks", _typed)(value, path)


def _tool_choice_shape(value: Any, path: str) -> None:
    string_or_object(value, path)
    if type(value) is dict:
        _typed(value, path)


def _text_config(value: Any, path: str) -> None:
    if value is None:
        return
    obj(value, path)
    OPT_OBJECT(value.get("format"), f"{path}.format")
    OPT_STRING(value.get("verbosity"), f"{path}.verbosity")


def _reasoning(value: Any, path: str) -> None:
    if value is None:
        return
    obj(value, path)
    for key in ("effort", "summary"):
        OPT_STRING(value.get(key), f"{path}.{key}")


def _thinking(value: Any, path: str) -> None:
    if value is None:
        return
    obj(value, path)
    OPT_STRING(value.get("type"), f"{path}.type")
    integer(0, MAX_TOKENS)(value.get("budget_tokens"), f"{path}.budget_tokens")


def _output_config(value: Any, path: str) -> None:
    if value is None:
        return
    obj(value, path)
    OPT_STRING(value.get("effort"), f"{path}.effort")
    OPT_OBJECT(value.get("format"), f"{path}.format")


def _response_format(value: Any, path: str) -> None:
    if value is None:
        return
    obj(value, path)
    OPT_STRING(value.get("type"), f"{path}.type")
    OPT_OBJECT(value.get("json_schema"), f"{path}.json_schema")


def _stream_options(value: Any, path: str) -> None:
    if value is None:
        return
    obj(value, path)
    OPT_BOOL(value.get("include_usage"), f"{path}.include_usage")


def echoed(check: Check) -> Check:
    """``check``, then proof that the value can be written back: the Responses object a translating route
    returns echoes these fields, so orjson must be able to serialise them (at most ``MAX_DEPTH`` levels)."""

    def run(value: Any, path: str) -> None:
        check(value, path)
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            where = too_deep(value, path, 2) or path
            raise TranslationError(f"{where}: nested deeper than {MAX_DEPTH} levels", param=where) from None

    return run


def _one(value: Any) -> bool:
    return value is None or value == 1


def _text_only(value: Any) -> bool:
    return value is None or (type(value) is list and all(m == "text" for m in value))


TOKENS = integer(1, MAX_TOKENS)
UNIT = number(0, 1)
PENALTY = number(-2, 2)
LOGPROBS = integer(0, 20)

# --- dispositions shared by several fields ------------------------------------------------------------------

_NO_STATE = "this proxy keeps no response state; send the full input"
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
    "model": Field(OPT_STRING, H, T),
    "messages": Field(OPT_ARRAY, H, T, deep=objects("messages", _message)),
    "max_tokens": Field(TOKENS, H, _CODEX_LIMIT),
    "system": Field(optional(string_or_array), H, T, deep=optional(_system)),
    "stream": Field(OPT_BOOL, H, T),
    "temperature": Field(UNIT, H, _CODEX_SAMPLING),
    "top_p": Field(UNIT, H, _CODEX_SAMPLING),
    "top_k": Field(integer(0, INT64), H, _CODEX_SAMPLING),
    "stop_sequences": Field(string_list, H, refused("the Codex backend has no stop sequences")),
    "tools": Field(OPT_ARRAY, H, T, deep=objects("tools", _flat_tool)),
    "tool_choice": Field(optional(obj), H, T, deep=optional(_tool_choice_shape)),
    "thinking": Field(OPT_OBJECT, H, T, deep=_thinking),
    "output_config": Field(OPT_OBJECT, H, T, deep=_output_config),
    "metadata": Field(optional(anthropic_metadata), H, ignored("the Codex backend takes no metadata")),
    "service_tier": Field(OPT_STRING, H, _SERVICE_TIER),
    "cache_control": Field(OPT_OBJECT, H, ignored("the Codex backend caches by session on its own")),
    "context_management": Field(ANY, H, ignored("context edits are Anthropic-side; the backend has none")),
    "container": Field(ANY, H, refused("code-execution containers have no Responses equivalent")),
    "mcp_servers": Field(OPT_ARRAY, H, refused("remote MCP servers are not supported on this upstream")),
    "betas": Field(string_list, H, ignored("Anthropic beta tags mean nothing to the Codex backend")),
    "compaction": Field(ANY, H, refused("server-side compaction is Anthropic's; the backend has none")),
    "fallbacks": Field(ANY, H, refused("model fallbacks are Anthropic's; the backend has none")),
    "thread": Field(ANY, H, refused("server-side threads are Anthropic's; the backend has none")),
    "diagnostics": Field(ANY, H, _ROUTING),
    "inference_geo": Field(ANY, H, _ROUTING),
    "speed": Field(ANY, H, _ROUTING),
    "user_profile_id": Field(ANY, H, _ROUTING),
    "workspace_id": Field(ANY, H, _ROUTING),
    "billing_policy": Field(ANY, H, _ROUTING),
    "fallback_credit_token": Field(ANY, H, _ROUTING),
}

# --- OpenAI Chat Completions (POST .../v1/chat/completions) ------------------------------------------------

_ANTHROPIC_EXT = ignored("an Anthropic extension field; use reasoning_effort on this upstream")
CHAT: dict[str, Field] = {
    "model": Field(OPT_STRING, T, T),
    "messages": Field(OPT_ARRAY, T, T, deep=objects("messages", _chat_message)),
    "stream": Field(OPT_BOOL, T, T),
    "stream_options": Field(OPT_OBJECT, T, T, deep=_stream_options),
    "max_tokens": Field(TOKENS, T, _CODEX_LIMIT),
    "max_completion_tokens": Field(TOKENS, T, _CODEX_LIMIT),
    "temperature": Field(number(0, 2), T, _CODEX_SAMPLING),
    "top_p": Field(UNIT, T, _CODEX_SAMPLING),
    "top_k": Field(integer(0, INT64), T, _CODEX_SAMPLING),  # Anthropic-native extension
    "thinking": Field(OPT_OBJECT, T, _ANTHROPIC_EXT, deep=_thinking),  # Anthropic-native extension
    "stop": Field(stop, T, refused("the Codex backend has no stop sequences")),
    "n": same(integer(1, 128), refused("the upstream returns one choice per request; n must be 1", _one)),
    "tools": Field(OPT_ARRAY, T, T, deep=objects("tools", _chat_tool)),
    "tool_choice": Field(ANY, T, T, deep=_tool_choice_shape),
    "parallel_tool_calls": Field(OPT_BOOL, T, H),
    "response_format": Field(OPT_OBJECT, T, T, deep=_response_format),
    "reasoning_effort": Field(OPT_STRING, T, T),
    "verbosity": Field(OPT_STRING, ignored("Anthropic has no verbosity setting"), T),
    "metadata": Field(string_map, _STORE_TAGS, _STORE_TAGS),
    "store": Field(OPT_BOOL, _STORE_TAGS, _STORE_TAGS),
    "user": Field(OPT_STRING, T, _CODEX_USER),
    "safety_identifier": Field(OPT_STRING, T, _CODEX_USER),
    "service_tier": Field(OPT_STRING, _SERVICE_TIER, H),
    "prompt_cache_key": Field(OPT_STRING, ignored("Anthropic caches by cache_control marks"), H),
    "prompt_cache_retention": Field(OPT_STRING, _CACHE_TUNING, _CACHE_TUNING),
    "prompt_cache_options": Field(ANY, _CACHE_TUNING, _CACHE_TUNING),
    "seed": same(integer(-INT64 - 1, INT64), ignored("sampling is not reproducible upstream")),
    "frequency_penalty": same(PENALTY, ignored("the upstream has no repetition penalties")),
    "presence_penalty": same(PENALTY, ignored("the upstream has no repetition penalties")),
    "moderation": same(ANY, ignored("the upstream applies its own moderation")),
    "logprobs": Field(OPT_BOOL, _NO_LOGPROBS, _NO_LOGPROBS),
    "top_logprobs": Field(LOGPROBS, _NO_LOGPROBS, _NO_LOGPROBS),
    "logit_bias": same(OPT_OBJECT, refused("the upstream has no token biasing")),
    "audio": same(ANY, refused("the upstream produces no audio")),
    "modalities": same(string_list, refused("only text output is supported", _text_only)),
    "functions": same(ANY, refused("the legacy functions API is not supported; use tools")),
    "function_call": same(ANY, refused("the legacy functions API is not supported; use tool_choice")),
    "prediction": same(ANY, refused("predicted outputs are not supported")),
    "web_search_options": same(ANY, refused("web search options are not supported; use a tool")),
}

# --- OpenAI Responses (POST .../v1/responses) ---------------------------------------------------------------

RESPONSES: dict[str, Field] = {
    "model": Field(OPT_STRING, T, H),
    "input": Field(optional(string_or_array), T, H, deep=optional(_responses_input)),
    "instructions": Field(OPT_STRING, T, H),
    "stream": Field(OPT_BOOL, T, H),
    "tools": Field(OPT_ARRAY, T, H, deep=echoed(objects("tools", _flat_tool))),
    "tool_choice": Field(optional(string_or_object), T, H, deep=echoed(_tool_choice_shape)),
    "parallel_tool_calls": Field(OPT_BOOL, T, H),
    "text": Field(OPT_OBJECT, T, H, deep=echoed(_text_config)),
    "reasoning": Field(OPT_OBJECT, T, H, deep=echoed(_reasoning)),
    "include": Field(string_list, ignored("Anthropic returns reasoning in full, encrypted or not"), H),
    "store": Field(OPT_BOOL, ignored(_NO_STATE), H),
    "max_output_tokens": Field(TOKENS, T, _CODEX_LIMIT),
    "temperature": Field(number(0, 2), T, _CODEX_SAMPLING),
    "top_p": Field(UNIT, T, _CODEX_SAMPLING),
    "user": Field(OPT_STRING, T, _CODEX_USER),
    "safety_identifier": Field(OPT_STRING, T, _CODEX_USER),
    "metadata": Field(string_map, _STORE_TAGS, _STORE_TAGS),
    "service_tier": Field(OPT_STRING, _SERVICE_TIER, H),
    "prompt_cache_key": Field(OPT_STRING, ignored("Anthropic caches by cache_control marks"), H),
    "prompt_cache_retention": Field(OPT_STRING, _CACHE_TUNING, _CACHE_TUNING),
    "prompt_cache_options": Field(ANY, _CACHE_TUNING, _CACHE_TUNING),
    "client_metadata": Field(OPT_OBJECT, ignored("Codex client details mean nothing to Anthropic"), H),
    "truncation": same(OPT_STRING, ignored("the input is sent whole; one too long fails upstream")),
    "context_management": same(ANY, ignored("no server-side context edits upstream")),
    "stream_options": same(OPT_OBJECT, ignored("stream obfuscation padding is never added")),
    "moderation": same(ANY, ignored("the upstream applies its own moderation")),
    "access_programs": same(ANY, ignored("OpenAI platform access programs do not apply")),
    "previous_response_id": same(OPT_STRING, refused(_NO_STATE)),
    "conversation": same(ANY, refused("this proxy keeps no conversation state; send the full input")),
    "background": same(OPT_BOOL, refused("background responses are not supported")),
    "background_options": same(ANY, refused("background responses are not supported")),
    "prompt": same(ANY, refused("stored prompt templates are not supported")),
    "image": same(ANY, refused("image generation options are not supported")),
    "top_logprobs": Field(LOGPROBS, _NO_LOGPROBS, _NO_LOGPROBS),
    "max_tool_calls": same(integer(0, INT64), refused("the upstream has no tool call limit")),
}

TABLES: dict[Format, dict[str, Field]] = {
    Format.ANTHROPIC: ANTHROPIC,
    Format.CHAT: CHAT,
    Format.RESPONSES: RESPONSES,
}


def validate(client: Format, upstream: Format, body: JSON) -> None:
    """Raise ``TranslationError`` (a 400 in the caller's format, naming the field) for a malformed body."""
    table = TABLES[client]
    passthrough = client is upstream
    for name, value in body.items():
        spec = table.get(name)
        if spec is None:
            if passthrough:
                continue  # the upstream judges fields it knows and this table does not
            raise TranslationError(
                f"{name}: unknown parameter for {client.value} requests on this route", param=name
            )
        spec.check(value, name)
        disposition = spec.claude if upstream is Format.ANTHROPIC else spec.codex
        if disposition.kind is Kind.REFUSED and disposition.refuses(value):
            raise TranslationError(f"{name} is not supported on this route: {disposition.reason}", param=name)
        if spec.deep is not None and not passthrough:
            spec.deep(value, name)


def too_deep(value: Any, path: str = "", depth: int = 1) -> str | None:
    """The path of the first place ``value`` nests deeper than ``MAX_DEPTH`` (cold path: only after orjson
    refused to write a body back)."""
    if depth > MAX_DEPTH:
        return path or "(body)"
    if type(value) is dict:
        for key, item in value.items():
            found = too_deep(item, f"{path}.{key}" if path else str(key), depth + 1)
            if found:
                return found
    elif type(value) is list:
        for i, item in enumerate(value):
            found = too_deep(item, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


_HEADER = "| field | `/api` (Anthropic upstream) | `/api/codex` (Codex backend) |"


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
