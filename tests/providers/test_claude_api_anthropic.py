"""Issue 4: the anthropic SDK through ``/api`` (the Claude API provider, passthrough), against the fake."""

from __future__ import annotations

import anthropic
import pytest

from ccproxy.testing import ToolCall

from .conftest import CLAUDE_TOKEN, Fakes

IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
REQUIRED_BETAS = {"oauth-2025-04-20", "claude-code-20250219"}
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def client(proxy: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy + "/api", api_key="x", max_retries=0)


def betas_of(fakes: Fakes) -> set[str]:
    header = fakes.anthropic.last_request.headers.get("anthropic-beta", "")
    return {t.strip() for t in header.split(",") if t.strip()}


def assert_oauth_call(fakes: Fakes) -> None:
    seen = fakes.anthropic.last_request
    assert seen.headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
    assert "x-api-key" not in seen.headers
    system = seen.json["system"]
    assert system[0] == {"type": "text", "text": IDENTITY}


# ---------------------------------------------------------------------------------------- messages


def test_create_text_resolves_alias_and_restores_name(client: anthropic.Anthropic, fakes: Fakes) -> None:
    fakes.anthropic.reply_text("Hi from the fake.")
    message = client.messages.create(model="sonnet", max_tokens=64, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hi from the fake."
    assert message.model == "sonnet"  # the client's own name comes back
    assert message.stop_reason == "end_turn"
    seen = fakes.anthropic.last_request
    assert seen.path == "/v1/messages"
    assert (
        seen.json["model"] == "claude-sonnet-4-5-20250929"
    )  # the alias: the newest Sonnet in the upstream's list
    assert_oauth_call(fakes)
    assert betas_of(fakes) == REQUIRED_BETAS


def test_client_system_string_follows_identity(client: anthropic.Anthropic, fakes: Fakes) -> None:
    client.messages.create(model="claude-sonnet-4-5", max_tokens=64, system="Be terse.", messages=USER)
    system = fakes.anthropic.last_request.json["system"]
    assert system == [{"type": "text", "text": IDENTITY}, {"type": "text", "text": "Be terse."}]


def test_stream_text(client: anthropic.Anthropic, fakes: Fakes) -> None:
    text = "The quick brown fox jumps over the lazy dog, several times over."
    fakes.anthropic.reply_text(text)
    with client.messages.stream(model="haiku", max_tokens=64, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == text
    assert len(pieces) > 1
    assert final.model == "haiku"
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 1
    assert fakes.anthropic.last_request.json["model"] == "claude-haiku-4-5-20251001"
    assert fakes.anthropic.last_request.json["stream"] is True
    assert_oauth_call(fakes)


def test_stream_tool_use_input_json(client: anthropic.Anthropic, fakes: Fakes) -> None:
    args = {"city": "Paris", "units": "celsius", "days": [1, 2, 3]}
    fakes.anthropic.reply_tool_call("get_weather", args, text="Let me check.")
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=USER, tools=tools) as s:
        json_deltas = [e for e in s if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        final = s.get_final_message()
    assert len(json_deltas) > 1  # the arguments arrived in fragments
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert tool.name == "get_weather"
    assert tool.input == args


def test_stream_thinking_with_signature(client: anthropic.Anthropic, fakes: Fakes) -> None:
    fakes.anthropic.reply_text("Answer: 4.", thinking="Two plus two is four, obviously enough.")
    with client.messages.stream(
        model="claude-opus-4-5",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "2+2?"}],
    ) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "Two plus two is four, obviously enough."
    assert thinking.signature  # the signature_delta was kept
    assert text.type == "text" and text.text == "Answer: 4."
    # The signed block goes back upstream unchanged on the next turn.
    follow = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {"role": "user", "content": "and 3+3?"},
    ]
    client.messages.create(
        model="claude-opus-4-5",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=follow,  # type: ignore[arg-type]
    )
    sent = fakes.anthropic.last_request.json["messages"][1]["content"][0]
    assert sent["type"] == "thinking"
    assert sent["signature"] == thinking.signature


def test_create_tool_calls_json(client: anthropic.Anthropic, fakes: Fakes) -> None:
    fakes.anthropic.reply_tool_calls(ToolCall("a", {"x": 1}), ToolCall("b", {"y": "z"}))
    message = client.messages.create(model="sonnet", max_tokens=64, messages=USER)
    assert [(b.name, b.input) for b in message.content if b.type == "tool_use"] == [
        ("a", {"x": 1}),
        ("b", {"y": "z"}),
    ]


# ---------------------------------------------------------------------------------- OAuth request rules


def test_betas_merged_and_beta_query_kept(client: anthropic.Anthropic, fakes: Fakes) -> None:
    client.beta.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=USER,
        betas=["interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
        extra_query={"beta": "true"},  # what Claude Code sends (this SDK keeps it as a qualifier only)
    )
    seen = fakes.anthropic.last_request
    assert seen.query == {"beta": "true"}
    assert betas_of(fakes) == REQUIRED_BETAS | {
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
    }
    header = seen.headers["anthropic-beta"]
    assert len(header.split(",")) == len(set(header.split(",")))  # no duplicates
    assert_oauth_call(fakes)


