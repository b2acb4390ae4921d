"""``security.auth_token``: every route but ``/health`` needs the token; it is never forwarded upstream."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, Fakes, start_proxy

SECRET = "ccproxy-local-secret-0123456789"
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def guarded(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_proxy(
        fakes,
        tmp_path_factory.mktemp("guarded"),
        **{
            "security.auth_token": SECRET,
            "plugins.claude_api.access_token": CLAUDE_TOKEN,
            "plugins.codex.access_token": CODEX_TOKEN,
        },
    ) as url:
        yield url


def test_sdks_with_the_right_key_work_and_the_key_stays_local(guarded: str, fakes: Fakes) -> None:
    # the anthropic SDK sends x-api-key, the openai SDK a Bearer token
    claude = anthropic.Anthropic(base_url=guarded + "/api", api_key=SECRET, max_retries=0)
    assert claude.messages.create(model="sonnet", max_tokens=5, messages=USER).content  # type: ignore[arg-type]
    with claude.messages.stream(model="sonnet", max_tokens=5, messages=USER) as s:  # type: ignore[arg-type]
        assert s.get_final_message().content
    assert claude.messages.count_tokens(model="sonnet", messages=USER).input_tokens > 0  # type: ignore[arg-type]
    assert claude.models.list().data

    chat = openai.OpenAI(base_url=guarded + "/api/v1", api_key=SECRET, max_retries=0)
    assert chat.chat.completions.create(model="sonnet", messages=USER).choices  # type: ignore[arg-type]
    assert chat.responses.create(model="sonnet", input="hi").output_text
    codex = openai.OpenAI(base_url=guarded + "/api/codex/v1", api_key=SECRET, max_retries=0)
    assert codex.responses.create(model="gpt-5.4", input="hi").output_text
    # Claude Code on a ChatGPT plan: x-api-key on the Codex provider's messages route
    on_codex = anthropic.Anthropic(base_url=guarded + "/api/codex", api_key=SECRET, max_retries=0)
    assert on_codex.messages.create(model="gpt-5.4", max_tokens=5, messages=USER).content  # type: ignore[arg-type]

    seen = [*fakes.anthropic.requests, *fakes.codex.requests]
    assert len(seen) >= 6
    for request in seen:
        assert SECRET not in str(request.headers)
        assert SECRET.encode() not in request.body
        assert "x-api-key" not in request.headers
    for request in fakes.anthropic.requests:
        assert request.headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
    for request in fakes.codex.requests:
        assert request.headers["authorization"] == f"Bearer {CODEX_TOKEN}"


@pytest.mark.parametrize("key", [None, "wrong-key", SECRET + "x"], ids=["missing", "wrong", "longer"])
def test_wrong_or_missing_key_anthropic(guarded: str, fakes: Fakes, key: str | None) -> None:
    headers = {"anthropic-version": "2023-06-01"}
    if key is not None:
        headers["x-api-key"] = key
    resp = httpx.post(
        guarded + "/api/v1/messages",
        json={"model": "sonnet", "max_tokens": 5, "messages": USER},
        headers=headers,
    )
    assert resp.status_code == 401
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert resp.headers["www-authenticate"] == "Bearer"
    assert fakes.anthropic.requests == []


def test_wrong_key_sdk_exceptions(guarded: str, fakes: Fakes) -> None:
    claude = anthropic.Anthropic(base_url=guarded + "/api", api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError):
        claude.models.list()
    chat = openai.OpenAI(base_url=guarded + "/api/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
    assert "auth token" in info.value.message
    with pytest.raises(openai.AuthenticationError):
        chat.responses.create(model="sonnet", input="hi")
    codex = openai.OpenAI(base_url=guarded + "/api/codex/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        list(codex.responses.create(model="gpt-5.4", input="hi", stream=True))
    assert fakes.anthropic.requests == [] and fakes.codex.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/chat/completions",
        "/api/v1/responses",
        "/api/codex/v1/responses",
        "/api/codex/sess/responses",
        "/api/codex/v1/chat/completions",
    ],
)
def test_missing_key_openai_envelope(guarded: str, path: str) -> None:
    resp = httpx.post(guarded + path, json={"model": "m", "messages": USER, "input": "x"})
    assert resp.status_code == 401
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["message"]


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_either_header_works_on_any_route(guarded: str, header: str) -> None:
    value = f"Bearer {SECRET}" if header == "authorization" else SECRET
    for path in ("/api/v1/models", "/api/codex/v1/models"):
        assert httpx.get(guarded + path, headers={header: value}).status_code == 200
        assert httpx.get(guarded + path).status_code == 401


def test_health_is_open(guarded: str) -> None:
    resp = httpx.get(guarded + "/health")
    assert resp.status_code == 200
    assert resp.json()["status"] in ("pass", "warn")


def test_unknown_route_is_guarded_too(guarded: str) -> None:
    assert httpx.get(guarded + "/nope").status_code == 401
    assert httpx.get(guarded + "/nope", headers={"x-api-key": SECRET}).status_code == 404


def test_without_auth_token_the_client_key_is_still_not_forwarded(proxy: str, fakes: Fakes) -> None:
    claude = anthropic.Anthropic(base_url=proxy + "/api", api_key="sk-ant-api03-user-own-key", max_retries=0)
    claude.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    chat = openai.OpenAI(base_url=proxy + "/api/v1", api_key="sk-user-own-openai-key", max_retries=0)
    chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
    codex = openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="sk-user-own-openai-key", max_retries=0)
    codex.responses.create(model="gpt-5.4", input="hi")
    for request in [*fakes.anthropic.requests, *fakes.codex.requests]:
        assert "user-own" not in str(request.headers)
