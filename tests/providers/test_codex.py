"""Issue 6: the openai and anthropic SDKs through ``/api/codex`` (the ChatGPT Codex backend, which only
streams), against the fake backend."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from ccproxy.testing import ToolCall

from .conftest import CODEX_ACCOUNT, CODEX_TOKEN, Fakes

FUNCTION_TOOLS = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Run a shell command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        "strict": False,
    }
]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "exec_command",
            "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        },
    }
]


@pytest.fixture
def client(proxy: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="x", max_retries=0)


def assert_backend_call(fakes: Fakes) -> dict[str, str]:
    seen = fakes.codex.last_request
    assert seen.path == "/backend-api/codex/responses"
    h = seen.headers
    assert h["authorization"] == f"Bearer {CODEX_TOKEN}"
    assert h["chatgpt-account-id"] == CODEX_ACCOUNT
    assert h["session_id"]
    assert h["originator"] == "codex_cli_rs"
    assert h["version"]
    assert h["openai-beta"] == "responses=experimental"
    assert h["user-agent"].startswith("codex_cli_rs/")
    assert "x-api-key" not in h
    body = seen.json
    assert body["stream"] is True
    assert body["store"] is False
    for banned in ("max_output_tokens", "metadata", "temperature", "top_p", "user"):
        assert banned not in body
    assert not any(isinstance(i, dict) and i.get("role") in ("system", "developer") for i in body["input"])
    return h


# ------------------------------------------------------------------------------------------ responses


def test_responses_create_reads_the_stream(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_text("Hello from Codex.")
    response = client.responses.create(
        model="gpt-5.4",
        instructions="Base instructions.",
        input=[
            {"role": "developer", "content": "Developer note."},
            {"role": "system", "content": "System note."},
            {"role": "user", "content": "Say hello."},
        ],
        max_output_tokens=512,
        metadata={"k": "v"},
        temperature=0.2,
    )
    assert response.output_text == "Hello from Codex."
    assert response.status == "completed"
    assert response.usage is not None and response.usage.output_tokens > 0
    assert_backend_call(fakes)
    body = fakes.codex.last_request.json
    assert body["instructions"] == "Base instructions.\n\nDeveloper note.\n\nSystem note."
    assert [i["role"] for i in body["input"]] == ["user"]


def test_responses_stream_text_function_call_reasoning(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_tool_call(
        "exec_command", {"cmd": "ls -la"}, text="I will list files.", thinking="The user wants a listing."
    )
    with client.responses.stream(
        model="gpt-5.4",
        input="List the files.",
        tools=FUNCTION_TOOLS,  # type: ignore[arg-type]
        reasoning={"effort": "low", "summary": "auto"},
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    for kind in (
        "response.created",
        "response.reasoning_summary_text.delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.completed",
    ):
        assert kind in events
    types = [item.type for item in final.output]
    assert types == ["reasoning", "message", "function_call"]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == "The user wants a listing."
    assert reasoning.encrypted_content  # requested from the backend because reasoning is on
    call = final.output[2]
    assert call.type == "function_call"
    assert call.name == "exec_command" and json.loads(call.arguments) == {"cmd": "ls -la"}
    assert final.output_text == "I will list files."
    assert_backend_call(fakes)
    assert "reasoning.encrypted_content" in fakes.codex.last_request.json["include"]


def test_responses_function_call_output_round_trip(client: openai.OpenAI, fakes: Fakes) -> None:
    first = client.responses.create(
        model="gpt-5.4",
        input="RUN: echo hi",
        tools=FUNCTION_TOOLS,  # type: ignore[arg-type]
    )
    call = next(item for item in first.output if item.type == "function_call")
    assert json.loads(call.arguments) == {"cmd": "echo hi"}
    second = client.responses.create(
        model="gpt-5.4",
        input=[
            {"role": "user", "content": "RUN: echo hi"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "hi"},
        ],
        tools=FUNCTION_TOOLS,  # type: ignore[arg-type]
    )
    assert "The tool returned:\nhi" in second.output_text


# ------------------------------------------------------------------------------------ chat completions


def test_chat_create_with_tools(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_tool_call("exec_command", {"cmd": "pwd"})
    completion = client.chat.completions.create(
        model="gpt-5.4",
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "where am I"}],
        tools=CHAT_TOOLS,  # type: ignore[arg-type]
        max_tokens=300,
        temperature=0.5,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    fn = choice.message.tool_calls[0].function  # type: ignore[union-attr]
    assert fn.name == "exec_command" and json.loads(fn.arguments) == {"cmd": "pwd"}
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert_backend_call(fakes)
    body = fakes.codex.last_request.json
    assert "You are terse." in body["instructions"]
    assert body["tools"][0]["name"] == "exec_command"


def test_chat_stream_with_tools_and_usage(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_tool_calls(
        ToolCall("exec_command", {"cmd": "ls"}), ToolCall("exec_command", {"cmd": "pwd"}), text="Two calls."
    )
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.4",
            messages=[{"role": "user", "content": "go"}],
            tools=CHAT_TOOLS,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Two calls."
    args: dict[int, str] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            args[tc.index] = args.get(tc.index, "") + ((tc.function.arguments or "") if tc.function else "")
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"cmd": "ls"}, 1: {"cmd": "pwd"}}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert_backend_call(fakes)


def test_chat_stream_helper(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_text("Plain answer.")
    with client.chat.completions.stream(model="gpt-5.4", messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "Plain answer."
    assert final.choices[0].finish_reason == "stop"


# -------------------------------------------------------------------------------------------- sessions


def test_session_in_path_is_stable(proxy: str, fakes: Fakes) -> None:
    sid = "conv-1234"
    c = openai.OpenAI(base_url=f"{proxy}/api/codex/{sid}", api_key="x", max_retries=0)
    c.responses.create(model="gpt-5.4", input="one")
    c.responses.create(model="gpt-5.4", input="two")
    seen = fakes.codex.requests
    assert [r.headers["session_id"] for r in seen] == [sid, sid]
    assert [r.json["prompt_cache_key"] for r in seen] == [sid, sid]


def test_session_in_path_for_chat(proxy: str, fakes: Fakes) -> None:
    c = openai.OpenAI(base_url=f"{proxy}/api/codex/chat-sess/v1", api_key="x", max_retries=0)
    c.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "hi"}])
    seen = fakes.codex.last_request
    assert seen.headers["session_id"] == "chat-sess"
    assert seen.json["prompt_cache_key"] == "chat-sess"


def test_session_header_is_stable(client: openai.OpenAI, fakes: Fakes) -> None:
    for text in ("one", "two"):
        client.responses.create(model="gpt-5.4", input=text, extra_headers={"session_id": "hdr-sess"})
    seen = fakes.codex.requests
    assert {r.headers["session_id"] for r in seen} == {"hdr-sess"}
    assert {r.json["prompt_cache_key"] for r in seen} == {"hdr-sess"}


def test_no_session_gives_distinct_keys(client: openai.OpenAI, fakes: Fakes) -> None:
    client.responses.create(model="gpt-5.4", input="one")
    client.responses.create(model="gpt-5.4", input="two")
    a, b = fakes.codex.requests
    assert a.json["prompt_cache_key"] != b.json["prompt_cache_key"]
    assert a.headers["session_id"] != b.headers["session_id"]
    assert a.headers["session_id"] == a.json["prompt_cache_key"]


def test_client_prompt_cache_key_is_kept(client: openai.OpenAI, fakes: Fakes) -> None:
    client.responses.create(model="gpt-5.4", input="one", prompt_cache_key="my-key")
    seen = fakes.codex.last_request
    assert seen.json["prompt_cache_key"] == "my-key"
    assert seen.headers["session_id"] == "my-key"


# ---------------------------------------------------------------------------------------------- errors


def test_backend_detail_400_becomes_openai_envelope(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_error(
        400, "The 'gpt-9' model is not supported when using Codex with a ChatGPT account."
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-9", input="hi")
    assert "gpt-9" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "invalid_request_error"


def test_backend_detail_400_raw_body_is_an_envelope(proxy: str, fakes: Fakes) -> None:
    fakes.codex.reply_error(400, "Unsupported parameter: foo")
    resp = httpx.post(
        f"{proxy}/api/codex/v1/chat/completions",
        json={"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["message"] == "Unsupported parameter: foo"
    assert "detail" not in body


@pytest.mark.parametrize(
    ("status", "exc"),
    [(401, openai.AuthenticationError), (429, openai.RateLimitError), (500, openai.InternalServerError)],
)
def test_backend_http_errors(client: openai.OpenAI, fakes: Fakes, status: int, exc: type[Exception]) -> None:
    fakes.codex.reply_error(status)
    with pytest.raises(exc):
        client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "hi"}])


def test_usage_limit_error_maps_to_rate_limit(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_error(429, "You've hit your usage limit.", error_type="usage_limit_reached")
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model="gpt-5.4", input="hi")
    assert "usage limit" in info.value.message


@pytest.mark.parametrize("mode", ["failed", "error", "both"])
def test_response_failed_reaches_non_streaming_client_as_error(
    client: openai.OpenAI, fakes: Fakes, mode: str
) -> None:
    fakes.codex.reply_stream_error("The model crashed.", text_before="partial", codex_mode=mode)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="gpt-5.4", input="hi")
    assert "The model crashed." in info.value.message
    assert info.value.status_code >= 500


def test_response_failed_reaches_non_streaming_chat_client(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_stream_error("The model crashed.", codex_mode="failed")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "hi"}])
    assert "The model crashed." in info.value.message


def test_response_failed_reaches_streaming_client_as_failed_event(
    client: openai.OpenAI, fakes: Fakes
) -> None:
    fakes.codex.reply_stream_error("The model crashed.", text_before="partial words", codex_mode="failed")
    events = list(client.responses.create(model="gpt-5.4", input="hi", stream=True))
    types = [e.type for e in events]
    assert "response.output_text.delta" in types
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.error is not None and last.response.error.message == "The model crashed."


@pytest.mark.parametrize("mode", ["error", "both"])
def test_stream_error_event_raises_in_streaming_client(
    client: openai.OpenAI, fakes: Fakes, mode: str
) -> None:
    fakes.codex.reply_stream_error("The model crashed.", text_before="partial words", codex_mode=mode)  # type: ignore[arg-type]
    events = []
    with pytest.raises(openai.APIError) as info:
        for event in client.responses.create(model="gpt-5.4", input="hi", stream=True):
            events.append(event.type)
    assert "The model crashed." in str(info.value)
    assert "response.output_text.delta" in events


def test_response_failed_reaches_streaming_chat_client(client: openai.OpenAI, fakes: Fakes) -> None:
    fakes.codex.reply_stream_error("The model crashed.", text_before="partial words", codex_mode="failed")
    with pytest.raises(openai.APIError) as info:
        list(
            client.chat.completions.create(
                model="gpt-5.4", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert "The model crashed." in str(info.value)


# ------------------------------------------------------------------------ Anthropic SDK on a ChatGPT plan


BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}


def test_anthropic_sdk_stream_tool_round_trip(proxy: str, fakes: Fakes) -> None:
    claude = anthropic.Anthropic(base_url=proxy + "/api/codex", api_key="x", max_retries=0)
    messages: list[dict[str, object]] = [{"role": "user", "content": "RUN: git status"}]
    with claude.messages.stream(
        model="gpt-5.4",
        max_tokens=1024,
        system="You are a coding agent.",
        messages=messages,  # type: ignore[arg-type]
        tools=[BASH_TOOL],  # type: ignore[list-item]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    tool = next(b for b in first.content if b.type == "tool_use")
    assert tool.name == "Bash"
    assert tool.input == {"command": "git status"}
    backend = fakes.codex.last_request.json
    assert backend["instructions"].startswith("You are a coding agent.")
    assert backend["tools"][0]["name"] == "Bash"
    assert_backend_call(fakes)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "nothing to commit"}],
        },
    ]
    with claude.messages.stream(
        model="gpt-5.4",
        max_tokens=1024,
        system="You are a coding agent.",
        messages=messages,  # type: ignore[arg-type]
        tools=[BASH_TOOL],  # type: ignore[list-item]
    ) as stream:
        text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert text == "The tool returned:\nnothing to commit"
    assert second.stop_reason == "end_turn"
    items = fakes.codex.last_request.json["input"]
    kinds = [i.get("type") for i in items]
    assert "function_call" in kinds and kinds[-1] == "function_call_output"
    call = next(i for i in items if i.get("type") == "function_call")
    assert call["call_id"] == items[-1]["call_id"]


def test_anthropic_sdk_create_on_codex(proxy: str, fakes: Fakes) -> None:
    claude = anthropic.Anthropic(base_url=proxy + "/api/codex", api_key="x", max_retries=0)
    fakes.codex.reply_text("Hi there.", thinking="hmm")
    message = claude.messages.create(
        model="gpt-5.4",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hello"}],
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Hi there."  # type: ignore[union-attr]
    assert message.content[0].signature  # type: ignore[union-attr]
    assert_backend_call(fakes)


def test_anthropic_sdk_codex_error(proxy: str, fakes: Fakes) -> None:
    claude = anthropic.Anthropic(base_url=proxy + "/api/codex", api_key="x", max_retries=0)
    fakes.codex.reply_error(400, "Bad things")
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="gpt-5.4", max_tokens=10, messages=[{"role": "user", "content": "hello"}]
        )
    assert "Bad things" in str(info.value)


def test_codex_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert "gpt-5.4" in ids
