"""Chat Completions client → Anthropic upstream: request mapping details, refusals, stream frames."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic_upstream_support import validate_anthropic_request

from ccproxy.formats import common
from ccproxy.formats.base import Format, TranslationContext, TranslationError, get_translation
from ccproxy.formats.chat_on_anthropic import ChatStream, convert_request
from ccproxy.formats.fields import validate

USER = {"role": "user", "content": "hi"}


def _req(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [USER], **extra}


def test_registered() -> None:
    assert get_translation(Format.CHAT, Format.ANTHROPIC).request is convert_request


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"temperature": 2.5}, "temperature"),
        ({"stop": ["\n"]}, "stop"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ],
)
def test_refused_parameters_name_the_param(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        validate(Format.CHAT, Format.ANTHROPIC, _req(**extra))
        convert_request(_req(**extra))
    assert err.value.param == param and err.value.status == 400


def test_ignored_parameters_are_not_forwarded() -> None:
    out = convert_request(
        _req(seed=1, presence_penalty=0.5, store=True, metadata={"a": "b"}, n=1, logprobs=False)
    )
    assert set(out) == {"model", "messages", "max_tokens"}


def test_system_and_developer_hoisted_in_order_even_mid_conversation() -> None:
    out = convert_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "A"},
                USER,
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "system", "content": "C"},
                {"role": "user", "content": "q"},
            ],
        }
    )
    assert out["system"] == [{"type": "text", "text": t} for t in "ABC"]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    validate_anthropic_request(out)


def test_tool_loop_with_parallel_results_and_images() -> None:
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": f'{{"i": {i}}}'}}
        for i in range(2)
    ]
    out = convert_request(
        {
            "model": "m",
            "parallel_tool_calls": False,
            "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_0", "content": "r0"},
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "r1"}]},
                {"role": "user", "content": "and?"},
            ],
        }
    )
    validate_anthropic_request(out)
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    image = out["messages"][0]["content"][1]
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    assert [b["input"] for b in out["messages"][1]["content"]] == [{"i": 0}, {"i": 1}]
    last = out["messages"][2]["content"]
    assert [b["type"] for b in last] == ["tool_result", "tool_result", "text"]
    assert last[1]["content"] == [{"type": "text", "text": "r1"}]


def test_reasoning_effort_becomes_a_budget_that_fits_max_tokens() -> None:
    out = convert_request(_req(reasoning_effort="high", max_completion_tokens=5000, temperature=0.2))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    assert "temperature" not in out  # Anthropic rejects a modified temperature with thinking
    assert "thinking" not in convert_request(_req(reasoning_effort="low", max_tokens=1000))
    forced = convert_request(
        _req(
            reasoning_effort="low",
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
        )
    )
    assert "thinking" not in forced and forced["tool_choice"] == {"type": "tool", "name": "f"}


def test_thinking_blocks_replay_from_assistant_history() -> None:
    blocks = [
        {"type": "thinking", "thinking": "t", "signature": "sig"},
        {"type": "redacted_thinking", "data": "d"},
    ]
    out = convert_request(
        {
            "model": "m",
            "reasoning_effort": "low",
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": "",
                    "reasoning_content": "t",
                    "thinking_blocks": blocks,
                    "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
            ],
        }
    )
    assert out["messages"][1]["content"][:2] == blocks
    assert out["thinking"]["type"] == "enabled"


def test_structured_output_and_user() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = convert_request(
        _req(
            user="u1", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        )
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert out["metadata"] == {"user_id": "u1"}


def _frames(data: bytes) -> list[Any]:
    return [orjson.loads(f[6:]) if f != b"data: [DONE]" else "[DONE]" for f in data.split(b"\n\n") if f]


def test_stream_pings_produce_nothing_and_usage_only_when_asked() -> None:
    start = {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}}
    for include in (False, True):
        ctx = TranslationContext("gpt-4o", {"stream_options": {"include_usage": include}})
        stream = ChatStream(ctx)
        out = stream.feed("message_start", start) + stream.feed("ping", {"type": "ping"})
        assert stream.feed("ping", {"type": "ping"}) == b""
        out += stream.feed(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        )
        out += stream.feed("message_stop", {"type": "message_stop"}) + stream.finish()
        frames = _frames(out)
        assert frames[-1] == "[DONE]"
        has_usage = any(isinstance(f, dict) and f.get("usage") for f in frames)
        assert has_usage is include
        assert all("usage" in f for f in frames[:-1]) is include  # usage: null on every chunk when asked
        assert stream.finish() == b""


def test_stream_error_midstream_and_fail() -> None:
    stream = ChatStream(TranslationContext("m"))
    stream.feed("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {}}})
    out = stream.feed(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    frames = _frames(out)
    assert frames[0]["error"]["message"] == "Overloaded" and frames[-1] == "[DONE]"
    assert stream.finish() == b"" and stream.fail(500, "api_error", "x") == b""
    other = ChatStream(TranslationContext("m"))
    failed = _frames(other.fail(504, "timeout", "upstream timed out"))
    assert failed[0]["error"]["message"] == "upstream timed out" and failed[-1] == "[DONE]"


def test_json_mode_is_an_explicit_instruction_and_schema_stays_structured_output() -> None:
    out = convert_request(_req(response_format={"type": "json_object"}))
    assert out["system"][-1] == {"type": "text", "text": common.JSON_MODE_INSTRUCTION}
    assert "output_config" not in out
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    out = convert_request(
        _req(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in out
