"""Issue 10 item 2: every malformed request gets a 400 in the caller's format; none reaches a 500.

A hypothesis fuzz over every POST route of both providers (served on loopback against the fakes): valid
requests of each format with wrong types and shapes put into every field the field table knows and into the
nested places translators read (messages, content parts, tool calls, tools). Every answer must be below 500
and, when it is an error, in the caller's envelope. Crashers found on the way are kept below as explicit
regression cases (``CRASHERS``), each sent to every route of its format.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccproxy.formats.base import Format
from ccproxy.formats.fields import TABLES

JSON = dict[str, Any]

ROUTES: dict[Format, list[str]] = {
    Format.ANTHROPIC: ["/api/v1/messages", "/api/v1/messages/count_tokens", "/api/codex/v1/messages"],
    Format.CHAT: [
        "/api/v1/chat/completions",
        "/api/codex/v1/chat/completions",
        "/api/codex/s1/chat/completions",
    ],
    Format.RESPONSES: ["/api/v1/responses", "/api/codex/v1/responses", "/api/codex/s1/v1/responses"],
}

TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
VALID: dict[Format, list[JSON]] = {
    Format.ANTHROPIC: [
        {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "stream": True,
            "system": [{"type": "text", "text": "be brief"}],
            "tools": [{"name": "weather", "description": "d", "input_schema": TOOL_SCHEMA}],
            "tool_choice": {"type": "auto"},
            "metadata": {"user_id": "u1"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "x"}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
                },
            ],
        },
    ],
    Format.CHAT: [
        {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
        {
            "model": "gpt-5.4",
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 64,
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": TOOL_SCHEMA}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": TOOL_SCHEMA}},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "x"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        },
    ],
    Format.RESPONSES: [
        {"model": "gpt-5.4", "input": "hi"},
        {
            "model": "claude-sonnet-4-5",
            "stream": True,
            "instructions": "be brief",
            "max_output_tokens": 64,
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": TOOL_SCHEMA}},
            "tools": [{"type": "function", "name": "weather", "parameters": TOOL_SCHEMA}],
            "tool_choice": "auto",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "weather",
                    "arguments": '{"city":"x"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
        },
    ],
}


def _deep(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"a": value}
    return value


# Wrong values: every JSON type, out-of-range and oversized numbers, and nesting past what orjson writes.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([1e40, -1e40, 0.5, -1, 0, 2**63, 2**64 - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["", "abc", "yes", "user", "auto", "text", "function", "none", "required", "[DONE]"]),
)
# Objects shaped like the parts translators read (content parts, items, tools), with wrong values inside.
KNOWN_TYPES = [
    "text",
    "image",
    "image_url",
    "input_text",
    "input_image",
    "output_text",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "document",
    "file",
    "input_file",
    "function",
    "function_call",
    "function_call_output",
    "message",
    "reasoning",
    "custom",
    "custom_tool_call",
    "web_search",
    "refusal",
    "json_schema",
    "json_object",
    "auto",
    "any",
    "tool",
    "none",
    "allowed_tools",
    "enabled",
    "url",
    "base64",
]
PART_KEYS = [
    "text",
    "image_url",
    "url",
    "source",
    "input",
    "id",
    "name",
    "content",
    "tool_use_id",
    "call_id",
    "arguments",
    "output",
    "function",
    "parameters",
    "input_schema",
    "schema",
    "json_schema",
    "role",
    "summary",
    "encrypted_content",
    "signature",
    "thinking",
    "data",
    "file",
    "file_data",
    "detail",
    "format",
    "allowed_tools",
    "tools",
    "mode",
    "budget_tokens",
    "effort",
    "media_type",
    "is_error",
    "cache_control",
]
shaped = st.builds(
    lambda kind, extra: {"type": kind, **extra},
    st.sampled_from(KNOWN_TYPES),
    st.dictionaries(
        st.sampled_from(PART_KEYS), st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=4
    ),
)
wrong = st.one_of(
    scalars,
    shaped,
    st.lists(shaped, min_size=1, max_size=3),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["type", "role", "content", "name", "text", "x"]), scalars, max_size=3),
    st.sampled_from([_deep(300), [[[[[]]]]], [{"type": 1}], [None], [{"role": None}], {"type": None}]),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a valid body where a value can be swapped (the fields translators read)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


_DROP = object()  # instead of a wrong value: the key is removed (an object missing what it usually has)


def _put(body: JSON, path: tuple[Any, ...], value: Any) -> JSON:
    out = copy.deepcopy(body)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    if value is not _DROP:
        target[path[-1]] = value
    elif isinstance(target, dict):
        target.pop(path[-1], None)
    return out


@st.composite
def malformed(draw: st.DrawFn) -> tuple[Format, JSON]:
    fmt = draw(st.sampled_from(list(VALID)))
    body = draw(st.sampled_from(VALID[fmt]))
    for _ in range(draw(st.integers(1, 2))):
        places = _paths(body)
        if draw(st.booleans()) or not places:
            path: tuple[Any, ...] = (draw(st.sampled_from(sorted(TABLES[fmt]))),)  # any top-level field
        else:
            path = draw(st.sampled_from(places))  # a nested place of the body
        body = _put(body, path, draw(st.one_of(wrong, st.just(_DROP))))
    return fmt, body


def check_answer(fmt: Format, route: str, body: JSON, response: httpx.Response) -> None:
    sent = json.dumps(body)[:300]
    assert response.status_code < 500, (
        f"{route} answered {response.status_code} to {sent}: {response.text[:300]}"
    )
    if response.status_code < 400:
        return
    error = response.json()
    assert isinstance(error.get("error"), dict), (route, error)
    assert isinstance(error["error"].get("message"), str) and error["error"]["message"], (route, error)
    if fmt is Format.ANTHROPIC:
        assert error.get("type") == "error", (route, error)
    if response.status_code == 400:
        assert "Traceback" not in response.text


@pytest.fixture(scope="module")
def client(proxy: str) -> Any:
    with httpx.Client(base_url=proxy, timeout=10) as c:
        yield c


# Profiles: "fuzz" (the suite's: 300 fixed examples, ~10 s) and "fuzz-long" (fresh random examples, for a
# hunt: CCPROXY_FUZZ_PROFILE=fuzz-long; put what it finds into CRASHERS below).
settings.register_profile(
    "fuzz",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz-long", settings.get_profile("fuzz"), max_examples=5000, derandomize=False, database=None
)


@settings.get_profile(os.environ.get("CCPROXY_FUZZ_PROFILE", "fuzz"))
@given(case=malformed())
def test_malformed_requests_never_5xx(client: httpx.Client, case: tuple[Format, JSON]) -> None:
    fmt, body = case
    payload = json.dumps(body)  # the stdlib writes the 300-deep values orjson would refuse
    for route in ROUTES[fmt]:
        response = client.post(route, content=payload, headers={"content-type": "application/json"})
        check_answer(fmt, route, body, response)


def test_valid_bodies_are_served(client: httpx.Client) -> None:
    """The fuzz starts from requests every route serves, so a 400 there means the mutation, not the base."""
    for fmt, bodies in VALID.items():
        for body in bodies:
            for route in ROUTES[fmt]:
                response = client.post(route, json=body)
                assert response.status_code == 200, (route, response.text[:300])


# Crashers the fuzz (or the probe table) found, kept as explicit regression cases: (format, body
# patch over the first valid body, the field the 400 must name).
CRASHERS: list[tuple[Format, JSON, str]] = [
    (Format.CHAT, {"max_tokens": "abc"}, "max_tokens"),
    (Format.CHAT, {"tools": 1}, "tools"),
    (Format.CHAT, {"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
    (Format.CHAT, {"max_tokens": 1e40}, "max_tokens"),
    (Format.CHAT, {"stream": "yes"}, "stream"),
    (Format.ANTHROPIC, {"stream": "yes"}, "stream"),
    (Format.RESPONSES, {"stream": "yes"}, "stream"),
    (Format.ANTHROPIC, {"metadata": _deep(300)}, "metadata.a"),
    (Format.ANTHROPIC, {"max_tokens": 1e40}, "max_tokens"),
    (Format.RESPONSES, {"max_output_tokens": 2**64 - 1}, "max_output_tokens"),
    # found by the fuzz with only top-level checks: translators reading nested values of the wrong type
    (Format.CHAT, {"tools": [{"type": "function", "function": [{"name": "f"}]}]}, "tools[0].function"),
    (Format.CHAT, {"response_format": {"type": "json_schema", "json_schema": "x"}}, "response_format"),
    (
        Format.CHAT,
        {"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": [1]}]}]},
        "messages[0].tool_calls[0].function",
    ),
    (Format.RESPONSES, {"reasoning": _deep(300)}, "reasoning.a"),
]


@pytest.mark.parametrize(("fmt", "patch", "param"), CRASHERS, ids=lambda v: str(v)[:40])
def test_crashers_get_a_400_naming_the_field(
    client: httpx.Client, fmt: Format, patch: JSON, param: str
) -> None:
    body = {**VALID[fmt][0], **patch}
    for route in ROUTES[fmt]:
        response = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
        check_answer(fmt, route, body, response)
        assert response.status_code == 400, (route, response.text[:300])
        error = response.json()["error"]
        assert error["message"].startswith(param), (route, error)
