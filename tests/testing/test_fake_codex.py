"""The fake ChatGPT Codex backend against the openai SDK (Responses streaming) and raw httpx."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from ccproxy.sse import SSEEvent, SSEParser
from ccproxy.testing import Completion, RunningFakes, ToolCall, serve_app
from ccproxy.testing.fake_codex import create_app

MODEL = "gpt-5.5"
ACCOUNT_ID = "acct-fake-1"  # what the conftest `codex` client sends
HEADERS = {"authorization": "Bearer tok", "chatgpt-account-id": ACCOUNT_ID}
INPUT = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}]


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": INPUT, "stream": True, "store": False, **extra}


def raw_stream(http: httpx.Client, url: str, request: dict[str, Any]) -> list[SSEEvent]:
    with http.stream("POST", url + "/responses", json=request, headers=HEADERS) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        data = response.read()
    parser = SSEParser()
    events = parser.feed(data)
    assert parser.pending == b""
    for number, event in enumerate(events):
        payload = orjson.loads(event.data)
        assert payload["type"] == event.event and payload["sequence_number"] == number
    return events


def types(events: list[SSEEvent]) -> list[str | None]:
    return [e.event for e in events]


def test_text_stream_sequence(http: httpx.Client, fakes: RunningFakes, codex: openai.OpenAI) -> None:
    fakes.codex.reply_text("Hello from the fake Codex backend.")
    events = raw_stream(http, fakes.codex_url, body(instructions="You are Codex."))
    assert types(events)[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types(events)[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = orjson.loads(events[-1].data)["response"]
    assert final["instructions"] == "You are Codex." and final["store"] is False
    usage = final["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == 0

    fakes.codex.reply_text("Hello from the fake Codex backend.")
    with codex.responses.stream(model=MODEL, input="hello", store=False) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        response = stream.get_final_response()
    assert "".join(deltas) == response.output_text == "Hello from the fake Codex backend."
    assert response.status == "completed"


def test_function_call(fakes: RunningFakes, codex: openai.OpenAI) -> None:
    args = {"location": "New York, NY", "unit": "F"}
    fakes.codex.reply_tool_call("get_weather", args, call_id="call_given")
    tools: Any = [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}
    ]
    with codex.responses.stream(model=MODEL, input="weather?", store=False, tools=tools) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        response = stream.get_final_response()
    assert len(deltas) >= 2 and orjson.loads("".join(deltas)) == args
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "call_given"
    assert call.id.startswith("fc_") and orjson.loads(call.arguments) == args


def test_parallel_calls_after_text(http: httpx.Client, fakes: RunningFakes) -> None:
    fakes.codex.reply_tool_calls(ToolCall("a", {"x": 1}), ToolCall("b", {"y": 2}), text="Calling two tools.")
    events = raw_stream(http, fakes.codex_url, body())
    added = [orjson.loads(e.data) for e in events if e.event == "response.output_item.added"]
    assert [(a["output_index"], a["item"]["type"]) for a in added] == [
        (0, "message"),
        (1, "function_call"),
        (2, "function_call"),
    ]


def test_reasoning_with_encrypted_content(
    http: httpx.Client, fakes: RunningFakes, codex: openai.OpenAI
) -> None:
    fakes.codex.reply(
        Completion(text="42", thinking="Thinking about the question at length.", cache_read_tokens=64)
    )
    with codex.responses.stream(
        model=MODEL,
        input="question",
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "medium", "summary": "auto"},
    ) as stream:
        summary = [e.delta for e in stream if e.type == "response.reasoning_summary_text.delta"]
        response = stream.get_final_response()
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.summary[0].text == "".join(summary) == "Thinking about the question at length."
    assert message.type == "message" and response.output_text == "42"
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    assert response.usage.input_tokens_details.cached_tokens == 64
    assert response.usage.input_tokens > 64

    fakes.codex.reply_text("42", thinking="no include, no blob")
    events = raw_stream(http, fakes.codex_url, body())
    item = orjson.loads(events[2].data)["item"]
    assert item["type"] == "reasoning" and "encrypted_content" not in item
    assert "response.reasoning_summary_part.added" in types(events)


def test_max_tokens_stop_is_incomplete(http: httpx.Client, fakes: RunningFakes) -> None:
    fakes.codex.reply_text("cut off", stop_reason="max_tokens")
    events = raw_stream(http, fakes.codex_url, body())
    final = orjson.loads(events[-1].data)
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"stream": False}, "Stream must be set to true"),
        ({"store": True}, "Store must be set to false"),
        ({"store": None}, "Store must be set to false"),
        ({"max_output_tokens": 100}, "Unsupported parameter: max_output_tokens"),
        ({"metadata": {"a": "b"}}, "Unsupported parameter: metadata"),
        ({"temperature": 0.2}, "Unsupported parameter: temperature"),
        ({"response_format": {"type": "json_object"}}, "Unsupported parameter: response_format"),
        (
            {"input": [{"type": "message", "role": "system", "content": "be nice"}, *INPUT]},
            "System messages are not allowed",
        ),
    ],
)
def test_backend_rules(http: httpx.Client, fakes: RunningFakes, change: dict[str, Any], detail: str) -> None:
    request = {k: v for k, v in {**body(), **change}.items() if v is not None}
    response = http.post(fakes.codex_url + "/responses", json=request, headers=HEADERS)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}
    assert fakes.codex.last_request.json == request


def test_accepts_codex_cli_body(http: httpx.Client, fakes: RunningFakes) -> None:
    request = body(
        input=[{"type": "message", "role": "developer", "content": "system prompt"}, *INPUT],
        tools=[],
        tool_choice="auto",
        parallel_tool_calls=False,
        reasoning={"summary": "auto"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="conv-1",
        client_metadata={"x": "y"},
        text={"verbosity": "low"},
    )
    assert types(raw_stream(http, fakes.codex_url, request))[-1] == "response.completed"


def test_rules_through_sdk(codex: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        codex.responses.create(model=MODEL, input="x", stream=True, store=False, max_output_tokens=5)
    assert caught.value.body == {"detail": "Unsupported parameter: max_output_tokens"}


def test_auth_required(http: httpx.Client, fakes: RunningFakes) -> None:
    url = fakes.codex_url + "/responses"
    no_bearer = http.post(url, json=body(), headers={"chatgpt-account-id": ACCOUNT_ID})
    assert no_bearer.status_code == 401 and "detail" in no_bearer.json()
    no_account = http.post(url, json=body(), headers={"authorization": "Bearer tok"})
    assert no_account.status_code == 401 and "chatgpt-account-id" in no_account.json()["detail"]
    fakes.codex.require_auth = False
    assert http.post(url, json=body()).status_code == 200


def test_auth_error_through_sdk(fakes: RunningFakes) -> None:
    client = openai.OpenAI(base_url=fakes.codex_url, api_key="tok", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.responses.create(model=MODEL, input="x", stream=True, store=False)


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_scripted_errors(
    fakes: RunningFakes, codex: openai.OpenAI, status: int, exception: type[openai.APIStatusError]
) -> None:
    fakes.codex.reply_error(status, "scripted failure")
    with pytest.raises(exception) as caught, codex.responses.stream(model=MODEL, input="x", store=False) as s:
        s.get_final_response()
    assert caught.value.body == {"detail": "scripted failure"}
    assert caught.value.response.headers["x-request-id"]


def test_usage_limit_error_body(http: httpx.Client, fakes: RunningFakes) -> None:
    fakes.codex.reply_error(429, "The usage limit has been reached", error_type="usage_limit_reached")
    response = http.post(fakes.codex_url + "/responses", json=body(), headers=HEADERS)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "usage_limit_reached"


def test_stream_failures(http: httpx.Client, fakes: RunningFakes, codex: openai.OpenAI) -> None:
    fakes.codex.reply_stream_error(text_before="partial", codex_mode="both")
    events = raw_stream(http, fakes.codex_url, body())
    assert types(events)[-2:] == ["error", "response.failed"]
    failed = orjson.loads(events[-1].data)["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"

    fakes.codex.reply_stream_error("quota", error_type="insufficient_quota", codex_mode="error")
    with (
        pytest.raises(openai.APIError, match="quota"),
        codex.responses.stream(model=MODEL, input="x", store=False) as stream,
    ):
        stream.get_final_response()

    fakes.codex.reply_stream_error(codex_mode="failed")
    with (
        pytest.raises(RuntimeError, match=r"response\.completed"),
        codex.responses.stream(model=MODEL, input="x", store=False) as stream,
    ):
        stream.get_final_response()


def test_rate_limit_headers(http: httpx.Client, fakes: RunningFakes) -> None:
    with http.stream("POST", fakes.codex_url + "/responses", json=body(), headers=HEADERS) as response:
        assert response.headers["x-codex-primary-window-minutes"] == "299"
        assert response.headers["x-request-id"]


def test_standalone_app_serves_both_paths(http: httpx.Client) -> None:
    app = create_app()
    with serve_app(app) as url:
        for path in ("/responses", "/backend-api/codex/responses"):
            response = http.post(url + path, json=body(), headers=HEADERS)
            assert response.status_code == 200 and b"response.completed" in response.content
    assert [r.path for r in app.state.upstream.requests] == ["/responses", "/backend-api/codex/responses"]


def test_recorded_path_and_headers(fakes: RunningFakes, codex: openai.OpenAI) -> None:
    with codex.responses.stream(model=MODEL, input="x", store=False) as stream:
        stream.get_final_response()
    recorded = fakes.codex.last_request
    assert recorded.path == "/backend-api/codex/responses"
    assert recorded.headers["authorization"] == "Bearer chatgpt-access-token"
    assert recorded.headers["chatgpt-account-id"] == ACCOUNT_ID
    assert recorded.json["stream"] is True and recorded.json["store"] is False
