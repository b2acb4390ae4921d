"""Property tests for the Responses-upstream translations (hypothesis).

Random Responses event streams (text deltas, function calls whose arguments are split at random points,
reasoning summaries, abrupt ends) must become streams the Anthropic and OpenAI SDK accumulators accept with
the same content; random valid client requests must convert into valid Responses requests; reasoning must
survive thinking → reasoning → thinking.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import anthropic
import httpx2
import openai
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import response_create_params
from pydantic import TypeAdapter

from ccproxy.formats import anthropic_on_responses, chat_on_responses
from ccproxy.formats.base import TranslationContext
from ccproxy.formats.common import decode_reasoning_item
from ccproxy.sse import SSEParser

JSON = dict[str, Any]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- random Responses streams -----------------------------------------------------------------------------

text = st.text(min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
text_item = st.fixed_dictionaries({"kind": st.just("text"), "deltas": st.lists(text, min_size=1, max_size=5)})
call_item = st.fixed_dictionaries(
    {
        "kind": st.just("call"),
        "name": st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True),
        "args": st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=4),
        "cuts": st.lists(st.integers(0, 200), max_size=6),
    }
)
reasoning_item = st.fixed_dictionaries(
    {
        "kind": st.just("reasoning"),
        "summaries": st.lists(st.lists(text, min_size=1, max_size=4), max_size=3),
        "encrypted": st.none() | st.text(alphabet="abcdefgh0123456789_-=", min_size=4, max_size=40),
    }
)
streams = st.fixed_dictionaries(
    {
        "items": st.lists(st.one_of(text_item, call_item, reasoning_item), max_size=5),
        "ending": st.sampled_from(["completed", "incomplete", "abrupt"]),
        "usage": st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000)),
    }
)


def _split(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts})
    bounds = [0, *points, len(s)]
    return [s[a:b] for a, b in pairwise(bounds) if s[a:b]]


def build_stream(spec: JSON) -> tuple[list[tuple[str, JSON]], list[JSON]]:
    """``(events, final output items)`` for a stream spec."""
    events: list[tuple[str, JSON]] = []

    def emit(data: JSON) -> None:
        data["sequence_number"] = len(events)
        events.append((data["type"], data))

    emit({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}})
    output: list[JSON] = []
    for index, item in enumerate(spec["items"]):
        done = _emit_item(emit, index, item)
        output.append(done)
    total, cached_raw, out_tokens = spec["usage"]
    usage = {
        "input_tokens": total,
        "input_tokens_details": {"cached_tokens": min(cached_raw, total)},
        "output_tokens": out_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": total + out_tokens,
    }
    if spec["ending"] != "abrupt":
        status = spec["ending"]
        response = {"id": "resp_1", "status": status, "output": output, "usage": usage}
        if status == "incomplete":
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        emit({"type": f"response.{status}", "response": response})
    return events, output


def _emit_item(emit: Any, index: int, item: JSON) -> JSON:
    base = {"output_index": index}
    if item["kind"] == "text":
        msg = {
            "id": f"msg_{index}",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        emit({"type": "response.output_item.added", **base, "item": msg})
        part = {"type": "output_text", "text": "", "annotations": []}
        emit({"type": "response.content_part.added", **base, "content_index": 0, "part": part})
        for delta in item["deltas"]:
            emit({"type": "response.output_text.delta", **base, "content_index": 0, "delta": delta})
        full = "".join(item["deltas"])
        emit({"type": "response.output_text.done", **base, "content_index": 0, "text": full})
        done_part = {**part, "text": full}
        emit({"type": "response.content_part.done", **base, "content_index": 0, "part": done_part})
        done = {**msg, "status": "completed", "content": [done_part]}
    elif item["kind"] == "call":
        args = json.dumps(item["args"])
        call = {
            "id": f"fc_{index}",
            "type": "function_call",
            "call_id": f"call_{index}",
            "name": item["name"],
        }
        emit({"type": "response.output_item.added", **base, "item": {**call, "arguments": ""}})
        for piece in _split(args, item["cuts"]):
            emit({"type": "response.function_call_arguments.delta", **base, "delta": piece})
        emit({"type": "response.function_call_arguments.done", **base, "arguments": args})
        done = {**call, "arguments": args, "status": "completed"}
    else:
        done = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
        if item["encrypted"]:
            done["encrypted_content"] = item["encrypted"]
        emit({"type": "response.output_item.added", **base, "item": {**done}})
        for s, deltas in enumerate(item["summaries"]):
            emit({"type": "response.reasoning_summary_part.added", **base, "summary_index": s})
            for delta in deltas:
                emit(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        **base,
                        "summary_index": s,
                        "delta": delta,
                    }
                )
            done["summary"].append({"type": "summary_text", "text": "".join(deltas)})
    emit({"type": "response.output_item.done", **base, "item": done})
    return done


def _transport(body: bytes) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _translate(translator: Any, events: list[tuple[str, JSON]]) -> bytes:
    return b"".join(translator.feed(name, data) for name, data in events) + translator.finish()


@SETTINGS
@given(streams)
def test_random_stream_to_anthropic(spec: JSON) -> None:
    events, output = build_stream(spec)
    out = _translate(anthropic_on_responses.AnthropicStream(TranslationContext(model="claude")), events)
    parsed = [(e.event, json.loads(e.data)) for e in SSEParser().feed(out)]
    assert parsed[0][0] == "message_start" and parsed[-1][0] == "message_stop"
    assert all(name == data["type"] for name, data in parsed)
    starts = [d["index"] for n, d in parsed if n == "content_block_start"]
    assert starts == list(range(len(starts)))  # dense, in start order
    assert all(d["content_block"].get("input", {}) == {} for n, d in parsed if n == "content_block_start")
    client = anthropic.Anthropic(api_key="t", http_client=_transport(out), max_retries=0)
    with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as s:
        message = s.get_final_message()
    expected: list[tuple[str, Any]] = []
    for item in output:
        if item["type"] == "message":
            expected.append(("text", item["content"][0]["text"]))
        elif item["type"] == "function_call":
            expected.append(("tool_use", (item["call_id"], item["name"], json.loads(item["arguments"]))))
        else:
            summary = "\n\n".join(p["text"] for p in item["summary"])
            expected.append(("thinking", (summary, item)))
    got: list[tuple[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            got.append(("text", block.text))
        elif block.type == "tool_use":
            got.append(("tool_use", (block.id, block.name, block.input)))
        elif block.type == "thinking":
            got.append(("thinking", (block.thinking, decode_reasoning_item(block.signature))))
    assert got == expected
    has_calls = any(i["type"] == "function_call" for i in output)
    stop = {"incomplete": "max_tokens"}.get(spec["ending"], "tool_use" if has_calls else "end_turn")
    assert message.stop_reason == stop
    if spec["ending"] != "abrupt":
        total, cached, out_tokens = spec["usage"]
        cached = min(cached, total)
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (total - cached, cached)
        assert message.usage.output_tokens == out_tokens


@SETTINGS
@given(streams, st.booleans())
def test_random_stream_to_chat(spec: JSON, include_usage: bool) -> None:
    events, output = build_stream(spec)
    request = {"stream_options": {"include_usage": include_usage}}
    out = _translate(chat_on_responses.ChatStream(TranslationContext(model="gpt", request=request)), events)
    assert out.endswith(b"data: [DONE]\n\n") and b"event:" not in out
    chunks = [json.loads(e.data) for e in SSEParser().feed(out) if e.data != "[DONE]"]
    seen_ids: set[str] = set()
    for chunk in chunks:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                assert isinstance(call["index"], int)
                if "id" in call:  # id and name only in the first delta of a call
                    assert call["id"] not in seen_ids
                    seen_ids.add(call["id"])
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == (1 if include_usage and spec["ending"] != "abrupt" else 0)
    if spec["ending"] == "incomplete":
        return  # the SDK helper raises LengthFinishReasonError by design (covered by the corpus test)
    client = openai.OpenAI(api_key="t", http_client=_transport(out), max_retries=0)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as s:
        completion = s.get_final_completion()
    message = completion.choices[0].message
    text = "".join(i["content"][0]["text"] for i in output if i["type"] == "message")
    assert (message.content or "") == text
    calls = [
        (i["call_id"], i["name"], json.loads(i["arguments"])) for i in output if i["type"] == "function_call"
    ]
    got = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    assert got == calls
    assert completion.choices[0].finish_reason == ("tool_calls" if calls else "stop")


@SETTINGS
@given(streams)
def test_non_streaming_equals_streaming(spec: JSON) -> None:
    """The provider's non-streaming path (terminal object → response converter) gives the same message."""
    spec = {**spec, "ending": "completed"}
    events, _ = build_stream(spec)
    out = _translate(anthropic_on_responses.AnthropicStream(TranslationContext(model="c")), events)
    client = anthropic.Anthropic(api_key="t", http_client=_transport(out), max_retries=0)
    with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as s:
        streamed = s.get_final_message()
    body = anthropic_on_responses.convert_response(events[-1][1]["response"], TranslationContext(model="c"))
    direct = anthropic.types.Message.model_validate(body)
    assert [b.model_dump() for b in direct.content] == [b.model_dump() for b in streamed.content]
    assert direct.usage.model_dump() == streamed.usage.model_dump()


