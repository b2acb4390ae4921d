"""Recorded Anthropic payloads served as the upstream of Chat and Responses clients, checked with the
official openai SDK parsers; recorded OpenAI requests converted into Anthropic requests and validated."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from anthropic_upstream_support import (
    anthropic_final,
    chat_chunks,
    chat_final,
    responses_final,
    translate_stream,
    validate_anthropic_request,
)
from corpus_files import Corpus, load_corpus
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from ccproxy.formats import chat_on_anthropic, common, media, responses_on_anthropic
from ccproxy.formats.base import TranslationContext, TranslationError

# Which corpus cases this direction consumes, and why the others do not apply.
APPLIES = {
    ("anthropic", "stream"): "served as the upstream stream of Chat and Responses clients",
    ("anthropic", "response"): "served as the upstream body of Chat and Responses clients",
    ("openai_chat", "request"): "a Chat client request, converted to an Anthropic request",
    ("openai_responses", "request"): "a Responses client request, converted to an Anthropic request",
}
NOT_APPLICABLE = {
    (
        "anthropic",
        "request",
    ): "Anthropic-client requests: input of the Anthropic passthrough, not of this direction",
    (
        "anthropic",
        "error",
    ): "HTTP error bodies are rendered by errors.render_error before any translator runs",
    ("openai_chat", "stream"): "an OpenAI upstream payload: the Responses-upstream direction's input",
    ("openai_chat", "response"): "an OpenAI upstream payload: the Responses-upstream direction's input",
    ("openai_chat", "error"): "an OpenAI upstream error body, not produced by an Anthropic upstream",
    ("openai_responses", "stream"): "an OpenAI upstream payload: the Responses-upstream direction's input",
    ("openai_responses", "response"): "an OpenAI upstream payload: the Responses-upstream direction's input",
    ("openai_responses", "error"): "an OpenAI upstream error body, not produced by an Anthropic upstream",
}
# Request cases that must be refused, with the parameter the 400 names.
REFUSED = {"openai_responses-request-temperature-out-of-range": "temperature"}

_CORPUS = load_corpus()


def _ids(fmt: str, kind: str) -> list[str]:
    return _CORPUS.ids(fmt, kind) if _CORPUS else []


def test_applicability_table_covers_every_case(corpus: Corpus) -> None:
    kinds = {(c["format"], c["kind"]) for c in corpus.cases}
    assert kinds == set(APPLIES) | set(NOT_APPLICABLE)
    assert not set(APPLIES) & set(NOT_APPLICABLE)
    applicable = [c["id"] for c in corpus.cases if (c["format"], c["kind"]) in APPLIES]
    assert len(applicable) == 16 + 12 + 12 + 18


# --- source of truth -------------------------------------------------------------------------------


def _source_from_events(raw: bytes) -> dict[str, Any]:
    """Text, tool calls (argument strings as streamed), stop reason and usage of an Anthropic stream."""
    from ccproxy.sse import SSEParser

    text: list[str] = []
    tools: dict[int, list[Any]] = {}
    stop_reason = None
    usage: dict[str, Any] = {}
    error = None
    for event in SSEParser().feed(raw):
        data = json.loads(event.data)
        kind = data.get("type")
        if kind == "message_start":
            usage.update(data["message"].get("usage") or {})
        elif kind == "content_block_start" and data["content_block"]["type"] == "tool_use":
            block = data["content_block"]
            tools[data["index"]] = [block["id"], block["name"], ""]
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                text.append(delta["text"])
            elif delta["type"] == "input_json_delta" and data["index"] in tools:
                tools[data["index"]][2] += delta["partial_json"]
        elif kind == "message_delta":
            stop_reason = data["delta"].get("stop_reason") or stop_reason
            usage.update(data.get("usage") or {})
        elif kind == "error":
            error = data["error"]
    calls = [(i, n, a or "{}") for i, n, a in tools.values()]
    return {"text": "".join(text), "tools": calls, "stop_reason": stop_reason, "usage": usage, "error": error}


def _prompt_total(usage: dict[str, Any]) -> int:
    return sum(
        usage.get(k) or 0 for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )


# --- streams -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", _ids("anthropic", "stream"))
def test_stream_to_chat(corpus: Corpus, case_id: str) -> None:
    raw = corpus.bytes(case_id)
    source = _source_from_events(raw)
    ctx = TranslationContext("gpt-4o", {"stream_options": {"include_usage": True}})
    out = translate_stream(chat_on_anthropic.ChatStream(ctx), raw)
    assert out.endswith(b"data: [DONE]\n\n") and b"event:" not in out

    if source["error"]:
        with pytest.raises(openai.APIError, match=source["error"]["message"]):
            chat_chunks(out)
        return
    chunks = chat_chunks(out)
    assert all(c.model == "gpt-4o" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls: dict[int, list[str]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if tc.index not in calls:
                assert tc.id and tc.function and tc.function.name, "first delta names the call"
                calls[tc.index] = [tc.id, tc.function.name, ""]
            else:
                assert tc.id is None and tc.function and tc.function.name is None, "id/name only once"
            calls[tc.index][2] += (tc.function.arguments if tc.function else None) or ""
    assert sorted(calls) == list(range(len(calls))), "dense tool indexes from 0"
    assert text == source["text"]
    assert [tuple(v) for _, v in sorted(calls.items())] == source["tools"]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [common.chat_finish_reason(source["stop_reason"])]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == _prompt_total(source["usage"])
    assert chunks[-1].usage.completion_tokens == source["usage"]["output_tokens"]

    # The SDK's accumulating helper: succeeds, or fails exactly where it fails for OpenAI's own streams.
    if finish == ["length"]:
        with pytest.raises(openai.LengthFinishReasonError):
            chat_final(out)
    elif finish == ["content_filter"]:
        with pytest.raises(openai.ContentFilterFinishReasonError):
            chat_final(out)
    else:
        message = chat_final(out).choices[0].message
        assert (message.content or "") == source["text"]
        got = [(t.id, t.function.name, t.function.arguments) for t in message.tool_calls or []]
        assert got == source["tools"]
        for (_, _, args), parsed in zip(got, message.tool_calls or [], strict=True):
            assert json.loads(args) == json.loads(parsed.function.arguments)


@pytest.mark.parametrize("case_id", _ids("anthropic", "stream"))
def test_stream_to_responses(corpus: Corpus, case_id: str) -> None:
    raw = corpus.bytes(case_id)
    source = _source_from_events(raw)
    out = translate_stream(responses_on_anthropic.ResponsesStream(TranslationContext("gpt-4o", {})), raw)
    if source["error"]:
        with pytest.raises(openai.APIError, match=source["error"]["message"]):
            responses_final(out)
        assert b"event: response.failed" in out
        return
    events, final = responses_final(out)
    assert events[0].type == "response.created"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    terminal = events[-1]
    status, details = common.responses_status(source["stop_reason"])
    assert terminal.type == f"response.{status}"
    response = terminal.response
    assert (final is None) == (status == "incomplete")
    assert response.model == "gpt-4o" and response.status == status
    assert (response.incomplete_details.reason if response.incomplete_details else None) == (
        details["reason"] if details else None
    )
    assert response.output_text == source["text"]
    calls = [(o.call_id, o.name, o.arguments) for o in response.output if o.type == "function_call"]
    assert calls == source["tools"]
    assert response.usage.input_tokens == _prompt_total(source["usage"])
    assert response.usage.output_tokens == source["usage"]["output_tokens"]
    assert response.usage.input_tokens_details.cached_tokens == (
        source["usage"].get("cache_read_input_tokens") or 0
    )
    # Each added item is completed at its own index, in order.
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert added == list(range(len(response.output))) and sorted(done) == added

    # Thinking blocks survive: every reasoning item decodes to the Anthropic block the SDK accumulated.
    blocks = [b.model_dump(exclude_none=True) for b in anthropic_final(raw).content]
    thinking = [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
    carried = [
        common.decode_thinking_block(o.encrypted_content) for o in response.output if o.type == "reasoning"
    ]
    assert carried == thinking


# --- non-streaming responses -----------------------------------------------------------------------


@pytest.mark.parametrize("case_id", _ids("anthropic", "response"))
def test_response_to_chat(corpus: Corpus, case_id: str) -> None:
    message = corpus.json(case_id)
    body = chat_on_anthropic.convert_response(message, TranslationContext("gpt-4o"))
    parsed = ChatCompletion.model_validate(body)
    choice = parsed.choices[0]
    text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
    assert (choice.message.content or "") == text
    tools = [(b["id"], b["name"], b["input"]) for b in message["content"] if b["type"] == "tool_use"]
    got = [(t.id, t.function.name, json.loads(t.function.arguments)) for t in choice.message.tool_calls or []]
    assert got == tools
    assert choice.finish_reason == common.chat_finish_reason(message["stop_reason"])
    assert parsed.model == "gpt-4o"
    assert parsed.usage is not None
    assert parsed.usage.prompt_tokens == _prompt_total(message["usage"])
    assert parsed.usage.completion_tokens == message["usage"]["output_tokens"]
    cached = parsed.usage.prompt_tokens_details.cached_tokens if parsed.usage.prompt_tokens_details else None
    assert cached == (message["usage"].get("cache_read_input_tokens") or 0)
    if message["stop_reason"] == "refusal":
        assert choice.message.refusal == message["stop_details"]["explanation"]
    thinking = [b for b in message["content"] if b["type"] in ("thinking", "redacted_thinking")]
    assert (body["choices"][0]["message"].get("thinking_blocks") or []) == thinking


@pytest.mark.parametrize("case_id", _ids("anthropic", "response"))
def test_response_to_responses(corpus: Corpus, case_id: str) -> None:
    message = corpus.json(case_id)
    body = responses_on_anthropic.convert_response(
        message, TranslationContext("gpt-4o", {"instructions": "x"})
    )
    parsed = Response.model_validate(body)
    text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
    assert parsed.output_text == text
    tools = [(b["id"], b["name"], b["input"]) for b in message["content"] if b["type"] == "tool_use"]
    got = [(o.call_id, o.name, json.loads(o.arguments)) for o in parsed.output if o.type == "function_call"]
    assert got == tools
    status, _ = common.responses_status(message["stop_reason"])
    assert parsed.status == status and parsed.instructions == "x"
    assert parsed.usage is not None and parsed.usage.input_tokens == _prompt_total(message["usage"])
    assert parsed.usage.input_tokens_details.cached_tokens == (
        message["usage"].get("cache_read_input_tokens") or 0
    )
    thinking = [b for b in message["content"] if b["type"] in ("thinking", "redacted_thinking")]
    carried = [
        common.decode_thinking_block(o.encrypted_content) for o in parsed.output if o.type == "reasoning"
    ]
    assert carried == thinking
    if message["stop_reason"] == "refusal":
        refusals = [p for o in parsed.output if o.type == "message" for p in o.content if p.type == "refusal"]
        assert [p.refusal for p in refusals] == [message["stop_details"]["explanation"]]


# --- requests ----------------------------------------------------------------------------------------


def _system_text(anthropic_body: dict[str, Any]) -> str:
    return "\n".join(b["text"] for b in anthropic_body.get("system") or [])


@pytest.mark.parametrize("case_id", _ids("openai_chat", "request"))
def test_chat_request(corpus: Corpus, case_id: str) -> None:
    body = corpus.json(case_id)
    before = json.dumps(body, sort_keys=True)
    out = chat_on_anthropic.convert_request(body)
    assert json.dumps(body, sort_keys=True) == before, "input not mutated"
    req = validate_anthropic_request(out)
    systems = [m["content"] for m in body["messages"] if m["role"] in ("system", "developer")]
    assert _system_text(out) == "\n".join(systems)
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    assert req.max_tokens == (cap or common.DEFAULT_MAX_TOKENS)
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    assert [t.name for t in req.tools or []] == tools
    if tools:
        params = [t["function"].get("parameters") for t in body["tools"]]
        assert [t.input_schema for t in req.tools or []] == params
    expected_choice = {
        None: "auto",
        "auto": "auto",
        "none": "none",
        "required": "any",
    }.get(body.get("tool_choice") if isinstance(body.get("tool_choice"), str | None) else "", "tool")
    if tools:
        assert req.tool_choice is not None and req.tool_choice.type == expected_choice
    if body.get("stop"):
        assert req.stop_sequences == body["stop"]
    if "temperature" in body:
        assert req.temperature == body["temperature"]
    if body.get("reasoning_effort"):
        assert req.thinking is not None
        assert (
            req.thinking.budget_tokens
            == min(common.EFFORT_TO_BUDGET[body["reasoning_effort"]], req.max_tokens - 1)
            or req.max_tokens <= 1024
        )
    rf = body.get("response_format")
    if rf and rf["type"] == "json_schema":
        assert req.output_config and req.output_config.format
        assert req.output_config.format.schema_ == rf["json_schema"]["schema"]
    _assert_images_and_tools_carried(body["messages"], out)


def _assert_images_and_tools_carried(messages: list[dict[str, Any]], out: dict[str, Any]) -> None:
    blocks = [b for m in out["messages"] for b in m["content"]]
    urls = [
        p["image_url"]["url"]
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "image_url"
    ]
    images = [b for b in blocks if b["type"] == "image"]
    assert [media.image_url_from_anthropic(b["source"]) for b in images] == urls
    calls = [c["id"] for m in messages for c in m.get("tool_calls") or []]
    assert [b["id"] for b in blocks if b["type"] == "tool_use"] == calls
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"] == results


@pytest.mark.parametrize("case_id", _ids("openai_responses", "request"))
def test_responses_request(corpus: Corpus, case_id: str) -> None:
    body = corpus.json(case_id)
    if case_id in REFUSED:
        with pytest.raises(TranslationError) as err:
            responses_on_anthropic.convert_request(body)
        assert err.value.param == REFUSED[case_id] and err.value.status == 400
        return
    before = json.dumps(body, sort_keys=True)
    out = responses_on_anthropic.convert_request(body)
    assert json.dumps(body, sort_keys=True) == before, "input not mutated"
    req = validate_anthropic_request(out)
    items = body["input"] if isinstance(body["input"], list) else []
    systems = [body["instructions"]] if body.get("instructions") else []
    systems += [i["content"] for i in items if i.get("role") in ("system", "developer")]
    assert _system_text(out) == "\n".join(systems)
    assert req.max_tokens == (body.get("max_output_tokens") or common.DEFAULT_MAX_TOKENS)
    tools = [t["name"] for t in body.get("tools") or []]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        allowed = {t["name"] for t in choice["tools"]}
        tools = [t for t in tools if t in allowed]
    assert [t.name for t in req.tools or []] == tools
    if tools:
        expected = {"auto": "auto", "none": "none", "required": "any"}
        mode = choice["mode"] if isinstance(choice, dict) and "mode" in choice else choice
        want = expected.get(mode or "auto", "tool") if isinstance(mode, str | None) else "tool"
        assert req.tool_choice is not None and req.tool_choice.type == want
    effort = (body.get("reasoning") or {}).get("effort")
    forced = req.tool_choice is not None and req.tool_choice.type in ("any", "tool")
    # Thinking is left off when a forced tool or a tool loop without replayed thinking blocks forbids it.
    last = next((m["content"] for m in reversed(out["messages"]) if m["role"] == "assistant"), [])
    loop = any(b["type"] == "tool_use" for b in last) and last[0]["type"] not in (
        "thinking",
        "redacted_thinking",
    )
    wanted = bool(effort and effort != "none" and not forced and not loop and req.max_tokens > 1024)
    assert (req.thinking is not None) == wanted
    fmt = (body.get("text") or {}).get("format")
    if fmt and fmt["type"] == "json_schema":
        assert (
            req.output_config
            and req.output_config.format
            and req.output_config.format.schema_ == fmt["schema"]
        )
    blocks = [b for m in out["messages"] for b in m["content"]]
    urls = [
        p["image_url"]
        for i in items
        if isinstance(i.get("content"), list)
        for p in i["content"]
        if p.get("type") == "input_image"
    ]
    assert [media.image_url_from_anthropic(b["source"]) for b in blocks if b["type"] == "image"] == urls
    calls = [i["call_id"] for i in items if i.get("type") == "function_call"]
    assert [b["id"] for b in blocks if b["type"] == "tool_use"] == calls
    outputs = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
    assert [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"] == outputs
    # OpenAI's own encrypted reasoning cannot be replayed to Anthropic: never forwarded as thinking.
    assert not [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
