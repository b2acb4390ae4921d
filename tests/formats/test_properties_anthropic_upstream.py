"""Property tests for Chat/Responses clients on an Anthropic upstream (hypothesis)."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from anthropic_upstream_support import (
    chat_final,
    responses_final,
    translate_stream,
    validate_anthropic_request,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccproxy.formats import chat_on_anthropic, common, responses_on_anthropic
from ccproxy.formats.base import TranslationContext, TranslationError
from ccproxy.sse import frame

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)
call_id = st.from_regex(r"call_[a-zA-Z0-9]{1,12}", fullmatch=True)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(name, inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(name, json_value, max_size=4)
image_url = st.sampled_from(["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="])

# --- random requests ------------------------------------------------------------------------------------


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    tools = draw(st.lists(name, max_size=3, unique=True))
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["system", "developer", "user", "user_parts", "assistant", "tool_turn"]))
        if kind in ("system", "developer"):
            messages.append({"role": kind, "content": draw(text)})
        elif kind == "user":
            messages.append({"role": "user", "content": draw(text)})
        elif kind == "user_parts":
            parts: list[dict[str, Any]] = [{"type": "text", "text": draw(text)}]
            if draw(st.booleans()):
                parts.append({"type": "image_url", "image_url": {"url": draw(image_url), "detail": "auto"}})
            messages.append({"role": "user", "content": parts})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(text)})
        elif tools:
            ids = draw(st.lists(call_id, min_size=1, max_size=3, unique=True))
            calls = [
                {
                    "id": i,
                    "type": "function",
                    "function": {
                        "name": draw(st.sampled_from(tools)),
                        "arguments": json.dumps(draw(arguments)),
                    },
                }
                for i in ids
            ]
            messages.append(
                {"role": "assistant", "content": draw(st.sampled_from(["", None])), "tool_calls": calls}
            )
            messages.extend({"role": "tool", "tool_call_id": i, "content": draw(text)} for i in ids)
    messages.append({"role": "user", "content": draw(text)})
    body: dict[str, Any] = {"model": "gpt-4o", "messages": messages}
    if tools:
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
            for n in tools
        ]
        choice = draw(st.sampled_from(["auto", "none", "required", None, "named"]))
        if choice == "named":
            body["tool_choice"] = {"type": "function", "function": {"name": tools[0]}}
        elif choice:
            body["tool_choice"] = choice
        if draw(st.booleans()):
            body["parallel_tool_calls"] = False
    optional = {
        "max_completion_tokens": st.integers(1, 64000),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stop": st.one_of(text, st.lists(text, max_size=3)),
        "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high"]),
        "user": text,
        "n": st.just(1),
        "seed": st.integers(0, 100),
        "stream": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


@st.composite
def responses_requests(draw: st.DrawFn) -> dict[str, Any]:
    tools = draw(st.lists(name, max_size=3, unique=True))
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["developer", "user", "assistant", "tool_turn"]))
        if kind == "developer":
            items.append({"role": "developer", "content": draw(text)})
        elif kind == "user":
            parts: list[dict[str, Any]] = [{"type": "input_text", "text": draw(text)}]
            if draw(st.booleans()):
                parts.append({"type": "input_image", "image_url": draw(image_url), "detail": "auto"})
            items.append({"type": "message", "role": "user", "content": parts})
        elif kind == "assistant":
            items.append({"role": "assistant", "content": [{"type": "output_text", "text": draw(text)}]})
        elif tools:
            ids = draw(st.lists(call_id, min_size=1, max_size=3, unique=True))
            for i in ids:
                items.append(
                    {
                        "type": "function_call",
                        "call_id": i,
                        "name": draw(st.sampled_from(tools)),
                        "arguments": json.dumps(draw(arguments)),
                    }
                )
            items.extend({"type": "function_call_output", "call_id": i, "output": draw(text)} for i in ids)
    items.append({"role": "user", "content": draw(text)})
    body: dict[str, Any] = {"model": "gpt-5", "input": items}
    if tools:
        body["tools"] = [
            {"type": "function", "name": n, "parameters": {"type": "object"}, "strict": True} for n in tools
        ]
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required", {"type": "function", "name": tools[0]}])
        )
    optional = {
        "instructions": text,
        "max_output_tokens": st.integers(1, 64000),
        "temperature": st.floats(0, 2),
        "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(["minimal", "low", "medium", "high"])}),
        "text": st.just({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}),
        "store": st.booleans(),
        "parallel_tool_calls": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def _convert_or_refuse(convert: Any, body: dict[str, Any]) -> None:
    before = json.dumps(body, sort_keys=True)
    try:
        out = convert(body)
    except TranslationError as exc:
        assert exc.param and exc.status == 400
        return
    finally:
        assert json.dumps(body, sort_keys=True) == before
    validate_anthropic_request(out)


@SETTINGS
@given(chat_requests())
def test_random_chat_requests_convert(body: dict[str, Any]) -> None:
    _convert_or_refuse(chat_on_anthropic.convert_request, body)


@SETTINGS
@given(responses_requests())
def test_random_responses_requests_convert(body: dict[str, Any]) -> None:
    _convert_or_refuse(responses_on_anthropic.convert_request, body)


# --- random Anthropic streams ---------------------------------------------------------------------------

block = st.one_of(
    st.tuples(st.just("text"), st.lists(text, min_size=1, max_size=4)),
    st.tuples(
        st.just("tool_use"),
        st.tuples(st.from_regex(r"toolu_[a-zA-Z0-9]{4,10}", fullmatch=True), name, arguments),
    ),
    st.tuples(st.just("thinking"), st.tuples(st.lists(text, max_size=3), text)),
    st.tuples(st.just("redacted_thinking"), text),
)


def _split(s: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(s), *(c % (len(s) + 1) for c in cuts)})
    return [s[a:b] for a, b in pairwise(points)]


@st.composite
def anthropic_streams(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]], str]:
    """``(sse bytes, final content blocks, stop_reason)`` of a random, valid Anthropic stream."""
    blocks = draw(st.lists(block, max_size=5))
    stop = draw(st.sampled_from(["end_turn", "tool_use", "stop_sequence", "pause_turn"]))
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 5,
                        "output_tokens": 1,
                        "cache_read_input_tokens": draw(st.integers(0, 9)),
                    },
                },
            },
        )
    ]
    content: list[dict[str, Any]] = []
    for index, (kind, value) in enumerate(blocks):
        start: dict[str, Any]
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": t} for t in value]
            content.append({"type": "text", "text": "".join(value)})
        elif kind == "tool_use":
            tid, tname, args = value
            tid = f"{tid}{index}"  # tool ids are unique within a message
            start = {"type": "tool_use", "id": tid, "name": tname, "input": {}}
            encoded = json.dumps(args)
            pieces = ["", *_split(encoded, draw(st.lists(st.integers(0, 1000), max_size=4)))]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            content.append({"type": "tool_use", "id": tid, "name": tname, "input": args})
        elif kind == "thinking":
            parts, signature = value
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": t} for t in parts]
            deltas.append({"type": "signature_delta", "signature": signature})
            content.append({"type": "thinking", "thinking": "".join(parts), "signature": signature})
        else:
            start = {"type": "redacted_thinking", "data": value}
            content.append({"type": "redacted_thinking", "data": value})
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        )
    )
    if draw(st.booleans()):  # an abrupt end loses message_stop
        events.append(("message_stop", {"type": "message_stop"}))
    for _ in range(draw(st.integers(0, 3))):
        events.insert(draw(st.integers(1, len(events))), ("ping", {"type": "ping"}))
    raw = b"".join(frame(e, d) for e, d in events)
    return raw, content, stop


def _expected(content: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str, Any]]]:
    texts = "".join(b["text"] for b in content if b["type"] == "text")
    return texts, [(b["id"], b["name"], b["input"]) for b in content if b["type"] == "tool_use"]


@SETTINGS
@given(anthropic_streams(), st.integers(0, 64))
def test_random_streams_accumulate_in_chat_sdk(stream: Any, chunk: int) -> None:
    raw, content, stop = stream
    ctx = TranslationContext("gpt-4o", {"stream_options": {"include_usage": True}})
    out = translate_stream(chat_on_anthropic.ChatStream(ctx), raw, chunk)
    completion = chat_final(out)
    message = completion.choices[0].message
    text, tools = _expected(content)
    assert (message.content or "") == text
    got = [(t.id, t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls or []]
    assert got == tools
    assert completion.choices[0].finish_reason == common.chat_finish_reason(stop)
    assert completion.usage is not None and completion.usage.completion_tokens == 42
    thinking = [b for b in content if b["type"] in ("thinking", "redacted_thinking")]
    assert (message.model_extra or {}).get("thinking_blocks", []) == [
        {"index": i, **b} for i, b in enumerate(thinking)
    ]


@SETTINGS
@given(anthropic_streams(), st.integers(0, 64))
def test_random_streams_accumulate_in_responses_sdk(stream: Any, chunk: int) -> None:
    raw, content, _ = stream
    out = translate_stream(
        responses_on_anthropic.ResponsesStream(TranslationContext("gpt-5", {})), raw, chunk
    )
    events, final = responses_final(out)
    assert final is not None and final.status == "completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text, tools = _expected(content)
    assert final.output_text == text
    got = [(o.call_id, o.name, json.loads(o.arguments)) for o in final.output if o.type == "function_call"]
    assert got == tools
    thinking = [b for b in content if b["type"] in ("thinking", "redacted_thinking")]
    assert [
        common.decode_thinking_block(o.encrypted_content) for o in final.output if o.type == "reasoning"
    ] == thinking


@SETTINGS
@given(anthropic_streams(), st.integers(1, 20))
def test_truncated_streams_end_with_an_error(stream: Any, keep: int) -> None:
    raw, _, _ = stream
    frames = raw.split(b"\n\n")
    cut = (
        b"\n\n".join(
            f
            for f in frames[: min(keep, len(frames))]
            if b"message_delta" not in f and b"message_stop" not in f
        )
        + b"\n\n"
    )
    chat = translate_stream(chat_on_anthropic.ChatStream(TranslationContext("m", {})), cut)
    assert chat.endswith(b"data: [DONE]\n\n") and b'data: {"error":' in chat
    responses = translate_stream(responses_on_anthropic.ResponsesStream(TranslationContext("m", {})), cut)
    assert b"event: response.failed" in responses and responses.startswith(b"event: response.created")


# --- round trips -----------------------------------------------------------------------------------------


def _assistant_blocks(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for m in request["messages"] if m["role"] == "assistant" for b in m["content"]]


def _chat_carriable(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat carries thinking first, then one text, then tool calls."""
    thinking = [b for b in content if b["type"] in ("thinking", "redacted_thinking")]
    text = "".join(b["text"] for b in content if b["type"] == "text")
    tools = [b for b in content if b["type"] == "tool_use"]
    return thinking + ([{"type": "text", "text": text}] if text else []) + tools


