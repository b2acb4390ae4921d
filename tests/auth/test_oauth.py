"""PKCE values, authorize URLs, and the token endpoint client against the fake (errors, no leaks)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from ccproxy.auth.credential import CredentialError
from ccproxy.auth.oauth import (
    build_authorize_url,
    claude_oauth_settings,
    codex_oauth_settings,
    exchange_code,
    refresh_access_token,
)
from ccproxy.auth.pkce import generate_pkce, generate_state
from ccproxy.testing.fake_oauth import FakeOAuth, fake_claude_settings, fake_codex_settings


def test_pkce_and_state_shapes() -> None:
    pkce = generate_pkce()
    assert len(pkce.verifier) == 43 and "=" not in pkce.verifier
    digest = hashlib.sha256(pkce.verifier.encode()).digest()
    assert pkce.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pkce.method == "S256"
    assert pkce.verifier not in repr(pkce)
    state = generate_state()
    assert len(state) == 43 and "=" not in state
    assert generate_state() != state and generate_pkce().verifier != pkce.verifier


def test_default_constants() -> None:
    claude = claude_oauth_settings()
    assert claude.client_id == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    assert claude.authorize_url == "https://claude.com/cai/oauth/authorize"
    assert claude.token_url == "https://platform.claude.com/v1/oauth/token"
    assert claude.redirect_uri == "http://localhost:54545/callback"
    assert claude.token_encoding == "json" and claude.send_state_in_exchange
    assert "user:inference" in claude.scopes
    codex = codex_oauth_settings()
    assert codex.client_id == "app_EMoamEEZ73f0CkXaXp7hrann"
    assert codex.authorize_url == "https://auth.openai.com/oauth/authorize"
    assert codex.token_url == "https://auth.openai.com/oauth/token"
    assert codex.redirect_uri == "http://localhost:1455/auth/callback"
    assert codex.token_encoding == "form" and codex.refresh_encoding == "json"
    assert codex.scope == "openid profile email offline_access api.connectors.read api.connectors.invoke"


def test_authorize_urls() -> None:
    pkce = generate_pkce()
    claude = dict(parse_qsl(urlsplit(build_authorize_url(claude_oauth_settings(), pkce, "st")).query))
    assert next(iter(claude)) == "code" and claude["code"] == "true"
    assert claude["response_type"] == "code" and claude["code_challenge_method"] == "S256"
    assert claude["code_challenge"] == pkce.challenge and claude["state"] == "st"
    assert claude["redirect_uri"] == "http://localhost:54545/callback"
    codex = dict(parse_qsl(urlsplit(build_authorize_url(codex_oauth_settings(), pkce, "st")).query))
    assert codex["id_token_add_organizations"] == "true"
    assert codex["codex_cli_simplified_flow"] == "true"
    assert codex["originator"] == "codex_cli_rs"
    assert codex["scope"].startswith("openid profile email offline_access")
    assert pkce.verifier not in build_authorize_url(codex_oauth_settings(), pkce, "st")


async def _authorize(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with session.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        q = dict(parse_qsl(urlsplit(resp.headers["Location"]).query))
    return q["code"], q["state"]


@pytest.mark.parametrize("provider", ["claude", "codex"])
async def test_exchange_and_refresh_rotation(
    provider: str, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    make = fake_claude_settings if provider == "claude" else fake_codex_settings
    settings = make(oauth_url, "http://127.0.0.1:9/callback")
    pkce, state = generate_pkce(), generate_state()
    code, got_state = await _authorize(session, build_authorize_url(settings, pkce, state))
    assert got_state == state
    tokens = await exchange_code(session, settings, code=code, verifier=pkce.verifier, state=state)
    assert tokens.refresh_token and tokens.expires_in == 3600
    assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)
    fp = fake.provider(provider)
    assert fp.last_token_content_type == (
        "application/json" if provider == "claude" else "application/x-www-form-urlencoded"
    )
    if provider == "claude":
        assert fp.last_token_request["state"] == state
    else:
        assert tokens.id_token

    new = await refresh_access_token(session, settings, tokens.refresh_token)
    assert new.refresh_token != tokens.refresh_token and fp.refresh_count == 1
    assert fp.last_token_content_type == "application/json"  # both refresh in JSON
    # The spent refresh token is refused, permanently, and the message does not echo it.
    with pytest.raises(CredentialError) as info:
        await refresh_access_token(session, settings, tokens.refresh_token)
    err = info.value
    assert err.permanent
    assert err.code == ("invalid_grant" if provider == "claude" else "refresh_token_reused")
    assert tokens.refresh_token not in str(err) and "log in again" in str(err)


async def test_exchange_checks_verifier_redirect_and_state(
    oauth_url: str, session: aiohttp.ClientSession
) -> None:
    settings = fake_claude_settings(oauth_url, "http://127.0.0.1:9/callback")
    pkce, state = generate_pkce(), generate_state()
    code, _ = await _authorize(session, build_authorize_url(settings, pkce, state))
    with pytest.raises(CredentialError, match="code_verifier") as info:
        await exchange_code(session, settings, code=code, verifier=generate_pkce().verifier, state=state)
    assert code not in str(info.value)
    code, _ = await _authorize(session, build_authorize_url(settings, pkce, state))
    with pytest.raises(CredentialError, match="redirect_uri"):
        await exchange_code(
            session, settings, code=code, verifier=pkce.verifier, state=state, redirect_uri="http://x/cb"
        )
    code, _ = await _authorize(session, build_authorize_url(settings, pkce, state))
    with pytest.raises(CredentialError, match="state"):
        await exchange_code(session, settings, code=code, verifier=pkce.verifier, state="other")


@pytest.mark.parametrize(
    ("mode", "permanent", "text"),
    [
        ("server_error", False, "HTTP 500"),
        ("cloudflare", False, "Cloudflare"),
        ("invalid_grant", True, "invalid_grant"),
    ],
)
async def test_refresh_error_modes(
    mode: str, permanent: bool, text: str, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    settings = fake_claude_settings(oauth_url)
    tokens = fake.claude.issue_tokens()
    fake.claude.fail_refresh_once = mode
    with pytest.raises(CredentialError) as info:
        await refresh_access_token(session, settings, tokens["refresh_token"])
    assert info.value.permanent is permanent and text in str(info.value)
    assert tokens["refresh_token"] not in str(info.value)


async def test_unreachable_token_endpoint(session: aiohttp.ClientSession, free_port: int) -> None:
    settings = fake_claude_settings(f"http://127.0.0.1:{free_port}", timeout_seconds=2)
    with pytest.raises(CredentialError, match="cannot reach") as info:
        await refresh_access_token(session, settings, "sk-ant-ort01-SECRET")
    assert not info.value.permanent and "SECRET" not in str(info.value)


async def test_server_message_echoing_the_token_is_scrubbed(session: aiohttp.ClientSession) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {"error": "invalid_grant", "error_description": f"token {body['refresh_token']} is dead"},
            status=400,
        )

    app = web.Application()
    app.router.add_post("/token", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = fake_claude_settings(
            f"http://127.0.0.1:{port}", token_url=f"http://127.0.0.1:{port}/token"
        )
        with pytest.raises(CredentialError) as info:
            await refresh_access_token(session, settings, "sk-ant-ort01-SECRET")
        assert "SECRET" not in str(info.value) and "[redacted]" in str(info.value)
    finally:
        await runner.cleanup()


async def test_malformed_success_answer(session: aiohttp.ClientSession) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"token_type": "Bearer", "expires_in": "soon"})

    app = web.Application()
    app.router.add_post("/token", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = fake_codex_settings("http://x", token_url=f"http://127.0.0.1:{port}/token")
        with pytest.raises(CredentialError, match="no access_token"):
            await refresh_access_token(session, settings, "rt")
    finally:
        await runner.cleanup()
