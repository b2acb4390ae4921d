"""The fake Anthropic Messages API against the official SDK and raw httpx, over loopback HTTP."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from ccproxy.sse import SSEEvent, SSEParser
from ccproxy.testing import Completion, RunningFakes, default_text

MODEL = "claude-opus-5-5"
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
HI = [{"role": "user", "content": "hi"}]


def raw_stream(
    http: httpx.Client, url: str, body: dict[str, Any], path: str = "/v1/messages"
) -> tuple[bytes, list[SSEEvent]]:
    with http.stream("POST", url + path, json={"stream": True, **body}, headers=HEADERS) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = response.read()
    parser = SSEParser()
    events = parser.feed(data)
    assert parser.pending == b""  # every frame, the last included, ends with a blank line
    return data, events


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": HI, **extra}


def test_create_text(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    fakes.anthropic.reply_text("Hello there.")
    message = claude.messages.create(**body())
    assert message.content[0].type == "text" and message.content[0].text == "Hello there."
    assert message.stop_reason == "end_turn"
    counted = claude.messages.count_tokens(model=MODEL, messages=HI)
    assert message.usage.input_tokens == counted.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_stream_event_sequence(http: httpx.Client, fakes: RunningFakes) -> None:
    fakes.anthropic.reply_text("one two three four five six seven eight nine ten")
    data, events = raw_stream(http, fakes.url, body())
    names = [e.event for e in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_delta") >= 2
    for event in events:
        assert orjson.loads(event.data)["type"] == event.event
    delta = orjson.loads(events[-2].data)
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert set(delta["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens"}
    assert data.endswith(b"\n\n")


def test_stream_text_with_sdk(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    fakes.anthropic.reply_text("Streaming works fine, thank you for asking.")
    with claude.messages.stream(**body()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Streaming works fine, thank you for asking."
    assert final.content[0].type == "text" and final.content[0].text == text


def test_stream_tool_use(http: httpx.Client, fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    args = {"location": "Paris, France", "unit": "celsius", "days": 3}
    fakes.anthropic.reply_tool_call("get_weather", args, text="Let me check.")
    _, events = raw_stream(http, fakes.url, body())
    fragments = [
        orjson.loads(e.data)["delta"]["partial_json"]
        for e in events
        if e.event == "content_block_delta" and b"input_json_delta" in e.raw
    ]
    assert fragments[0] == "" and len([f for f in fragments if f]) >= 2
    assert orjson.loads("".join(fragments)) == args

    fakes.anthropic.reply_tool_call("get_weather", args, text="Let me check.", call_id="toolu_given")
    with claude.messages.stream(**body()) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.input == args and tool.id == "toolu_given"
    assert final.stop_reason == "tool_use"


def test_stream_thinking_with_signature(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    fakes.anthropic.reply_text("The answer is 4.", thinking="Two plus two is four, obviously.")
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with claude.messages.stream(**body(thinking=thinking)) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "thinking"
    assert block.thinking == "Two plus two is four, obviously." and block.signature
    assert final.content[1].type == "text" and final.content[1].text == "The answer is 4."


def test_thinking_display_omitted_is_signature_only(http: httpx.Client, fakes: RunningFakes) -> None:
    fakes.anthropic.reply_text("ok", thinking="hidden thoughts")
    _, events = raw_stream(http, fakes.url, body(thinking={"type": "adaptive", "display": "omitted"}))
    deltas = [orjson.loads(e.data)["delta"]["type"] for e in events if e.event == "content_block_delta"]
    assert "thinking_delta" not in deltas and "signature_delta" in deltas


def test_cache_usage_and_explicit_counts(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    reply = Completion(text="cached", input_tokens=3, output_tokens=7)
    fakes.anthropic.reply(
        Completion(text="cached", input_tokens=3, cache_read_tokens=1111, cache_creation_tokens=418), reply
    )
    with claude.messages.stream(**body()) as stream:
        usage = stream.get_final_message().usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        3,
        1111,
        418,
    )
    usage = claude.messages.create(**body()).usage
    assert (usage.input_tokens, usage.output_tokens) == (3, 7)


def test_count_tokens_is_deterministic(claude: anthropic.Anthropic) -> None:
    first = claude.messages.count_tokens(model=MODEL, messages=HI).input_tokens
    second = claude.messages.count_tokens(model=MODEL, messages=HI).input_tokens
    longer = claude.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi " * 100}])
    assert first == second and longer.input_tokens > first


def test_models_list_and_retrieve(claude: anthropic.Anthropic) -> None:
    page = claude.models.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.first_id == page.data[0].id
    assert page.last_id == page.data[1].id
    everything = list(claude.models.list())
    assert len(everything) >= 3 and all(m.id.startswith("claude-") for m in everything)
    model = claude.models.retrieve(everything[0].id)
    assert model.id == everything[0].id and model.display_name
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("claude-does-not-exist")


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_error_statuses(
    fakes: RunningFakes,
    claude: anthropic.Anthropic,
    status: int,
    exception: type[anthropic.APIStatusError],
    error_type: str,
    stream: bool,
) -> None:
    fakes.anthropic.reply_error(status)
    with pytest.raises(exception) as caught:
        if stream:
            with claude.messages.stream(**body()) as s:
                s.get_final_message()
        else:
            claude.messages.create(**body())
    error = caught.value
    assert error.status_code == status
    assert error.response.headers["request-id"].startswith("req_")
    payload = error.response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == error_type
    assert payload["request_id"] == error.response.headers["request-id"]
    if status == 429:
        assert error.response.headers["x-should-retry"] == "true"
        assert error.response.headers["retry-after"]


def test_in_band_stream_error(http: httpx.Client, fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    fakes.anthropic.reply_stream_error(text_before="partial answer")
    with pytest.raises(anthropic.APIStatusError) as caught, claude.messages.stream(**body()) as stream:
        stream.get_final_message()
    assert caught.value.status_code == 200
    assert "Overloaded" in str(caught.value)

    fakes.anthropic.reply_stream_error()
    _, events = raw_stream(http, fakes.url, body())
    assert [e.event for e in events] == ["message_start", "ping", "error"]
    assert orjson.loads(events[-1].data)["error"]["type"] == "overloaded_error"


def test_stream_error_on_json_request_is_http_error(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    # Claude Code retries a turn non-streaming after an in-band error; the same script must still fail.
    fakes.anthropic.reply_stream_error()
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(**body())


def test_request_validation(http: httpx.Client, fakes: RunningFakes) -> None:
    url = fakes.url + "/v1/messages"
    no_key = http.post(url, json=body(), headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    no_version = http.post(url, json=body(), headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    missing = http.post(url, json={"model": MODEL, "messages": HI}, headers=HEADERS)
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]
    unknown = http.post(url, json=body(model="gpt-4o"), headers=HEADERS)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    bearer = http.post(url, json=body(), headers={"authorization": "Bearer sk-ant-oat-x", **HEADERS})
    assert bearer.status_code == 200
    assert len(fakes.anthropic.requests) == 5  # rejected requests are recorded too


def test_accepts_claude_code_shaped_request(http: httpx.Client, fakes: RunningFakes) -> None:
    request = {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": True,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.331;"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "system", "content": "Deferred tools: mcp__demo__echo"},
            {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
            {"role": "user", "content": "again"},
        ],
        "tools": [
            {
                "name": "Bash",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            },
            {"name": "DeferredToolPlaceholder", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "medium"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": '{"device_id":"d","session_id":"s"}'},
    }
    headers = {**HEADERS, "anthropic-beta": "claude-code-20250219,oauth-2025-04-20"}
    with http.stream("POST", fakes.url + "/v1/messages?beta=true", json=request, headers=headers) as response:
        assert response.status_code == 200
        data = response.read()
    deltas = [
        orjson.loads(e.data)["delta"] for e in SSEParser().feed(data) if e.event == "content_block_delta"
    ]
    assert "".join(d.get("text", "") for d in deltas) == default_text("again")
    recorded = fakes.anthropic.last_request
    assert recorded.query == {"beta": "true"} and recorded.path == "/v1/messages"
    assert recorded.headers["anthropic-beta"] == headers["anthropic-beta"]
    assert recorded.json == request


def test_recorded_requests(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    claude.messages.create(**body(), extra_headers={"x-test-id": "abc"})
    claude.models.list()
    (first,) = fakes.anthropic.requests  # model-list reads are not recorded
    assert (first.method, first.path) == ("POST", "/v1/messages")
    assert first.headers["authorization"] == "Bearer sk-ant-test" and first.headers["x-test-id"] == "abc"
    assert first.json["messages"] == HI and orjson.loads(first.body) == first.json
    assert fakes.anthropic.bodies("/v1/messages") == [first.json]


def test_ids_and_output_are_deterministic_after_reset(
    fakes: RunningFakes, claude: anthropic.Anthropic
) -> None:
    first = claude.messages.create(**body()).model_dump()
    fakes.reset()
    assert claude.messages.create(**body()).model_dump() == first


def test_slow_stream_delay(http: httpx.Client, fakes: RunningFakes) -> None:
    fakes.anthropic.reply_text("a b", delay=0.03)
    start = time.monotonic()
    _, events = raw_stream(http, fakes.url, body())
    assert time.monotonic() - start >= 0.03 * (len(events) - 1) * 0.9


def test_abrupt_disconnect_mid_stream(
    http: httpx.Client, fakes: RunningFakes, claude: anthropic.Anthropic
) -> None:
    fakes.anthropic.reply_text("this stream never finishes", disconnect_after=3)
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", fakes.url + "/v1/messages", json=body(stream=True), headers=HEADERS) as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
    assert received.count(b"\n\n") == 3 and b"message_stop" not in received

    fakes.anthropic.reply_text("truncated json", disconnect_after=0)
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(**body())


def test_queue_then_defaults_and_reset(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    fakes.anthropic.reply_text("first").reply_text("second")
    assert fakes.anthropic.pending == 2
    texts = [claude.messages.create(**body()).content[0] for _ in range(3)]
    assert [t.text for t in texts if t.type == "text"] == ["first", "second", default_text("hi")]
    fakes.anthropic.reply_text("never used")
    fakes.anthropic.reset()
    assert fakes.anthropic.pending == 0 and fakes.anthropic.requests == []
