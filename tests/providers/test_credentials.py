"""Issues 4 and 6: stored credentials through the proxy (Claude Code's ``.credentials.json``, Codex's
``auth.json``), refreshed against the fake OAuth server, in temp dirs only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccproxy.testing import ErrorReply, RecordedRequest

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, Fakes, Home, MakeProxy, OAuthServer

USER = [{"role": "user", "content": "hello"}]


def write_claude_credentials(path: Path, tokens: dict[str, Any], *, expires_in: float) -> dict[str, Any]:
    """Claude Code's file shape, with keys of its own that a refresh must keep."""
    data = {
        "claudeAiOauth": {
            "accessToken": tokens["access_token"],
            "refreshToken": tokens["refresh_token"],
            "expiresAt": int((time.time() + expires_in) * 1000),
            "scopes": ["user:inference", "user:profile"],
            "subscriptionType": "max",
            "rateLimitTier": "default_claude_max_20x",
        },
        "mcpOAuth": {"some-server": {"accessToken": "mcp-token", "expiresAt": 1}},
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return data


def write_codex_auth(path: Path, tokens: dict[str, Any]) -> None:
    data = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": tokens["id_token"],
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "account_id": "acct-codex-0001",
        },
        "last_refresh": "2026-01-01T00:00:00Z",
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def claude_oauth_settings(oauth: OAuthServer) -> dict[str, Any]:
    return {
        "plugins.claude_api.oauth.token_url": oauth.url + "/v1/oauth/token",
        "plugins.codex.access_token": CODEX_TOKEN,
    }


def codex_oauth_settings(oauth: OAuthServer) -> dict[str, Any]:
    return {
        "plugins.codex.oauth.token_url": oauth.url + "/codex/oauth/token",
        "plugins.claude_api.access_token": CLAUDE_TOKEN,
    }


# --------------------------------------------------------------------------------------- no login


def test_no_credentials_anthropic_envelope(make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer) -> None:
    with make_proxy(**{"plugins.claude_api.oauth.token_url": oauth.url + "/v1/oauth/token"}) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
        body = info.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
        assert "ccproxy auth login" in body["error"]["message"]

        raw = httpx.post(url + "/api/v1/chat/completions", json={"model": "sonnet", "messages": USER})
        assert raw.status_code == 401
        assert set(raw.json()) == {"error"}
        assert "ccproxy auth login" in raw.json()["error"]["message"]
        chat = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as oinfo:
            chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
        assert "ccproxy auth login" in oinfo.value.message
    assert fakes.anthropic.requests == []


def test_no_codex_credentials(make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer) -> None:
    with make_proxy(**codex_oauth_settings(oauth)) as url:
        client = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            client.responses.create(model="gpt-5.4", input="hi")
        assert "ccproxy auth login codex" in info.value.message
    assert fakes.codex.requests == []


# ------------------------------------------------------------------------------------- Claude refresh


def test_expired_claude_credential_is_refreshed_with_rotation(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=30)  # inside the 120 s grace: refresh first
    before = write_claude_credentials(home.claude_credentials, old, expires_in=30)
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        message = client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
        assert message.content
        client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    assert oauth.state.claude.refresh_count == 1
    assert oauth.state.claude.last_token_request["refresh_token"] == old["refresh_token"]
    tokens = {r.headers["authorization"] for r in fakes.anthropic.requests}
    assert len(tokens) == 1
    new_token = tokens.pop().removeprefix("Bearer ")
    assert new_token != old["access_token"]
    assert oauth.state.claude.access_token_valid(new_token)

    after = json.loads(home.claude_credentials.read_text())
    assert set(after) == set(before)  # shape kept, other keys untouched
    assert after["mcpOAuth"] == before["mcpOAuth"]
    cred = after["claudeAiOauth"]
    assert set(cred) >= set(before["claudeAiOauth"])
    assert cred["accessToken"] == new_token
    assert cred["refreshToken"] != old["refresh_token"]  # rotated
    assert isinstance(cred["expiresAt"], int) and cred["expiresAt"] > time.time() * 1000 + 3000 * 1000
    assert cred["rateLimitTier"] == "default_claude_max_20x"
    assert cred["subscriptionType"] == "max"
    assert home.claude_credentials.stat().st_mode & 0o777 == 0o600


async def fifty_concurrent_messages(url: str) -> list[Any]:
    """50 Messages requests at once through the proxy at ``url``."""
    async with anthropic.AsyncAnthropic(base_url=url + "/api", api_key="x", max_retries=0) as client:
        return await asyncio.gather(
            *(
                client.messages.create(
                    model="sonnet", max_tokens=10, messages=[{"role": "user", "content": f"request {i}"}]
                )
                for i in range(50)
            )
        )


