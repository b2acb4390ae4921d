"""Issue 4: the openai SDK through ``/api/v1`` (Chat Completions and Responses on the Claude upstream)."""

from __future__ import annotations

import json

import openai
import pytest

from .conftest import CLAUDE_TOKEN, Fakes

IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
RESPONSE_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": False,
    }
]
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def client(proxy: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy + "/api/v1", api_key="x", max_retries=0)


def assert_upstream_call(fakes: Fakes) -> None:
    seen = fakes.anthropic.last_request
    assert seen.path == "/v1/messages"
    assert seen.headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
    assert "x-api-key" not in seen.headers
    assert not any(k.startswith("x-stainless-") for k in seen.headers)  # OpenAI SDK headers are dropped
    assert seen.json["system"][0] == {"type": "text", "text": IDENTITY}
    betas = set(seen.headers["anthropic-beta"].split(","))
    assert betas == {"oauth-2025-04-20", "claude-code-20250219"}


# ------------------------------------------------------------------------------------ chat completions


def test_chat_create(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_text("Hello from Claude.")
    completion = client.chat.completions.create(
        model="sonnet",
        messages=[{"role": "system", "content": "Be nice."}, *USER],  # type: ignore[list-item]
        max_tokens=100,
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello from Claude."
    assert choice.finish_reason == "stop"
    assert completion.model == "sonnet"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    body = fakes.anthropic.last_request.json
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["max_tokens"] == 100
    assert {"type": "text", "text": "Be nice."} in body["system"]
    assert_upstream_call(fakes)


def test_chat_create_tool_call(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_tool_call("get_weather", {"city": "Paris"})
    completion = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=USER,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    tools = fakes.anthropic.last_request.json["tools"]
    assert tools[0]["name"] == "get_weather"
    assert tools[0]["input_schema"]["required"] == ["city"]
    # the tool result goes back as an Anthropic tool_result
    follow = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[
            *USER,
            completion.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21C"},
        ],  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert "sunny, 21C" in (follow.choices[0].message.content or "")
    last = fakes.anthropic.last_request.json["messages"][-1]
    assert last["role"] == "user"
    assert last["content"][0]["type"] == "tool_result"
    assert last["content"][0]["tool_use_id"] == calls[0].id


def test_chat_stream_tools_and_usage_chunk(client: openai.OpenAI, fakes: Fakes) -> None:
    args = {"city": "Paris, France", "unit": "celsius"}
    fakes.anthropic.reply_tool_call("get_weather", args, text="Checking.")
    chunks = list(
        client.chat.completions.create(
            model="sonnet",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking."
    fragments = [
        tc.function.arguments
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function and tc.function.arguments
    ]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == args
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.prompt_tokens > 0
    assert all(c.model == "sonnet" for c in chunks)
    assert_upstream_call(fakes)
    assert fakes.anthropic.last_request.json["stream"] is True


def test_chat_stream_helper_final_completion(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_tool_call("get_weather", {"city": "Oslo"}, text="One moment.")
    with client.chat.completions.stream(
        model="claude-sonnet-4-5",
        messages=USER,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    message = final.choices[0].message
    assert message.content == "One moment."
    assert message.tool_calls is not None
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.total_tokens > 0


def test_chat_refused_parameter(client: openai.OpenAI, fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="sonnet", messages=USER, n=2)  # type: ignore[arg-type]
    assert info.value.param == "n"
    assert "n must be 1" in info.value.message
    assert fakes.anthropic.requests == []  # refused before any upstream call


def test_responses_refused_parameter(client: openai.OpenAI, fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="sonnet", input="hi", background=True)
    assert info.value.param == "background"
    assert fakes.anthropic.requests == []


# ------------------------------------------------------------------------------------------ responses


def test_responses_create(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_text("Answer from Claude.", thinking="Let me think about this one.")
    response = client.responses.create(
        model="sonnet",
        instructions="Be terse.",
        input="What is up?",
        reasoning={"effort": "medium"},
        max_output_tokens=2048,
    )
    assert response.output_text == "Answer from Claude."
    assert response.status == "completed"
    assert response.model == "sonnet"
    assert response.usage is not None and response.usage.output_tokens > 0
    types = [item.type for item in response.output]
    assert types[-1] == "message"
    body = fakes.anthropic.last_request.json
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert {"type": "text", "text": "Be terse."} in body["system"]
    assert_upstream_call(fakes)


def test_responses_stream_final_response(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_tool_call("get_weather", {"city": "Rome"}, text="Looking it up.")
    with client.responses.stream(
        model="claude-sonnet-4-5",
        input="Weather in Rome?",
        tools=RESPONSE_TOOLS,  # type: ignore[arg-type]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    assert events[0] == "response.created"
    assert events[-1] == "response.completed"
    assert "response.output_text.delta" in events
    assert "response.function_call_arguments.delta" in events
    assert final.output_text == "Looking it up."
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Rome"}
    assert_upstream_call(fakes)


def test_responses_text_stream(client: openai.OpenAI, fakes: Fakes) -> None:
    text = "Streaming through the responses API, piece by piece."
    fakes.anthropic.reply_text(text)
    events = list(client.responses.create(model="haiku", input="go", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == text
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.model == "haiku"


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "exc", "seen_status"),
    [
        (400, openai.BadRequestError, 400),
        (401, openai.AuthenticationError, 401),
        (403, openai.PermissionDeniedError, 403),
        (404, openai.NotFoundError, 404),
        (429, openai.RateLimitError, 429),
        (500, openai.InternalServerError, 500),
        (529, openai.InternalServerError, 503),  # OpenAI clients have no 529
    ],
)
@pytest.mark.parametrize("route", ["chat", "responses"])
def test_upstream_error_maps_to_openai_exception(
    client: openai.OpenAI, fakes: Fakes, status: int, exc: type[Exception], seen_status: int, route: str
) -> None:
    fakes.anthropic.reply_error(status, f"scripted {status}")
    with pytest.raises(exc) as info:
        if route == "chat":
            client.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
        else:
            client.responses.create(model="sonnet", input="hi")
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == seen_status
    assert f"scripted {status}" in err.message
    assert isinstance(err.body, dict) and "message" in err.body  # the OpenAI envelope's error object


def test_rate_limit_headers_reach_openai_client(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_error(429, headers={"retry-after": "12"})
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "12"


def test_chat_stream_in_band_error(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_stream_error("Overloaded now", text_before="Some words first")
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="sonnet",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
        ):
            seen.append(chunk)
    assert "Overloaded now" in str(info.value)
    assert "".join(c.choices[0].delta.content or "" for c in seen if c.choices) == "Some words first"


def test_responses_stream_in_band_error(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.reply_stream_error("Overloaded now", text_before="Some words first")
    with pytest.raises(openai.APIError) as info:
        list(client.responses.create(model="sonnet", input="hi", stream=True))
    assert "Overloaded now" in str(info.value)


def test_models_list_openai_shape(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "claude-sonnet-4-5-20250929" in ids
    assert all(m.object == "model" for m in models.data)
    assert client.models.retrieve("opus").id == "claude-opus-5-5"  # the newest Opus upstream
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
