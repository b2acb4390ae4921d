"""Chat Completions client → Responses upstream: request mapping, refusals and the chunk stream rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccproxy.formats.base import Format, TranslationContext, TranslationError, get_translation
from ccproxy.formats.chat_on_responses import ChatStream, convert_request, convert_response
from ccproxy.formats.fields import validate
from ccproxy.sse import DONE, SSEParser

JSON = dict[str, Any]


def chunks(out: bytes) -> list[JSON]:
    return [json.loads(e.data) for e in SSEParser().feed(out) if e.data != "[DONE]"]


def call_events() -> list[JSON]:
    call = {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "",
    }
    return [
        {"type": "response.created", "response": {"id": "resp_9", "created_at": 123}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs"}},
        {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "hidden"},
        {"type": "response.output_item.added", "output_index": 1, "item": call},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": '{"city":'},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": '"Paris"}'},
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": {**call, "arguments": '{"city":"Paris"}'},
        },
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": {**call, "call_id": "call_2", "id": "fc_2"},
        },
        {
            "type": "response.output_item.done",
            "output_index": 2,
            "item": {**call, "call_id": "call_2", "id": "fc_2"},
        },
        {
            "type": "response.completed",
            "response": {"status": "completed", "usage": {"input_tokens": 10, "output_tokens": 5}},
        },
    ]


def run(events: list[JSON], request: JSON | None = None) -> bytes:
    translator = ChatStream(TranslationContext(model="gpt-5", request=request or {}))
    return b"".join(translator.feed(e["type"], e) for e in events) + translator.finish()


def test_registered() -> None:
    assert get_translation(Format.CHAT, Format.RESPONSES).stream is ChatStream


def test_request_mapping() -> None:
    body = {
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
            {"role": "developer", "content": "later"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "max_tokens": 5,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True},
        },
        "seed": 1,
        "stream_options": {"include_usage": True},
    }
    out = convert_request(body)
    assert out["instructions"] == "Be brief.\n\nUse tools."
    assert out["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "later"}]},
    ]
    assert out["tools"] == [
        {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    ]
    assert out["tool_choice"] == {"type": "function", "name": "f"}
    assert out["max_output_tokens"] == 16  # Responses' minimum
    assert out["reasoning"] == {"effort": "low"}
    assert out["text"] == {
        "format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": True}
    }
    assert "seed" not in out and "stream_options" not in out


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"stop": "END"}, "stop"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_refused_with_param(patch: JSON, param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(TranslationError) as exc:
        validate(Format.CHAT, Format.RESPONSES, body)
        convert_request(body)
    assert exc.value.param == param


def test_stream_tool_calls_first_delta_only_and_done_held_back() -> None:
    translator = ChatStream(TranslationContext(model="gpt-5"))
    body = b"".join(translator.feed(e["type"], e) for e in call_events())
    assert DONE not in body  # held until the upstream ends, so a late error can still be delivered
    out = body + translator.finish()
    assert out.endswith(DONE)
    parsed = chunks(out)
    assert {c["id"] for c in parsed} == {"chatcmpl-resp_9"} and {c["created"] for c in parsed} == {123}
    calls = [tc for c in parsed for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert calls[1:3] == [
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    assert calls[3]["index"] == 1 and calls[3]["id"] == "call_2"
    assert calls[4] == {"index": 1, "function": {"arguments": "{}"}}  # no arguments at all still parses
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert b"hidden" not in out  # Chat has no place for reasoning text
    assert all("usage" not in c for c in parsed)


def test_usage_chunk_when_asked() -> None:
    parsed = chunks(run(call_events(), {"stream_options": {"include_usage": True}}))
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"]["prompt_tokens"] == 10 and parsed[-1]["usage"]["total_tokens"] == 15


def test_late_error_after_completed_is_dropped() -> None:
    # Issue 10 item 7: the terminal event closed the answer; a later error is logged, not sent.
    events = [*call_events(), {"type": "error", "error": {"type": "server_error", "message": "late"}}]
    out = run(events)
    assert out.endswith(DONE)
    assert all("error" not in chunk for chunk in chunks(out))


def test_transport_failure() -> None:
    translator = ChatStream(TranslationContext(model="m"))
    out = translator.fail(502, "api_error", "upstream closed") + translator.finish()
    assert chunks(out) == [
        {
            "error": {
                "message": "upstream closed",
                "type": "server_error",
                "param": None,
                "code": "server_error",
            }
        }
    ]
    assert out.endswith(DONE)


def test_refusal_stream_and_response() -> None:
    events = [
        {"type": "response.refusal.delta", "output_index": 0, "content_index": 0, "delta": "No."},
        {"type": "response.completed", "response": {"status": "completed"}},
    ]
    parsed = chunks(run(events))
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "refusal": "No."}
    response = {
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}],
    }
    message = convert_response(response, TranslationContext(model="m"))["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "refusal": "No."}