async def test_fifty_concurrent_requests_during_expiry_refresh_once(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=30)
    write_claude_credentials(home.claude_credentials, old, expires_in=30)
    oauth.state.claude.refresh_delay = 0.2  # every request arrives while the refresh is in flight
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        results = await fifty_concurrent_messages(url)
    assert len(results) == 50
    assert oauth.state.claude.refresh_attempts == 1
    assert oauth.state.claude.refresh_count == 1
    seen = fakes.anthropic.requests
    assert len(seen) == 50
    assert len({r.headers["authorization"] for r in seen}) == 1
    assert seen[0].headers["authorization"] != f"Bearer {old['access_token']}"


def test_upstream_401_for_valid_token_refreshes_once_and_retries(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=3600)  # still valid
    write_claude_credentials(home.claude_credentials, old, expires_in=3600)
    fakes.anthropic.reply_error(401, "OAuth token has been revoked")
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        fakes.anthropic.reply_text("after the retry")
        message = client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    assert message.content[0].text == "after the retry"  # type: ignore[union-attr]
    assert oauth.state.claude.refresh_count == 1
    first, second = fakes.anthropic.requests
    assert first.headers["authorization"] == f"Bearer {old['access_token']}"
    assert second.headers["authorization"] != first.headers["authorization"]
    assert first.body == second.body  # the same request, retried
    stored = json.loads(home.claude_credentials.read_text())["claudeAiOauth"]
    assert second.headers["authorization"] == f"Bearer {stored['accessToken']}"


def test_upstream_401_twice_reaches_the_client(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=3600)
    write_claude_credentials(home.claude_credentials, old, expires_in=3600)
    fakes.anthropic.reply_error(401, "revoked").reply_error(401, "still revoked")
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    assert "still revoked" in str(info.value)
    assert oauth.state.claude.refresh_count == 1  # one refresh, one retry, no loop
    assert len(fakes.anthropic.requests) == 2


@pytest.mark.parametrize("content", [b'{"claudeAiOauth": {"accessToken": ', b"[1, 2]", b"\x00\xff garbage"])
def test_corrupted_credentials_file(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home, content: bytes
) -> None:
    home.claude_credentials.write_bytes(content)
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
        raw = httpx.post(url + "/api/v1/chat/completions", json={"model": "sonnet", "messages": USER})
    assert str(home.claude_credentials) in str(info.value)
    assert raw.status_code == 401 and str(home.claude_credentials) in raw.json()["error"]["message"]
    assert home.claude_credentials.read_bytes() == content  # never rewritten
    assert fakes.anthropic.requests == []
    assert oauth.state.claude.refresh_attempts == 0


# -------------------------------------------------------------------------------------- Codex refresh