@SETTINGS
@given(streams, st.integers(0, 10_000))
def test_stream_cut_anywhere_still_ends_well(spec: JSON, cut: int) -> None:
    """An upstream that stops at any event still gives both SDKs a well-formed stream with a prefix."""
    events, output = build_stream(spec)
    events = events[: cut % (len(events) + 1)]
    out = _translate(anthropic_on_responses.AnthropicStream(TranslationContext(model="c")), events)
    client = anthropic.Anthropic(api_key="t", http_client=_transport(out), max_retries=0)
    with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as s:
        message = s.get_final_message()
    full = "".join(i["content"][0]["text"] for i in output if i["type"] == "message")
    assert full.startswith("".join(b.text for b in message.content if b.type == "text"))
    assert message.stop_reason in {"end_turn", "tool_use", "max_tokens"}
    chat = _translate(chat_on_responses.ChatStream(TranslationContext(model="g")), events)
    assert chat.endswith(b"data: [DONE]\n\n")
    chunks = [json.loads(e.data) for e in SSEParser().feed(chat) if e.data != "[DONE]"]
    finishes = [c["finish_reason"] for k in chunks for c in k["choices"] if c["finish_reason"]]
    assert len(finishes) == 1


# --- round trip: reasoning → thinking → reasoning -----------------------------------------------------------


