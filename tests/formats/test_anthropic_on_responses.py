"""Anthropic Messages client → Responses upstream: Claude Code's request shape, a Bash tool round trip,
reasoning round trip, refusals, and the stream's framing rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccproxy.formats.anthropic_on_responses import AnthropicStream, convert_request, convert_response
from ccproxy.formats.base import Format, TranslationContext, TranslationError, get_translation
from ccproxy.formats.common import decode_reasoning_item, encode_reasoning_item
from ccproxy.formats.fields import validate
from ccproxy.sse import SSEParser

JSON = dict[str, Any]
CTX = TranslationContext(model="claude-opus-5-5")

BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}


def claude_code_request(messages: list[JSON]) -> JSON:
    """The body keys Claude Code sends (shared/docs/upstreams.md §8.1)."""
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": messages,
        "tools": [
            BASH,
            {"name": "DeferredToolPlaceholder", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
        "metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "s"})},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "medium"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }


def run(events: list[JSON], ctx: TranslationContext = CTX) -> list[tuple[str | None, JSON]]:
    translator = AnthropicStream(ctx)
    out = b"".join(translator.feed(e["type"], e) for e in events) + translator.finish()
    assert out.endswith(b"\n\n")
    return [(e.event, json.loads(e.data)) for e in SSEParser().feed(out)]


def bash_turn_events() -> list[JSON]:
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": []}
    done_reasoning = {
        **reasoning,
        "encrypted_content": "gAAA-enc",
        "summary": [{"type": "summary_text", "text": "List files"}],
    }
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_abc", "name": "Bash", "arguments": ""}
    args = '{"command": "ls -la"}'
    return [
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": reasoning},
        {"type": "response.reasoning_summary_part.added", "output_index": 0, "summary_index": 0},
        {
            "type": "response.reasoning_summary_text.delta",
            "output_index": 0,
            "summary_index": 0,
            "delta": "List ",
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "output_index": 0,
            "summary_index": 0,
            "delta": "files",
        },
        {"type": "response.output_item.done", "output_index": 0, "item": done_reasoning},
        {"type": "response.output_item.added", "output_index": 1, "item": call},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": args[:7]},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": args[7:]},
        {"type": "response.function_call_arguments.done", "output_index": 1, "arguments": args},
        {"type": "response.output_item.done", "output_index": 1, "item": {**call, "arguments": args}},
        {
            "type": "response.completed",
            "response": {
                "id": "resp_1",
                "status": "completed",
                "output": [done_reasoning, {**call, "arguments": args}],
                "usage": {
                    "input_tokens": 100,
                    "input_tokens_details": {"cached_tokens": 60},
                    "output_tokens": 20,
                },
            },
        },
    ]


def test_registered() -> None:
    translation = get_translation(Format.ANTHROPIC, Format.RESPONSES)
    assert translation.request is convert_request and translation.stream is AnthropicStream


def test_claude_code_request_shape() -> None:
    mid_system = {"role": "system", "content": "Reminder: be brief"}
    body = claude_code_request([{"role": "user", "content": "list files"}, mid_system])
    out = convert_request(body)
    assert out["instructions"] == "x-anthropic-billing-header: cc_version=2\n\nYou are Claude Code."
    assert out["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Reminder: be brief"}],
        },
    ]
    assert out["tools"][0] == {
        "type": "function",
        "name": "Bash",
        "description": "Run a shell command",
        "parameters": BASH["input_schema"],
        "strict": False,
    }
    assert "defer_loading" not in out["tools"][1]
    assert out["reasoning"] == {"effort": "medium"}  # display "omitted": no summaries asked
    assert out["include"] == ["reasoning.encrypted_content"]
    assert out["max_output_tokens"] == 128000 and out["stream"] is True
    for ignored in ("metadata", "context_management", "thinking", "output_config", "system", "messages"):
        assert ignored not in out


def test_bash_stream_events_follow_claude_code_rules() -> None:
    frames = run(bash_turn_events())
    names = [n for n, _ in frames]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert all(n == d["type"] for n, d in frames)
    starts = [d for n, d in frames if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_abc", "name": "Bash", "input": {}}
    deltas = [d["delta"] for n, d in frames if n == "content_block_delta"]
    assert (
        "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
        == '{"command": "ls -la"}'
    )
    assert [d["thinking"] for d in deltas if d["type"] == "thinking_delta"] == ["List ", "files"]
    signature = next(d["signature"] for d in deltas if d["type"] == "signature_delta")
    assert decode_reasoning_item(signature) == {
        "type": "reasoning",
        "id": "rs_1",
        "encrypted_content": "gAAA-enc",
        "summary": [{"type": "summary_text", "text": "List files"}],
    }
    final = frames[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"] == {
        "input_tokens": 40,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
        "output_tokens": 20,
    }


def test_bash_round_trip_next_request() -> None:
    message = convert_response(bash_turn_events()[-1]["response"], CTX)
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use"]
    tool_use = message["content"][1]
    assert tool_use == {"type": "tool_use", "id": "call_abc", "name": "Bash", "input": {"command": "ls -la"}}
    result = {
        "type": "tool_result",
        "tool_use_id": "call_abc",
        "content": [{"type": "text", "text": "a.txt"}],
    }
    body = claude_code_request(
        [
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": message["content"]},
            {"role": "user", "content": [result, {"type": "text", "text": "thanks"}]},
        ]
    )
    items = convert_request(body)["input"]
    assert [i["type"] for i in items] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert items[1]["encrypted_content"] == "gAAA-enc" and items[1]["id"] == "rs_1"
    assert items[2] == {
        "type": "function_call",
        "call_id": "call_abc",
        "name": "Bash",
        "arguments": '{"command":"ls -la"}',
    }
    assert items[3] == {"type": "function_call_output", "call_id": "call_abc", "output": "a.txt"}


def test_foreign_thinking_and_bare_reasoning_are_not_replayed() -> None:
    bare = encode_reasoning_item({"id": "rs_2", "summary": []})  # no encrypted content: unresolvable
    assistant = [
        {"type": "thinking", "thinking": "t", "signature": "EpACCkYIanthropic"},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "thinking", "thinking": "", "signature": bare},
        {"type": "text", "text": "hi"},
    ]
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "assistant", "content": assistant}]}
    assert convert_request(body)["input"] == [{"type": "message", "role": "assistant", "content": "hi"}]


def test_tool_reference_and_image_tool_results() -> None:
    ref = {"type": "tool_reference", "tool_name": "mcp__x__y"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}
    blocks = [
        {"type": "tool_result", "tool_use_id": "t1", "content": [ref]},
        {"type": "tool_result", "tool_use_id": "t2", "content": [image], "is_error": True},
    ]
    out = convert_request({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": blocks}]})
    assert out["input"][0]["output"] == "Tool loaded: mcp__x__y"
    assert out["input"][1]["output"] == [
        {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "auto"}
    ]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"stop_sequences": ["END"]}, "stop_sequences"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
        ({"container": "c1"}, "container"),
        ({"mcp_servers": [{"url": "https://x"}]}, "mcp_servers"),
        ({"output_config": {"effort": "ultra"}}, "output_config.effort"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_refused_with_param(patch: JSON, param: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(TranslationError) as exc:
        validate(Format.ANTHROPIC, Format.RESPONSES, body)
        convert_request(body)
    assert exc.value.param == param and exc.value.status == 400


def test_tool_choice_and_thinking_budget() -> None:
    body = {
        "model": "m",
        "max_tokens": 32000,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [BASH],
        "tool_choice": {"type": "tool", "name": "Bash", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    }
    out = convert_request(body)
    assert out["tool_choice"] == {"type": "function", "name": "Bash"} and out["parallel_tool_calls"] is False
    assert out["reasoning"] == {"effort": "high", "summary": "auto"}


def test_late_error_after_completed_is_dropped() -> None:
    # Issue 10 item 7: the terminal event closed the message; a later error is logged, not sent.
    events = [
        *bash_turn_events(),
        {"type": "error", "error": {"type": "server_error", "code": None, "message": "boom"}},
    ]
    frames = run(events)
    assert [n for n, _ in frames][-2:] == ["message_delta", "message_stop"]


def test_failed_before_output_and_transport_failure() -> None:
    failed = {
        "type": "response.failed",
        "response": {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow"}},
    }
    frames = run([{"type": "response.created", "response": {"id": "r"}}, failed])
    assert [n for n, _ in frames] == ["message_start", "error"]
    assert frames[1][1]["error"] == {"type": "rate_limit_error", "message": "slow"}
    translator = AnthropicStream(CTX)
    translator.feed("response.created", {"type": "response.created", "response": {"id": "r"}})
    out = translator.fail(504, "api_error", "upstream timed out") + translator.finish()
    error = {"type": "error", "error": {"type": "api_error", "message": "upstream timed out"}}
    assert [(e.event, json.loads(e.data)) for e in SSEParser().feed(out)] == [("error", error)]


def test_abrupt_end_mid_tool_call_is_truncation() -> None:
    frames = run(bash_turn_events()[:8])
    names = [n for n, _ in frames]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert frames[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert run([])[0][0] == "message_start"  # nothing at all still yields a well-formed message


def test_refusal_and_incomplete() -> None:
    response = {
        "id": "r",
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't"}]}],
    }
    assert convert_response(response, CTX)["stop_reason"] == "refusal"
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []}
    assert convert_response(incomplete, CTX)["stop_reason"] == "max_tokens"


def test_terminal_without_item_events_replays_output() -> None:
    response = bash_turn_events()[-1]["response"]
    frames = run([{"type": "response.completed", "response": response}])
    kinds = [d["content_block"]["type"] for n, d in frames if n == "content_block_start"]
    assert kinds == ["thinking", "tool_use"]


def test_unknown_events_are_ignored() -> None:
    frames = run([{"type": "response.web_search_call.searching", "output_index": 0}, {"type": "keepalive"}])
    assert [n for n, _ in frames] == ["message_start", "message_delta", "message_stop"]