def test_expired_codex_credential_is_refreshed(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.codex.issue_tokens(expires_in=30)
    write_codex_auth(home.codex_auth, old)
    with make_proxy(**codex_oauth_settings(oauth)) as url:
        client = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
        assert client.responses.create(model="gpt-5.4", input="hi").output_text
        assert client.chat.completions.create(model="gpt-5.4", messages=USER).choices  # type: ignore[arg-type]
    assert oauth.state.codex.refresh_count == 1
    after = json.loads(home.codex_auth.read_text())
    assert after["auth_mode"] == "chatgpt" and "OPENAI_API_KEY" in after
    assert after["last_refresh"] != "2026-01-01T00:00:00Z"
    assert after["tokens"]["refresh_token"] != old["refresh_token"]
    assert after["tokens"]["account_id"] == "acct-codex-0001"
    for seen in fakes.codex.requests:
        assert seen.headers["authorization"] == f"Bearer {after['tokens']['access_token']}"
        assert seen.headers["chatgpt-account-id"] == "acct-codex-0001"


async def test_codex_concurrent_requests_refresh_once(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.codex.issue_tokens(expires_in=30)
    write_codex_auth(home.codex_auth, old)
    oauth.state.codex.refresh_delay = 0.2
    with make_proxy(**codex_oauth_settings(oauth)) as url:
        async with openai.AsyncOpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0) as client:
            await asyncio.gather(
                *(client.responses.create(model="gpt-5.4", input=f"r{i}") for i in range(20))
            )
    assert oauth.state.codex.refresh_attempts == 1
    assert len({r.headers["authorization"] for r in fakes.codex.requests}) == 1


def test_codex_upstream_401_refreshes_and_retries(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.codex.issue_tokens(expires_in=3600)
    write_codex_auth(home.codex_auth, old)
    fakes.codex.reply_error(401, "token expired")
    with make_proxy(**codex_oauth_settings(oauth)) as url:
        client = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
        assert client.responses.create(model="gpt-5.4", input="hi").output_text
    assert oauth.state.codex.refresh_count == 1
    first, second = fakes.codex.requests
    assert first.headers["authorization"] == f"Bearer {old['access_token']}"
    assert second.headers["authorization"] != first.headers["authorization"]


def test_corrupted_codex_auth_file(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    home.codex_auth.write_bytes(b'{"tokens": 42}')
    with make_proxy(**codex_oauth_settings(oauth)) as url:
        client = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            client.responses.create(model="gpt-5.4", input="hi")
    assert str(home.codex_auth) in info.value.message
    assert home.codex_auth.read_bytes() == b'{"tokens": 42}'
    assert fakes.codex.requests == []


# ------------------------------------------------------------------------------- refresh edge cases


def test_refused_refresh_is_401_with_login_hint(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=-10)  # already expired
    before = write_claude_credentials(home.claude_credentials, old, expires_in=-10)
    oauth.state.claude.fail_refresh = "invalid_grant"
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        for _ in range(3):
            with pytest.raises(anthropic.AuthenticationError) as info:
                client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
            assert "login" in str(info.value)
    assert oauth.state.claude.refresh_attempts == 1  # a refused refresh token is not hammered
    assert fakes.anthropic.requests == []
    assert json.loads(home.claude_credentials.read_text()) == before


def test_transient_refresh_failure_keeps_serving_the_valid_token(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=60)  # inside the grace period, still valid
    write_claude_credentials(home.claude_credentials, old, expires_in=60)
    oauth.state.claude.fail_refresh_once = "server_error"
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        assert client.messages.create(model="sonnet", max_tokens=10, messages=USER).content  # type: ignore[arg-type]
    assert fakes.anthropic.last_request.headers["authorization"] == f"Bearer {old['access_token']}"
    assert oauth.state.claude.refresh_count == 0


async def test_revoked_token_under_concurrency_refreshes_once(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home
) -> None:
    """The upstream starts rejecting a token that is not expired: every request in flight sees a 401."""
    provider = oauth.state.claude
    old = provider.issue_tokens(expires_in=3600)
    write_claude_credentials(home.claude_credentials, old, expires_in=3600)

    def check_token(request: RecordedRequest, _: object) -> ErrorReply | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return None if provider.access_token_valid(token) else ErrorReply(status=401, message="revoked")

    fakes.anthropic.add_rule(check_token)
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        async with anthropic.AsyncAnthropic(base_url=url + "/api", api_key="x", max_retries=0) as client:
            await client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
            provider.expire_access_tokens()
            provider.refresh_delay = 0.1
            results = await asyncio.gather(
                *(
                    client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
                    for _ in range(20)
                )
            )
    assert len(results) == 20
    assert provider.refresh_count == 1
    fresh = json.loads(home.claude_credentials.read_text())["claudeAiOauth"]["accessToken"]
    assert provider.access_token_valid(fresh)
    retried = [r for r in fakes.anthropic.requests if r.headers["authorization"] == f"Bearer {fresh}"]
    assert len(retried) == 20


@pytest.mark.parametrize("route", ["messages-stream", "chat-stream"])
def test_upstream_401_retry_on_streams(
    make_proxy: MakeProxy, fakes: Fakes, oauth: OAuthServer, home: Home, route: str
) -> None:
    old = oauth.state.claude.issue_tokens(expires_in=3600)
    write_claude_credentials(home.claude_credentials, old, expires_in=3600)
    fakes.anthropic.reply_error(401, "revoked").reply_text("streamed after the retry")
    with make_proxy(**claude_oauth_settings(oauth)) as url:
        if route == "messages-stream":
            client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
            with client.messages.stream(model="sonnet", max_tokens=10, messages=USER) as s:  # type: ignore[arg-type]
                text = "".join(s.text_stream)
        else:
            chat = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
            chunks = chat.chat.completions.create(model="sonnet", messages=USER, stream=True)  # type: ignore[arg-type]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed after the retry"
    assert oauth.state.claude.refresh_count == 1
    first, second = fakes.anthropic.requests
    assert first.body == second.body
    assert second.json["model"] == "claude-sonnet-4-5-20250929"