@SETTINGS
@given(reasoning_item, call_item)
def test_reasoning_round_trip(reasoning: JSON, call: JSON) -> None:
    spec = {"items": [reasoning, call], "ending": "completed", "usage": (1, 0, 1)}
    events, output = build_stream(spec)
    body = anthropic_on_responses.convert_response(events[-1][1]["response"], TranslationContext(model="c"))
    follow_up = {
        "model": "c",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": body["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "ok"}]},
        ],
    }
    request = anthropic_on_responses.convert_request(follow_up)
    items = request["input"]
    expected_reasoning = [output[0]] if output[0].get("encrypted_content") else []
    replayed = [i for i in items if i["type"] == "reasoning"]
    assert replayed == [{**r, "type": "reasoning"} for r in expected_reasoning]
    assert [i["type"] for i in items] == ["message"] + ["reasoning"] * len(replayed) + [
        "function_call",
        "function_call_output",
    ]
    fc = items[-2]
    assert (fc["call_id"], fc["name"], json.loads(fc["arguments"])) == ("call_1", call["name"], call["args"])
    # and back again: the replayed item answers as the same thinking block
    again = anthropic_on_responses.convert_response(
        {"output": replayed, "status": "completed"}, TranslationContext(model="c")
    )
    assert again["content"] == [b for b in body["content"] if b["type"] == "thinking" and replayed]


# --- random valid client requests -----

_PARAMS = TypeAdapter(response_create_params.ResponseCreateParamsStreaming)
_KEYS = (
    response_create_params.ResponseCreateParamsStreaming.__required_keys__
    | response_create_params.ResponseCreateParamsStreaming.__optional_keys__
)
schema = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(
            st.text(min_size=1, max_size=5), st.just({"type": "string"}), max_size=3
        ),
    }
)
tool_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
image_block = st.builds(
    lambda d: {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}},
    st.text(alphabet="ABCD", min_size=1, max_size=8),
)
text_block = st.builds(lambda t: {"type": "text", "text": t}, text)


