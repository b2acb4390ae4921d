"""Recorded corpus through the Responses-upstream translations, checked with the official SDK parsers.

Responses payloads (streams, terminal responses, error bodies) are served as the upstream; the translated
bytes are handed to ``anthropic`` / ``openai`` through a mock transport, and what the SDKs accumulate is
compared with what the source carried. Request cases of the client formats convert into Responses requests
that validate against the openai SDK's ``ResponseCreateParams`` types.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from corpus_files import corpus_dir, load_corpus
from openai.types.chat import ChatCompletion
from openai.types.responses import response_create_params
from pydantic import TypeAdapter

from ccproxy.formats import anthropic_on_responses, chat_on_responses
from ccproxy.formats.base import Format, TranslationContext, TranslationError
from ccproxy.formats.common import decode_reasoning_item
from ccproxy.formats.errors import parse_error, render_error
from ccproxy.formats.fields import validate
from ccproxy.sse import SSEParser

JSON = dict[str, Any]


_CORPUS = load_corpus()


def manifest() -> list[JSON]:
    return _CORPUS.cases if _CORPUS else []


def case(case_id: str) -> JSON:
    if _CORPUS is None:
        pytest.skip(f"conformance corpus not found at {corpus_dir()} (set CCPROXY_CONFORMANCE_DIR)")
    found: JSON = _CORPUS.by_id[case_id]
    return found


def read_case(case_id: str) -> bytes:
    case(case_id)
    assert _CORPUS is not None
    return _CORPUS.bytes(case_id)


# --- which cases apply -----

# Anthropic-format and Chat-format upstream payloads are served by the Anthropic upstream translations;
# Responses request cases are what a Responses *client* sends (not a client format handled here).
NOT_APPLICABLE_REASONS = {
    ("anthropic", "stream"): "Anthropic upstream payload (chat_on_anthropic / responses_on_anthropic)",
    ("anthropic", "response"): "Anthropic upstream payload (chat_on_anthropic / responses_on_anthropic)",
    ("anthropic", "error"): "Anthropic upstream error body",
    ("openai_chat", "stream"): "Chat is never an upstream in ccproxy",
    ("openai_chat", "response"): "Chat is never an upstream in ccproxy",
    ("openai_chat", "error"): "Chat is never an upstream in ccproxy",
    (
        "openai_responses",
        "request",
    ): "a Responses client request; no Responses client on a Responses upstream",
}
APPLICABLE_KINDS = {
    ("openai_responses", "stream"),
    ("openai_responses", "response"),
    ("openai_responses", "error"),
    ("anthropic", "request"),
    ("openai_chat", "request"),
}
# Request cases that must be refused, and the parameter the 400 names.
REFUSED_REQUESTS = {
    "anthropic-request-stop-sequences-temperature": "stop_sequences",
    "openai_chat-request-stop-stream-options": "stop",
}
# Streams that fail before their answer is complete (in-band error): the client SDK must raise too.
ERROR_STREAMS = {"openai_responses-stream-failed-insufficient-quota"}
# An `error` after `response.completed` (issue 10 item 7): the terminal event closes the answer, which the
# client receives complete; the late error is only logged.
LATE_ERROR_STREAMS = {
    "openai_responses-stream-error-after-completed",
    "openai_responses-stream-reasoning-summary-function-call-late-error",
}


def applicable(kind: str, fmt: str) -> list[str]:
    return [c["id"] for c in manifest() if c["kind"] == kind and c["format"] == fmt]


def ids(kind: str, fmt: str) -> list[str]:
    found = applicable(kind, fmt)
    return found or [f"missing-{fmt}-{kind}"]


def test_every_case_is_classified() -> None:
    if not manifest():
        pytest.skip(f"conformance corpus not found at {corpus_dir()} (set CCPROXY_CONFORMANCE_DIR)")
    for c in manifest():
        key = (c["format"], c["kind"])
        assert (key in APPLICABLE_KINDS) != (key in NOT_APPLICABLE_REASONS), c["id"]
    covered = {c["id"] for c in manifest() if (c["format"], c["kind"]) in APPLICABLE_KINDS}
    assert len(covered) == 12 + 7 + 7 + 22 + 12
    assert set(REFUSED_REQUESTS) | ERROR_STREAMS | LATE_ERROR_STREAMS <= covered


# --- SDK drivers (offline, via a mock transport) -----


def _client_transport(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=body, headers={"content-type": content_type})

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def anthropic_final(body: bytes) -> anthropic.types.Message:
    client = anthropic.Anthropic(api_key="test", http_client=_client_transport(body), max_retries=0)
    with client.messages.stream(model="m", max_tokens=16, messages=[{"role": "user", "content": "x"}]) as s:
        return s.get_final_message()


def chat_final(body: bytes) -> Any:
    client = openai.OpenAI(api_key="test", http_client=_client_transport(body), max_retries=0)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as s:
        return s.get_final_completion()


def events(raw: bytes) -> list[tuple[str | None, JSON]]:
    return [(e.event, json.loads(e.data)) for e in SSEParser().feed(raw)]


def translate(translator: Any, raw: bytes) -> bytes:
    out = b"".join(translator.feed(name, data) for name, data in events(raw))
    return out + translator.finish()


def terminal(raw: bytes) -> JSON | None:
    for _, data in reversed(events(raw)):
        if data.get("type") in {"response.completed", "response.incomplete"}:
            response: JSON = data["response"]
            return response
    return None


# --- what the source carried -----


def source_content(response: JSON) -> tuple[str, list[tuple[str, str, Any]], int]:
    """``(text, [(call_id, name, arguments)], reasoning_items)`` of a terminal Responses object."""
    text, calls, reasoning = "", [], 0
    for item in response.get("output") or []:
        if item["type"] == "message":
            text += "".join(p.get("text", "") for p in item["content"] if p["type"] == "output_text")
        elif item["type"] == "function_call":
            calls.append((item["call_id"], item["name"], json.loads(item["arguments"] or "{}")))
        elif item["type"] == "reasoning":
            reasoning += 1
    return text, calls, reasoning


def expected_anthropic_stop(response: JSON, has_calls: bool) -> str:
    if response["status"] == "incomplete":
        return "max_tokens"
    return "tool_use" if has_calls else "end_turn"


def streamed_output(raw: bytes, response: JSON) -> JSON:
    """``response`` with the items as the stream delivered them (``output_item.done``): the upstream may
    re-encrypt reasoning content in the terminal object, and the stream's copy is what the client got."""
    done = [d["item"] for _, d in events(raw) if d.get("type") == "response.output_item.done"]
    return {**response, "output": done} if done else response