def test_required_beta_sent_by_client_is_not_duplicated(client: anthropic.Anthropic, fakes: Fakes) -> None:
    client.beta.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER, betas=["oauth-2025-04-20"]
    )
    header = fakes.anthropic.last_request.headers["anthropic-beta"]
    assert sorted(header.split(",")) == sorted(REQUIRED_BETAS)


def test_no_beta_query_when_client_sends_none(client: anthropic.Anthropic, fakes: Fakes) -> None:
    client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    assert fakes.anthropic.last_request.query == {}


def test_at_most_four_cache_control_marks(client: anthropic.Anthropic, fakes: Fakes) -> None:
    eph = {"type": "ephemeral"}
    system = [{"type": "text", "text": f"system part {i} " * (i + 1), "cache_control": eph} for i in range(3)]
    content = [{"type": "text", "text": f"user part {i} " * (10 - i), "cache_control": eph} for i in range(4)]
    client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": content}],  # type: ignore[typeddict-item]
    )
    body = fakes.anthropic.last_request.json
    blocks = [*body["system"], *body["messages"][0]["content"]]
    assert sum("cache_control" in b for b in blocks) == 4
    assert body["system"][0] == {"type": "text", "text": IDENTITY}
    # the text itself is untouched
    assert [b["text"] for b in body["messages"][0]["content"]] == [c["text"] for c in content]


def test_client_key_and_stainless_headers(client: anthropic.Anthropic, fakes: Fakes) -> None:
    client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    headers = fakes.anthropic.last_request.headers
    assert "x-api-key" not in headers
    assert headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
    assert headers["anthropic-version"]  # the SDK's own version is forwarded


# ------------------------------------------------------------------------------- count_tokens, models


def test_count_tokens(client: anthropic.Anthropic, fakes: Fakes) -> None:
    counted = client.messages.count_tokens(model="sonnet", messages=USER)
    assert counted.input_tokens > 0
    seen = fakes.anthropic.last_request
    assert seen.path == "/v1/messages/count_tokens"
    assert seen.json["model"] == "claude-sonnet-4-5-20250929"
    assert seen.headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
    # the same number the messages call reports for the same (rewritten) body
    message = client.messages.create(model="sonnet", max_tokens=64, messages=USER)
    assert message.usage.input_tokens == counted.input_tokens


def test_models_list_and_retrieve(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "claude-sonnet-4-5-20250929" in ids and "claude-opus-5-5" in ids  # the upstream's own list
    assert all(m.type == "model" and m.display_name for m in page.data)
    model = client.models.retrieve("claude-haiku-4-5-20251001")
    assert model.id == "claude-haiku-4-5-20251001"
    alias = client.models.retrieve("sonnet")
    assert alias.id == "claude-sonnet-4-5-20250929"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_error_maps_to_sdk_exception(
    client: anthropic.Anthropic, fakes: Fakes, status: int, exc: type[Exception], stream: bool
) -> None:
    fakes.anthropic.reply_error(status, f"scripted {status}")
    with pytest.raises(exc) as info:
        if stream:
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=USER) as s:
                s.get_final_message()
        else:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    err = info.value
    assert isinstance(err, anthropic.APIStatusError)
    assert err.status_code == status
    assert f"scripted {status}" in str(err)
    assert err.response.headers.get("request-id", "").startswith("req_fake")  # upstream id passed through


def test_rate_limit_retry_after_passed_through(client: anthropic.Anthropic, fakes: Fakes) -> None:
    fakes.anthropic.reply_error(
        429, headers={"retry-after": "17", "anthropic-ratelimit-unified-status": "rejected"}
    )
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    headers = info.value.response.headers
    assert headers["retry-after"] == "17"
    assert headers["x-should-retry"] == "true"
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert len(fakes.anthropic.requests) == 1  # no retry by default


def test_in_band_stream_error(client: anthropic.Anthropic, fakes: Fakes) -> None:
    fakes.anthropic.reply_stream_error("Overloaded right now", text_before="Partial answer here")
    seen_text = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=USER) as stream,
    ):
        seen_text.extend(stream.text_stream)
    assert "Overloaded right now" in str(info.value)
    assert "".join(seen_text) == "Partial answer here"


def test_upstream_404_for_unknown_model(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=64, messages=USER)
    assert "no-such-model" in str(info.value)


def test_openai_model_names_default_to_sonnet(client: anthropic.Anthropic, fakes: Fakes) -> None:
    message = client.messages.create(model="gpt-4o", max_tokens=64, messages=USER)
    assert message.model == "gpt-4o"  # the client's name comes back
    assert fakes.anthropic.last_request.json["model"] == "claude-sonnet-4-5-20250929"
