"""Issue 12 item 2: stateful Responses over HTTP on both providers (``previous_response_id``, ``store``,
``GET`` / ``DELETE /v1/responses/{id}``, persistence across a restart), through the openai SDK."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ccproxy.testing import FakeUpstream

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, Fakes, MakeProxy

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": False,
    }
]
PROVIDERS = {"claude": ("/api/v1", "claude-sonnet-4-5"), "codex": ("/api/codex/v1", "gpt-5.5")}


def _client(url: str, provider: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + PROVIDERS[provider][0], api_key="x", max_retries=0)


def _fake(fakes: Fakes, provider: str) -> FakeUpstream:
    return fakes.anthropic if provider == "claude" else fakes.codex


def _upstream_body(fake: FakeUpstream) -> dict[str, Any]:
    body = dict(fake.last_request.json)
    body.pop("prompt_cache_key", None)  # per-conversation key (a fresh one per unrelated call)
    return body


def _create(client: openai.OpenAI, stream: bool = False, **kwargs: Any) -> dict[str, Any]:
    """One Responses call; the response as JSON (streams: the terminal event's response)."""
    if stream:
        with client.responses.stream(**kwargs) as events:
            return events.get_final_response().model_dump(mode="json", exclude_none=True)
    raw = client.responses.with_raw_response.create(**kwargs)
    data: dict[str, Any] = raw.http_response.json()
    return data


def _three_turns(
    client: openai.OpenAI, fake: FakeUpstream, model: str, restart: Callable[[], openai.OpenAI] | None = None
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Turn 1 → a tool call; turn 2 the tool's output (streamed) → text; turn 3 a new question.

    Returns what the upstream received on each turn and the full history a stateless client would send.
    """
    fake.reply_tool_call("get_weather", {"city": "Paris"}, call_id="call_weather_1")
    user1 = {"role": "user", "content": "Weather in Paris?"}
    first = _create(client, model=model, input=[user1], tools=TOOLS)
    call = next(i for i in first["output"] if i["type"] == "function_call")
    received = [_upstream_body(fake)]
    if restart is not None:
        client = restart()
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"}
    second = _create(
        client, stream=True, model=model, previous_response_id=first["id"], input=[output], tools=TOOLS
    )
    assert "sunny" in "".join(
        p.get("text", "") for i in second["output"] if i["type"] == "message" for p in i["content"]
    )
    received.append(_upstream_body(fake))
    user3 = {"role": "user", "content": "And tomorrow?"}
    third = _create(client, model=model, previous_response_id=second["id"], input=[user3], tools=TOOLS)
    assert third["status"] == "completed"
    received.append(_upstream_body(fake))
    history = [user1, *first["output"], output, *second["output"], user3]
    return received, history


@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_three_turn_chain_equals_the_full_history(provider: str, proxy: str, fakes: Fakes) -> None:
    model = PROVIDERS[provider][1]
    client, fake = _client(proxy, provider), _fake(fakes, provider)
    received, history = _three_turns(client, fake, model)
    # Turn 2 reached the upstream with the call before its output (not the output alone).
    assert len(received[1]["messages" if provider == "claude" else "input"]) >= 3
    fake.reset()
    client.responses.create(model=model, input=history, tools=TOOLS)
    assert received[2] == _upstream_body(fake)


@pytest.mark.parametrize("where", ["responses.database", "ledger.url"])
@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_chain_survives_a_restart_with_persistence(
    provider: str, where: str, make_proxy: MakeProxy, fakes: Fakes, tmp_path: Path
) -> None:
    plugin = "claude_api" if provider == "claude" else "codex"
    settings = {
        "plugins.claude_api.access_token": CLAUDE_TOKEN,
        "plugins.codex.access_token": CODEX_TOKEN,
        # its own database, or (by default) the usage ledger's SQLite file
        **(
            {f"plugins.{plugin}.responses.database": str(tmp_path / "state.db")}
            if where == "responses.database"
            else {"ledger.url": f"sqlite:///{tmp_path / 'usage.sqlite3'}"}
        ),
    }
    model = PROVIDERS[provider][1]
    fake = _fake(fakes, provider)
    stack: list[Any] = []

    def restart() -> openai.OpenAI:
        stack.pop().__exit__(None, None, None)  # the first proxy is gone, memory and all
        return start()

    def start() -> openai.OpenAI:
        cm = make_proxy(**settings)
        stack.append(cm)
        return _client(cm.__enter__(), provider)

    try:
        received, history = _three_turns(start(), fake, model, restart=restart)
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)
    fake.reset()
    with make_proxy(**settings) as url:
        _client(url, provider).responses.create(model=model, input=history, tools=TOOLS)
    assert received[2] == _upstream_body(fake)


@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_unknown_previous_response_is_openais_400(provider: str, proxy: str, fakes: Fakes) -> None:
    client = _client(proxy, provider)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=PROVIDERS[provider][1], previous_response_id="resp_nope", input="hi")
    assert err.value.status_code == 400
    assert err.value.body == {
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    assert not _fake(fakes, provider).requests  # nothing reached the upstream


@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_get_delete_and_store_false(provider: str, make_proxy: MakeProxy) -> None:
    # A proxy of its own: the fakes' deterministic ids repeat across tests, the shared proxy's store would
    # already know them.
    tokens = {"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN}
    with make_proxy(**tokens) as url:
        _get_delete_and_store_false(_client(url, provider), PROVIDERS[provider][1])


def _get_delete_and_store_false(client: openai.OpenAI, model: str) -> None:
    kept = client.responses.create(model=model, input="remember me")
    fetched = client.responses.retrieve(kept.id)
    assert fetched.id == kept.id and fetched.output_text == kept.output_text
    chained = client.responses.create(model=model, input="again", previous_response_id=kept.id)
    assert chained.status == "completed"
    client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(kept.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, input="x", previous_response_id=kept.id)
    unkept = client.responses.create(model=model, input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    streamed_unkept = _create(client, stream=True, model=model, input="forget me too", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(streamed_unkept["id"])


def test_response_routes_sit_behind_the_auth_token(make_proxy: MakeProxy) -> None:
    with make_proxy(
        **{"security.auth_token": "s3cret", "plugins.claude_api.access_token": CLAUDE_TOKEN}
    ) as url:
        assert httpx.get(url + "/api/v1/responses/resp_x").status_code == 401
        assert httpx.delete(url + "/api/codex/v1/responses/resp_x").status_code == 401
        authed = httpx.get(url + "/api/v1/responses/resp_x", headers={"authorization": "Bearer s3cret"})
        assert authed.status_code == 404


def test_codex_chain_leaves_out_reasoning_it_cannot_resolve(proxy: str, fakes: Fakes) -> None:
    """A kept answer's reasoning item without encrypted content cannot be replayed with store:false."""
    client = _client(proxy, "codex")
    fakes.codex.reply_text("first answer", thinking="pondering")
    first = client.responses.create(model="gpt-5.5", input="think", reasoning={"effort": "low"})
    assert [i.type for i in first.output] == ["reasoning", "message"]
    assert first.output[0].encrypted_content  # asked for (reasoning is on): replayed
    client.responses.create(model="gpt-5.5", input="again", previous_response_id=first.id)
    assert [i.get("type") for i in fakes.codex.last_request.json["input"]][:2] == ["message", "reasoning"]
    fakes.codex.reply_text("second answer", thinking="pondering")
    bare = client.responses.create(
        model="gpt-5.5",
        input=[{"role": "user", "content": "x"}, {"type": "reasoning", "id": "rs_1", "summary": []}],
    )
    assert bare.status == "completed"
    assert all(i.get("type") != "reasoning" for i in fakes.codex.last_request.json["input"])