@st.composite
def anthropic_requests(draw: st.DrawFn) -> JSON:
    names = draw(st.lists(tool_names, unique=True, max_size=3))
    messages: list[JSON] = [
        {"role": "user", "content": draw(st.lists(text_block | image_block, min_size=1, max_size=3))}
    ]
    for turn in range(draw(st.integers(0, 3))):
        if names and draw(st.booleans()):
            call_id = f"toolu_{turn}"
            use = {
                "type": "tool_use",
                "id": call_id,
                "name": draw(st.sampled_from(names)),
                "input": draw(st.dictionaries(st.text(max_size=4), json_values, max_size=3)),
            }
            messages.append({"role": "assistant", "content": [*draw(st.lists(text_block, max_size=1)), use]})
            result = {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": draw(text | st.lists(text_block | image_block, min_size=1, max_size=2)),
            }
            messages.append({"role": "user", "content": [result]})
        else:
            messages.append({"role": "assistant", "content": draw(text)})
            messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            messages.append({"role": "system", "content": draw(text)})
    body: JSON = {"model": "claude-x", "max_tokens": draw(st.integers(1, 64000)), "messages": messages}
    if names:
        body["tools"] = [
            {"name": n, "input_schema": draw(schema), "defer_loading": draw(st.booleans())} for n in names
        ]
        body["tool_choice"] = draw(
            st.sampled_from(
                [{"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "tool", "name": names[0]}]
            )
        )
    if draw(st.booleans()):
        body["system"] = draw(
            text
            | st.lists(
                st.builds(
                    lambda t: {"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}, text
                ),
                min_size=1,
                max_size=2,
            )
        )
    body["thinking"] = draw(
        st.sampled_from(
            [
                {"type": "adaptive"},
                {"type": "enabled", "budget_tokens": 2048},
                {"type": "disabled"},
                {"type": "adaptive", "display": "omitted"},
            ]
        )
    )
    if draw(st.booleans()):
        body["output_config"] = {"effort": draw(st.sampled_from(["low", "medium", "high", "max"]))}
    for key, value in (
        ("temperature", st.floats(0, 1)),
        ("top_p", st.floats(0, 1)),
        ("top_k", st.integers(1, 100)),
    ):
        if draw(st.booleans()):
            body[key] = draw(value)
    body["metadata"] = {"user_id": "u"}
    return body


@st.composite
def chat_requests(draw: st.DrawFn) -> JSON:
    names = draw(st.lists(tool_names, unique=True, max_size=3))
    messages: list[JSON] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)})
    image = st.builds(
        lambda u: {"type": "image_url", "image_url": {"url": "https://x/" + u}},
        st.text(alphabet="abc", max_size=5),
    )
    messages.append(
        {
            "role": "user",
            "content": draw(
                text
                | st.lists(
                    st.builds(lambda t: {"type": "text", "text": t}, text) | image, min_size=1, max_size=3
                )
            ),
        }
    )
    for turn in range(draw(st.integers(0, 3))):
        if names and draw(st.booleans()):
            calls = [
                {
                    "id": f"call_{turn}_{k}",
                    "type": "function",
                    "function": {
                        "name": draw(st.sampled_from(names)),
                        "arguments": json.dumps(
                            draw(st.dictionaries(st.text(max_size=4), json_values, max_size=2))
                        ),
                    },
                }
                for k in range(draw(st.integers(1, 2)))
            ]
            messages.append(
                {"role": "assistant", "content": draw(st.none() | st.just("") | text), "tool_calls": calls}
            )
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": draw(text)} for c in calls]
        else:
            messages.append({"role": "assistant", "content": draw(text)})
            messages.append({"role": "user", "content": draw(text)})
    body: JSON = {"model": "gpt-x", "messages": messages}
    if names:
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": draw(schema)}} for n in names
        ]
        body["tool_choice"] = draw(
            st.sampled_from(
                ["auto", "none", "required", {"type": "function", "function": {"name": names[0]}}]
            )
        )
    for key, value in (
        ("temperature", st.floats(0, 2)),
        ("max_completion_tokens", st.integers(1, 10000)),
        ("reasoning_effort", st.sampled_from(["minimal", "low", "medium", "high"])),
        ("seed", st.integers(0, 10)),
        ("response_format", st.just({"type": "json_object"})),
        ("stream_options", st.just({"include_usage": True})),
        ("n", st.just(1)),
        ("parallel_tool_calls", st.booleans()),
    ):
        if draw(st.booleans()):
            body[key] = draw(value)
    return body


def _valid(body: JSON) -> None:
    assert set(body) <= _KEYS, set(body) - _KEYS
    _PARAMS.validate_python({**body, "stream": True})


@SETTINGS
@given(anthropic_requests())
def test_random_anthropic_request_converts(body: JSON) -> None:
    snapshot = json.dumps(body, sort_keys=True)
    out = anthropic_on_responses.convert_request(body)
    assert json.dumps(body, sort_keys=True) == snapshot
    _valid(out)
    uses = [
        b["id"]
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    assert [i["call_id"] for i in out["input"] if i["type"] == "function_call"] == uses
    assert [i["call_id"] for i in out["input"] if i["type"] == "function_call_output"] == uses


@SETTINGS
@given(chat_requests())
def test_random_chat_request_converts(body: JSON) -> None:
    snapshot = json.dumps(body, sort_keys=True)
    out = chat_on_responses.convert_request(body)
    assert json.dumps(body, sort_keys=True) == snapshot
    _valid(out)
    calls = [c["id"] for m in body["messages"] for c in m.get("tool_calls") or []]
    assert [i["call_id"] for i in out["input"] if i["type"] == "function_call"] == calls
    assert [i["call_id"] for i in out["input"] if i["type"] == "function_call_output"] == calls
