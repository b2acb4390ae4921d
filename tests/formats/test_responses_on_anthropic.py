"""Responses client → Anthropic upstream: request mapping, refusals, reasoning replay, stream events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic_upstream_support import validate_anthropic_request

from ccproxy.formats import common
from ccproxy.formats.base import Format, TranslationContext, TranslationError, get_translation
from ccproxy.formats.fields import validate
from ccproxy.formats.responses_on_anthropic import ResponsesStream, convert_request, convert_response


def test_registered() -> None:
    assert get_translation(Format.RESPONSES, Format.ANTHROPIC).stream is not None


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"temperature": -1}, "temperature"),
        ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ],
)
def test_refused_parameters_name_the_param(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        validate(Format.RESPONSES, Format.ANTHROPIC, {"model": "m", "input": "hi", **extra})
        convert_request({"model": "m", "input": "hi", **extra})
    assert err.value.param == param


def test_string_input_instructions_and_allowed_tools() -> None:
    tools = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("a", "b")]
    out = convert_request(
        {
            "model": "m",
            "input": "hi",
            "instructions": "be brief",
            "tools": tools,
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "b"}],
            },
        }
    )
    validate_anthropic_request(out)
    assert out["system"] == [{"type": "text", "text": "be brief"}]
    assert [t["name"] for t in out["tools"]] == ["b"] and out["tool_choice"] == {"type": "any"}


def test_reasoning_items_round_trip_and_foreign_ones_are_dropped() -> None:
    block = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    message = {
        "id": "msg_1",
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
        "content": [block, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}],
    }
    output = convert_response(message, TranslationContext("gpt-5"))["output"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    foreign = {"type": "reasoning", "id": "rs_x", "encrypted_content": "gAAAA", "summary": []}
    items = [
        {"role": "user", "content": "q"},
        foreign,
        *output,
        {
            "type": "function_call_output",
            "call_id": "toolu_1",
            "output": [{"type": "input_text", "text": "2"}],
        },
    ]
    out = convert_request({"model": "m", "input": items, "reasoning": {"effort": "low"}})
    validate_anthropic_request(out)
    assert out["messages"][1]["content"] == message["content"]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "2"}]}
    ]
    assert out["thinking"] == {"type": "enabled", "budget_tokens": common.EFFORT_TO_BUDGET["low"]}


def test_max_tokens_response_is_incomplete() -> None:
    message = {
        "id": "m",
        "stop_reason": "max_tokens",
        "content": [{"type": "text", "text": "ab"}],
        "usage": {"input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 4},
    }
    body = convert_response(message, TranslationContext("gpt-5", {"max_output_tokens": 4}))
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["max_output_tokens"] == 4
    assert body["usage"]["input_tokens"] == 5 and body["usage"]["input_tokens_details"]["cached_tokens"] == 3


def _events(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(f.split(b"\ndata: ", 1)[1]) for f in data.split(b"\n\n") if f]


def test_stream_consecutive_text_blocks_share_one_message_item() -> None:
    stream = ResponsesStream(TranslationContext("gpt-5"))
    out = stream.feed("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {}}})
    for i, t in enumerate(["a", "b"]):
        out += stream.feed(
            "content_block_start",
            {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
        )
        out += stream.feed("ping", {"type": "ping"})
        out += stream.feed(
            "content_block_delta",
            {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}},
        )
        out += stream.feed("content_block_stop", {"type": "content_block_stop", "index": i})
    out += stream.feed(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}
    )
    out += stream.finish()  # message_stop lost: still a complete ending
    events = _events(out)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    final = events[-1]["response"]["output"]
    assert len(final) == 1 and [p["text"] for p in final[0]["content"]] == ["a", "b"]
    assert [e["content_index"] for e in events if e["type"] == "response.output_text.delta"] == [0, 1]
    assert stream.finish() == b""


def test_stream_error_becomes_error_then_failed() -> None:
    stream = ResponsesStream(TranslationContext("gpt-5"))
    out = stream.feed("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {}}})
    out += stream.feed(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    events = _events(out)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["error"]["message"] == "Overloaded"
    assert events[-1]["response"]["status"] == "failed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert stream.finish() == b""


def test_json_mode_is_an_explicit_instruction_after_the_instructions() -> None:
    out = convert_request(
        {"model": "m", "input": "hi", "instructions": "be brief", "text": {"format": {"type": "json_object"}}}
    )
    assert [b["text"] for b in out["system"]] == ["be brief", common.JSON_MODE_INSTRUCTION]