def check_anthropic(message: anthropic.types.Message, response: JSON) -> None:
    text, calls, reasoning = source_content(response)
    blocks = message.content
    assert "".join(b.text for b in blocks if b.type == "text") == text
    assert [(b.id, b.name, b.input) for b in blocks if b.type == "tool_use"] == calls
    thinking = [b for b in blocks if b.type == "thinking"]
    assert len(thinking) == reasoning
    items = [i for i in response["output"] if i["type"] == "reasoning"]
    for block, item in zip(thinking, items, strict=True):
        decoded = decode_reasoning_item(block.signature)
        assert decoded is not None and decoded["id"] == item["id"]
        assert decoded.get("encrypted_content") == item.get("encrypted_content")
        assert decoded["summary"] == item.get("summary", [])
    assert message.stop_reason == expected_anthropic_stop(response, bool(calls))
    usage = response["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert message.usage.input_tokens == usage["input_tokens"] - cached
    assert message.usage.cache_read_input_tokens == cached
    assert message.usage.output_tokens == usage["output_tokens"]


def check_chat(completion: Any, response: JSON) -> None:
    text, calls, _ = source_content(response)
    message = completion.choices[0].message
    assert (message.content or "") == text
    got = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    assert got == calls
    finish = "length" if response["status"] == "incomplete" else ("tool_calls" if calls else "stop")
    assert completion.choices[0].finish_reason == finish
    usage = response["usage"]
    assert completion.usage.prompt_tokens == usage["input_tokens"]
    assert completion.usage.completion_tokens == usage["output_tokens"]
    assert (
        completion.usage.prompt_tokens_details.cached_tokens == usage["input_tokens_details"]["cached_tokens"]
    )


# --- streams -----


@pytest.mark.parametrize("case_id", ids("stream", "openai_responses"))
def test_stream_to_anthropic_sdk(case_id: str) -> None:
    raw = read_case(case_id)
    out = translate(anthropic_on_responses.AnthropicStream(TranslationContext(model="claude-test")), raw)
    assert out.startswith(b"event: message_start\n") and out.endswith(b"\n\n")
    if case_id in ERROR_STREAMS:
        with pytest.raises(anthropic.APIStatusError):
            anthropic_final(out)
        return
    response = terminal(raw)
    assert response is not None
    message = anthropic_final(out)
    assert message.model == "claude-test"
    check_anthropic(message, streamed_output(raw, response))


@pytest.mark.parametrize("case_id", ids("stream", "openai_responses"))
def test_stream_to_chat_sdk(case_id: str) -> None:
    raw = read_case(case_id)
    ctx = TranslationContext(model="gpt-test", request={"stream_options": {"include_usage": True}})
    out = translate(chat_on_responses.ChatStream(ctx), raw)
    assert b"event:" not in out
    if case_id in ERROR_STREAMS:
        with pytest.raises(openai.APIError):
            chat_final(out)
        return
    response = terminal(raw)
    assert response is not None
    if response["status"] == "incomplete":
        # openai-python's accumulator raises on `length`, as the Responses SDK raises on `incomplete`.
        with pytest.raises(openai.LengthFinishReasonError):
            chat_final(out)
        completion = ChatCompletion.model_validate(_raw_chat_completion(out))
    else:
        completion = chat_final(out)
    assert out.endswith(b"data: [DONE]\n\n")
    check_chat(completion, response)


def _raw_chat_completion(out: bytes) -> JSON:
    """Accumulate Chat chunks by hand (for endings the SDK helper refuses to return)."""
    content, finish, usage = "", None, None
    for name, data in events(out.replace(b"data: [DONE]\n\n", b"")):
        assert name is None
        usage = data.get("usage") or usage
        for choice in data["choices"]:
            content += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [choice],
        "usage": usage,
    }