@SETTINGS
@given(anthropic_streams())
def test_round_trip_through_chat(stream: Any) -> None:
    _, content, stop = stream
    message = {
        "id": "msg_1",
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    reply = chat_on_anthropic.convert_response(message, TranslationContext("gpt-4o"))["choices"][0]["message"]
    history = [{"role": "user", "content": "q"}, reply]
    history += [
        {"role": "tool", "tool_call_id": c["id"], "content": "r"} for c in reply.get("tool_calls") or []
    ]
    request = chat_on_anthropic.convert_request({"model": "m", "messages": history})
    assert _assistant_blocks(request) == _chat_carriable(content)


@SETTINGS
@given(anthropic_streams())
def test_round_trip_through_responses(stream: Any) -> None:
    _, content, stop = stream
    message = {
        "id": "msg_1",
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    output = responses_on_anthropic.convert_response(message, TranslationContext("gpt-5"))["output"]
    items = [{"role": "user", "content": "q"}, *output]
    items += [
        {"type": "function_call_output", "call_id": o["call_id"], "output": "r"}
        for o in output
        if o["type"] == "function_call"
    ]
    request = responses_on_anthropic.convert_request({"model": "m", "input": items})
    assert _assistant_blocks(request) == [b for b in content if not (b["type"] == "text" and not b["text"])]
