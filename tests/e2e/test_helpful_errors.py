"""The usual first mistakes, made through the official SDKs: every answer says what to do instead.

Issue 11 item 1: an unknown path or a wrong method answers in the format the path suggests with the nearest
route and the ``base_url`` the caller's SDK wants; a missing model is a 400 on every route; an unknown model
lists the names and aliases the provider takes and where to configure more. The SDK's own exception message
must carry the hint, since that is all a user sees.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anthropic
import httpx
import openai
import pytest

from ccproxy.testing import RunningFakes

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]


def host(url: str) -> str:
    return urlsplit(url).netloc


def test_anthropic_sdk_with_the_openai_base_url_is_told_the_right_one(proxy_url: str) -> None:
    client = anthropic.Anthropic(base_url=proxy_url + "/api/v1", api_key="k", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    message = str(caught.value)
    assert f'base_url="http://{host(proxy_url)}/api"' in message, message
    assert "/api/v1/messages" in message and "Anthropic SDK" in message
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"  # the Anthropic envelope
    assert body["error"]["type"] == "not_found_error"


def test_openai_sdk_with_the_anthropic_base_url_is_told_the_right_one(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=proxy_url + "/api", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="sonnet", messages=MESSAGES)  # type: ignore[arg-type]
    message = str(caught.value)
    assert f'base_url="http://{host(proxy_url)}/api/v1"' in message, message
    assert "OpenAI SDK" in message


def test_codex_route_base_url_for_the_responses_api(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=proxy_url + "/codex/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-5.5", input="hi")
    message = str(caught.value)
    assert f'base_url="http://{host(proxy_url)}/api/codex/v1"' in message, message


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ("claude-cli/2.1.331 (external, cli)", "ANTHROPIC_BASE_URL=http://{host}/api"),
        ("codex_exec/0.169.0 (Debian 12; x86_64)", 'base_url = "http://{host}/api/codex'),
        ("curl/8.0", "its base URL to http://{host}/api"),
    ],
)
def test_other_clients_get_their_own_setting(proxy_url: str, agent: str, expected: str) -> None:
    path = "/v1/v1/messages" if "codex" not in agent else "/api/responses"
    resp = httpx.post(proxy_url + path, json={}, headers={"user-agent": agent})
    assert resp.status_code == 404
    message = resp.json()["error"]["message"]
    assert expected.format(host=host(proxy_url)) in message, message


@pytest.mark.parametrize(
    ("path", "anthropic_shape"),
    [("/api/v1/messages", True), ("/api/v1/chat/completions", False), ("/api/codex/v1/responses", False)],
)
def test_wrong_method_is_a_json_405_with_allow(proxy_url: str, path: str, anthropic_shape: bool) -> None:
    resp = httpx.get(proxy_url + path)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert (body.get("type") == "error") is anthropic_shape
    assert "GET is not allowed on " + path in body["error"]["message"]
    assert "use POST" in body["error"]["message"]


def test_anthropic_sdk_sees_the_405_message(proxy_url: str) -> None:
    client = anthropic.Anthropic(base_url=proxy_url + "/api", api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.get("/v1/messages", cast_to=object)
    assert caught.value.status_code == 405 and "use POST" in str(caught.value)


POST_ROUTES = [
    ("/api/v1/messages", {"max_tokens": 5, "messages": MESSAGES}),
    ("/api/v1/messages/count_tokens", {"messages": MESSAGES}),
    ("/api/v1/chat/completions", {"messages": MESSAGES}),
    ("/api/v1/responses", {"input": "hi"}),
    ("/api/codex/v1/responses", {"input": "hi"}),
    ("/api/codex/responses", {"input": "hi"}),
    ("/api/codex/v1/chat/completions", {"messages": MESSAGES}),
    ("/api/codex/v1/messages", {"max_tokens": 5, "messages": MESSAGES}),
    ("/api/codex/some-session/v1/responses", {"input": "hi"}),
]


@pytest.mark.parametrize(("path", "body"), POST_ROUTES, ids=[p for p, _ in POST_ROUTES])
@pytest.mark.parametrize("model", [None, ""], ids=["missing", "empty"])
def test_a_missing_model_is_a_400_on_every_route(
    proxy_url: str, fakes: RunningFakes, path: str, body: dict[str, object], model: str | None
) -> None:
    resp = httpx.post(proxy_url + path, json=body if model is None else {**body, "model": model})
    assert resp.status_code == 400, resp.text
    assert "'model' is required" in resp.json()["error"]["message"]
    assert fakes.anthropic.requests == [] and fakes.codex.requests == []  # never sent upstream


def test_openai_sdk_without_a_model(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=proxy_url + "/api/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="", messages=MESSAGES)  # type: ignore[arg-type]
    assert "'model' is required" in str(caught.value)


def test_codex_websocket_turn_without_a_model_fails_clearly(proxy_url: str, fakes: RunningFakes) -> None:
    from websockets.sync.client import connect

    url = proxy_url.replace("http://", "ws://") + "/api/codex/v1/responses"
    with connect(url) as ws:
        ws.send('{"type": "response.create", "input": [{"role": "user", "content": "hi"}]}')
        event = ws.recv(timeout=10)
    assert "'model' is required" in str(event) and "failed" in str(event)
    assert fakes.codex.requests == []


def test_unknown_model_on_the_claude_route_lists_the_names(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=proxy_url + "/api/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="llama-3", messages=MESSAGES)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "model: llama-3" in message  # the upstream's own words stay
    for hint in (
        "claude-sonnet-4-5",
        "sonnet -> claude-sonnet-4-5",
        "gpt-* -> ",
        "plugins.claude_api.aliases",
    ):
        assert hint in message, message


def test_unknown_model_through_the_anthropic_sdk(proxy_url: str) -> None:
    client = anthropic.Anthropic(base_url=proxy_url + "/api", api_key="k", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="llama-3", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert "plugins.claude_api.aliases" in str(caught.value) and "claude-opus-4-5" in str(caught.value)


def test_unknown_model_on_the_codex_route_lists_the_names(proxy_url: str, fakes: RunningFakes) -> None:
    fakes.codex.reply_error(
        400, "The 'llama-3' model is not supported when using Codex with a ChatGPT account."
    )
    client = openai.OpenAI(base_url=proxy_url + "/api/codex/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="llama-3", input="hi")
    message = str(caught.value)
    assert "not supported" in message and "gpt-5.5" in message and "plugins.codex.aliases" in message, message


def test_other_upstream_errors_pass_through_untouched(proxy_url: str, fakes: RunningFakes) -> None:
    fakes.anthropic.reply_error(400, "messages: roles must alternate")
    resp = httpx.post(
        proxy_url + "/api/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": MESSAGES},
    )
    assert resp.status_code == 400 and resp.json()["error"]["message"] == "messages: roles must alternate"