def test_chat_usage_chunk_only_when_asked() -> None:
    raw = read_case("openai_responses-stream-text")
    out = translate(chat_on_responses.ChatStream(TranslationContext(model="m")), raw)
    assert b'"usage"' not in out
    assert chat_final(out).usage is None


# --- non-streaming responses (also the terminal object of every complete stream) -----


def _response_cases() -> list[str]:
    streams = [c for c in ids("stream", "openai_responses") if c not in ERROR_STREAMS]
    return ids("response", "openai_responses") + streams


def _load_response(case_id: str) -> JSON:
    raw = read_case(case_id)
    if case(case_id)["kind"] == "stream":
        response = terminal(raw)
        assert response is not None
        return response
    loaded: JSON = json.loads(raw)
    return loaded


@pytest.mark.parametrize("case_id", _response_cases())
def test_response_to_anthropic(case_id: str) -> None:
    response = _load_response(case_id)
    body = anthropic_on_responses.convert_response(response, TranslationContext(model="claude-test"))
    message = anthropic.types.Message.model_validate(body)
    check_anthropic(message, response)


@pytest.mark.parametrize("case_id", _response_cases())
def test_response_to_chat(case_id: str) -> None:
    response = _load_response(case_id)
    body = chat_on_responses.convert_response(response, TranslationContext(model="gpt-test"))
    completion = ChatCompletion.model_validate(body)
    check_chat(completion, response)


# --- error bodies -----

_ANTHROPIC_ERRORS = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    429: anthropic.RateLimitError,
}
_OPENAI_ERRORS = {400: openai.BadRequestError, 401: openai.AuthenticationError, 429: openai.RateLimitError}


@pytest.mark.parametrize("case_id", ids("error", "openai_responses"))
def test_error_body_reaches_client_sdks(case_id: str) -> None:
    status = case(case_id)["http"]["status"]
    info = parse_error(status, read_case(case_id))
    assert info.message
    a_status, a_body = render_error(Format.ANTHROPIC, info)
    client = anthropic.Anthropic(
        api_key="t",
        max_retries=0,
        http_client=_client_transport(json.dumps(a_body).encode(), a_status, "application/json"),
    )
    with pytest.raises(_ANTHROPIC_ERRORS[status]) as a_exc:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert info.message in str(a_exc.value)
    o_status, o_body = render_error(Format.CHAT, info)
    oclient = openai.OpenAI(
        api_key="t",
        max_retries=0,
        http_client=_client_transport(json.dumps(o_body).encode(), o_status, "application/json"),
    )
    with pytest.raises(_OPENAI_ERRORS[status]):
        oclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


# --- requests -----

_RESPONSES_PARAMS = TypeAdapter(response_create_params.ResponseCreateParamsStreaming)
_RESPONSES_KEYS = (
    response_create_params.ResponseCreateParamsStreaming.__required_keys__
    | response_create_params.ResponseCreateParamsStreaming.__optional_keys__
)


def assert_valid_responses_request(body: JSON) -> None:
    assert set(body) <= _RESPONSES_KEYS, set(body) - _RESPONSES_KEYS
    _RESPONSES_PARAMS.validate_python({**body, "stream": True})
    assert isinstance(body["model"], str) and isinstance(body["input"], list)
    for item in body["input"]:
        assert item["type"] in {"message", "function_call", "function_call_output", "reasoning"}


def _texts(items: list[JSON]) -> list[str]:
    texts: list[str] = []
    for item in items:
        if item["type"] == "message":
            content = item["content"]
            if isinstance(content, str):
                texts.append(content)
            else:
                texts += [p["text"] for p in content if p["type"] in {"input_text", "output_text"}]
    return texts


@pytest.mark.parametrize("case_id", ids("request", "anthropic"))
def test_anthropic_request(case_id: str) -> None:
    source = json.loads(read_case(case_id))
    snapshot = json.dumps(source, sort_keys=True)
    if case_id in REFUSED_REQUESTS:
        with pytest.raises(TranslationError) as exc:
            validate(Format.ANTHROPIC, Format.RESPONSES, source)  # the route's edge
        assert exc.value.param == REFUSED_REQUESTS[case_id] and exc.value.status == 400
        return
    validate(Format.ANTHROPIC, Format.RESPONSES, source)
    body = anthropic_on_responses.convert_request(source)
    assert json.dumps(source, sort_keys=True) == snapshot  # input not mutated
    assert_valid_responses_request(body)
    assert body["model"] == source["model"]
    assert body["max_output_tokens"] == max(source["max_tokens"], 16)
    system = source.get("system")
    if isinstance(system, str):
        assert body["instructions"] == system
    elif isinstance(system, list):
        assert body["instructions"] == "\n\n".join(b["text"] for b in system)
    sent_texts, tool_uses, results, images = [], [], [], 0
    for message in source["messages"]:
        blocks = (
            message["content"]
            if isinstance(message["content"], list)
            else [{"type": "text", "text": message["content"]}]
        )
        for block in blocks:
            if block["type"] == "text":
                sent_texts.append(block["text"])
            elif block["type"] == "tool_use":
                tool_uses.append((block["id"], block["name"], block["input"]))
            elif block["type"] == "tool_result":
                results.append(block["tool_use_id"])
            elif block["type"] == "image":
                images += 1
    items = body["input"]
    assert _texts(items) == sent_texts
    calls = [
        (i["call_id"], i["name"], json.loads(i["arguments"])) for i in items if i["type"] == "function_call"
    ]
    assert calls == tool_uses
    assert [i["call_id"] for i in items if i["type"] == "function_call_output"] == results
    parts = [
        p for i in items if i["type"] == "message" and isinstance(i["content"], list) for p in i["content"]
    ]
    got_images = [p for p in parts if p["type"] == "input_image"]
    assert len(got_images) == images
    _check_anthropic_tools(source, body)
    if source.get("thinking", {}).get("type") in {"enabled", "adaptive"}:
        assert body["include"] == ["reasoning.encrypted_content"]
        assert body["reasoning"]["effort"] in {"low", "medium", "high", "xhigh"}


def _check_anthropic_tools(source: JSON, body: JSON) -> None:
    tools = source.get("tools") or []
    assert [t.get("name") for t in body.get("tools", []) if t["type"] == "function"] == [
        t["name"] for t in tools if t.get("type") in (None, "custom")
    ]
    if any(str(t.get("type", "")).startswith("web_search") for t in tools):
        assert {"type": "web_search"} in body["tools"]
    choice = source.get("tool_choice")
    if choice:
        expected = {"auto": "auto", "any": "required", "none": "none"}.get(choice["type"])
        assert body["tool_choice"] == (expected or {"type": "function", "name": choice["name"]})


@pytest.mark.parametrize("case_id", ids("request", "openai_chat"))
def test_chat_request(case_id: str) -> None:
    source = json.loads(read_case(case_id))
    snapshot = json.dumps(source, sort_keys=True)
    if case_id in REFUSED_REQUESTS:
        with pytest.raises(TranslationError) as exc:
            validate(Format.CHAT, Format.RESPONSES, source)  # the route's edge
        assert exc.value.param == REFUSED_REQUESTS[case_id] and exc.value.status == 400
        return
    validate(Format.CHAT, Format.RESPONSES, source)
    body = chat_on_responses.convert_request(source)
    assert json.dumps(source, sort_keys=True) == snapshot
    assert_valid_responses_request(body)
    messages = source["messages"]
    system = [m["content"] for m in messages if m["role"] in {"system", "developer"}]
    assert body.get("instructions", "") == "\n\n".join(system)
    others = [m for m in messages if m["role"] in {"user", "assistant"}]
    sent = []
    for m in others:
        content = m.get("content")
        if isinstance(content, str) and content:
            sent.append(content)
        elif isinstance(content, list):
            sent += [p["text"] for p in content if p["type"] == "text"]
    assert _texts(body["input"]) == sent
    calls = [c["id"] for m in messages for c in m.get("tool_calls") or []]
    assert [i["call_id"] for i in body["input"] if i["type"] == "function_call"] == calls
    outputs = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert [i["call_id"] for i in body["input"] if i["type"] == "function_call_output"] == outputs
    cap = source.get("max_completion_tokens", source.get("max_tokens"))
    assert body.get("max_output_tokens") == (None if cap is None else max(cap, 16))
    tools = [t["function"]["name"] for t in source.get("tools") or []]
    assert [t["name"] for t in body.get("tools", [])] == tools
    if "reasoning_effort" in source:
        assert body["reasoning"] == {"effort": source["reasoning_effort"]}
    if "response_format" in source:
        schema = source["response_format"]["json_schema"]
        assert body["text"]["format"]["schema"] == schema["schema"]
        assert body["text"]["format"]["name"] == schema["name"]
