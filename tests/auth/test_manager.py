"""TokenManager: caching, proactive refresh with rotation, single-flight, shared files, status."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import aiohttp
import pytest

from ccproxy.auth import CredentialError, TokenManager, get_provider
from ccproxy.auth.codex import decode_jwt_claims
from ccproxy.testing.fake_oauth import FakeOAuth, fake_claude_settings, fake_codex_settings

from .helpers import soon, write_claude_file, write_codex_file


def claude_manager(oauth_url: str, session: aiohttp.ClientSession | None, **kw: float) -> TokenManager:
    return TokenManager(get_provider("claude", fake_claude_settings(oauth_url)), session=session, **kw)


def codex_manager(oauth_url: str, session: aiohttp.ClientSession | None, **kw: float) -> TokenManager:
    return TokenManager(get_provider("codex", fake_codex_settings(oauth_url)), session=session, **kw)


def cc_file(home: Path) -> Path:
    return home / ".claude" / ".credentials.json"


async def test_fresh_credential_is_cached_not_reread(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    tokens = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), tokens, expires_at=time.time() + 3600)
    mgr = claude_manager(oauth_url, session)
    cred = await mgr.get()
    assert cred.access_token == tokens["access_token"] and cred.source == "claude-code"
    assert cred.plan == "max" and "user:inference" in cred.scopes
    cc_file(home).write_text("garbage")  # not read again while the cached token is fresh
    for _ in range(10):
        assert (await mgr.get()) is cred
    assert fake.claude.refresh_attempts == 0


async def test_claude_code_file_refresh_keeps_shape_and_other_keys(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    tokens = fake.claude.issue_tokens()
    mcp = {"server": {"accessToken": "mcp-token", "expiresAt": 1}}
    write_claude_file(cc_file(home), tokens, expires_at=soon(), mcpOAuth=mcp, somethingElse=[1, 2])
    mgr = claude_manager(oauth_url, session)
    cred = await mgr.get()
    assert fake.claude.refresh_count == 1
    assert cred.access_token != tokens["access_token"]
    assert cred.refresh_token != tokens["refresh_token"]  # rotated
    data = json.loads(cc_file(home).read_text())
    assert data["mcpOAuth"] == mcp and data["somethingElse"] == [1, 2]
    oauth = data["claudeAiOauth"]
    assert oauth["accessToken"] == cred.access_token and oauth["refreshToken"] == cred.refresh_token
    assert isinstance(oauth["expiresAt"], int) and abs(oauth["expiresAt"] / 1000 - (time.time() + 3600)) < 60
    # Claude Code's own fields are kept as they were.
    assert oauth["subscriptionType"] == "max" and oauth["rateLimitTier"] == "default_claude_max_20x"
    assert oauth["clientId"] == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    assert isinstance(oauth["scopes"], list)
    assert stat.S_IMODE(cc_file(home).stat().st_mode) == 0o600
    leftovers = sorted(p.name for p in cc_file(home).parent.iterdir())
    assert leftovers == [".credentials.json", ".credentials.json.ccproxy.lock"]  # no temp or .bak files
    # The old refresh token is dead now; the manager never uses it again.
    assert (await mgr.get()).access_token == cred.access_token and fake.claude.refresh_count == 1


@pytest.mark.parametrize("lifetime", [None, 86400])
async def test_refresh_token_expiry_follows_the_new_refresh_token(
    lifetime: int | None, home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=soon())
    data = json.loads(cc_file(home).read_text())
    data["claudeAiOauth"]["refreshTokenExpiresAt"] = 1
    cc_file(home).write_text(json.dumps(data))
    fake.claude.refresh_token_expires_in = lifetime
    await claude_manager(oauth_url, session).get()
    oauth = json.loads(cc_file(home).read_text())["claudeAiOauth"]
    if lifetime is None:
        assert "refreshTokenExpiresAt" not in oauth
    else:
        assert abs(oauth["refreshTokenExpiresAt"] / 1000 - time.time() - lifetime) < 60


async def test_refresh_keeps_old_refresh_token_when_answer_has_none(
    home: Path,
    oauth_url: str,
    fake: FakeOAuth,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), tokens, expires_at=soon())
    original = fake.claude.issue_tokens

    def without_refresh(**kw: object) -> dict[str, object]:
        body = original(**kw)  # type: ignore[arg-type]
        body.pop("refresh_token")
        return body

    monkeypatch.setattr(fake.claude, "issue_tokens", without_refresh)
    cred = await claude_manager(oauth_url, session).get()
    assert cred.refresh_token == tokens["refresh_token"]
    assert json.loads(cc_file(home).read_text())["claudeAiOauth"]["refreshToken"] == tokens["refresh_token"]


async def test_fifty_concurrent_gets_cause_exactly_one_refresh(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    fake.claude.refresh_delay = 0.2  # keep the refresh in flight while the others arrive
    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=soon())
    mgr = claude_manager(oauth_url, session)
    creds = await asyncio.gather(*(mgr.get() for _ in range(50)))
    assert fake.claude.refresh_attempts == 1 and fake.claude.refresh_count == 1
    assert len({c.access_token for c in creds}) == 1
    assert fake.claude.access_token_valid(creds[0].access_token)


async def test_two_managers_share_the_file_lock(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    """Two managers (as two processes would) on one file: one refreshes, the other adopts its tokens."""
    fake.claude.refresh_delay = 0.2
    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=soon())
    a, b = claude_manager(oauth_url, session), claude_manager(oauth_url, session)
    results = await asyncio.gather(*(m.get() for m in (a, b) for _ in range(10)))
    assert fake.claude.refresh_attempts == 1  # the loser re-read the file under the lock and skipped
    assert len({c.access_token for c in results}) == 1
    assert a.refresh_count + b.refresh_count == 1


async def test_adopts_tokens_rotated_by_another_process(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    old = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), old, expires_at=time.time() + 3600)
    mgr = claude_manager(oauth_url, session)
    assert (await mgr.get()).access_token == old["access_token"]
    # Claude Code refreshed on its own: the file now has new tokens, our cached refresh token is spent.
    new = fake.claude.issue_tokens()
    fake.claude._spent_refresh.add(old["refresh_token"])
    write_claude_file(cc_file(home), new, expires_at=time.time() + 3600)
    cred = await mgr.refresh_after_unauthorized(old["access_token"])
    assert cred.access_token == new["access_token"] and fake.claude.refresh_attempts == 0


async def test_refresh_after_unauthorized_refreshes_once(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=time.time() + 3600)
    mgr = claude_manager(oauth_url, session)
    stale = (await mgr.get()).access_token
    fake.claude.refresh_delay = 0.1
    # Ten requests all got a 401 for the same token: one refresh, all get the new token.
    creds = await asyncio.gather(*(mgr.refresh_after_unauthorized(stale) for _ in range(10)))
    assert fake.claude.refresh_count == 1 and {c.access_token for c in creds} != {stale}
    assert len({c.access_token for c in creds}) == 1
    # A late 401 for the old token is a no-op.
    assert (await mgr.refresh_after_unauthorized(stale)).access_token == creds[0].access_token
    assert fake.claude.refresh_count == 1


async def test_permanent_refresh_failure_is_reported_and_not_hammered(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    tokens = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), tokens, expires_at=time.time() - 10)
    before = cc_file(home).read_bytes()
    fake.claude.fail_refresh = "invalid_grant"
    mgr = claude_manager(oauth_url, session, reload_interval=0.0)
    for _ in range(5):
        with pytest.raises(CredentialError) as info:
            await mgr.get()
        assert info.value.permanent and "invalid_grant" in str(info.value)
        for secret in tokens.values():
            if isinstance(secret, str) and secret.startswith("sk-"):
                assert secret not in str(info.value)
    assert fake.claude.refresh_attempts == 1  # the dead refresh token is not retried
    assert cc_file(home).read_bytes() == before  # never blank the CLI's file (Claude Code would)
    status = await mgr.status()
    assert (
        status["state"] == "invalid" and status["provider"] == "claude" and "invalid_grant" in status["error"]
    )


async def test_transient_failure_within_grace_keeps_serving_the_current_token(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    tokens = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), tokens, expires_at=soon())
    fake.claude.fail_refresh = "server_error"
    mgr = claude_manager(oauth_url, session)
    assert (await mgr.get()).access_token == tokens["access_token"]
    assert (await mgr.get()).access_token == tokens["access_token"]
    assert fake.claude.refresh_attempts == 1  # backoff: not retried on every request
    fake.claude.fail_refresh = None
    mgr._retry_after = 0.0
    assert (await mgr.get()).access_token != tokens["access_token"]


async def test_expired_token_with_transient_failure_raises(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=time.time() - 1)
    fake.claude.fail_refresh = "server_error"
    with pytest.raises(CredentialError, match="HTTP 500") as info:
        await claude_manager(oauth_url, session).get()
    assert not info.value.permanent


async def test_source_order_and_env_token(
    home: Path,
    oauth_url: str,
    fake: FakeOAuth,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-long-lived-SECRET")
    mgr = claude_manager(oauth_url, session)
    cred = await mgr.get()
    assert cred.source == "env:CLAUDE_CODE_OAUTH_TOKEN" and cred.refresh_token is None
    assert cred.expires_at is None and "SECRET" not in repr(cred)
    status = await mgr.status()
    assert status["state"] == "valid" and status["refreshable"] is False and status["path"] is None
    assert "SECRET" not in json.dumps(status)
    # A 401 for a long-lived token cannot be fixed by refreshing.
    with pytest.raises(CredentialError, match="cannot be refreshed") as info:
        await mgr.refresh_after_unauthorized(cred.access_token)
    assert "SECRET" not in str(info.value)
    # Claude Code's file beats the env var; ccproxy's own store beats both.
    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=time.time() + 3600)
    assert (await claude_manager(oauth_url, session).get()).source == "claude-code"
    own = home / ".local" / "share" / "ccproxy" / "claude_credentials.json"
    write_claude_file(own, fake.claude.issue_tokens(), expires_at=time.time() + 3600)
    assert (await claude_manager(oauth_url, session).get()).source == "ccproxy"


async def test_env_dirs_are_honoured(
    tmp_path: Path,
    oauth_url: str,
    fake: FakeOAuth,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "cx"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    write_claude_file(
        tmp_path / "cc" / ".credentials.json", fake.claude.issue_tokens(), expires_at=time.time() + 99
    )
    write_codex_file(tmp_path / "cx" / "auth.json", fake.codex.issue_tokens())
    assert (await claude_manager(oauth_url, session).status())["path"] == str(
        tmp_path / "cc" / ".credentials.json"
    )
    assert (await codex_manager(oauth_url, session).status())["path"] == str(tmp_path / "cx" / "auth.json")
    write_claude_file(
        tmp_path / "xdg" / "ccproxy" / "claude_credentials.json", fake.claude.issue_tokens(), expires_at=1
    )
    assert (await claude_manager(oauth_url, session).status())["source"] == "ccproxy"


async def test_codex_auth_json_stays_valid_after_refresh(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    fake.codex.expires_in = 60  # inside the grace period: the first get() refreshes
    tokens = fake.codex.issue_tokens()
    path = home / ".codex" / "auth.json"
    write_codex_file(path, tokens, custom_key={"kept": True})
    fake.codex.expires_in = 3600
    mgr = codex_manager(oauth_url, session)
    cred = await mgr.get()
    assert fake.codex.refresh_count == 1 and cred.source == "codex-cli"
    assert cred.account_id == "acct-codex-0001" and cred.plan == "plus" and cred.email == "user@example.com"
    data = json.loads(path.read_text())
    assert (
        data["auth_mode"] == "chatgpt"
        and data["OPENAI_API_KEY"] is None
        and data["custom_key"] == {"kept": True}
    )
    t = data["tokens"]
    assert set(t) == {"id_token", "access_token", "refresh_token", "account_id"}
    assert t["access_token"] == cred.access_token and t["refresh_token"] == cred.refresh_token
    assert t["refresh_token"] != tokens["refresh_token"] and t["account_id"] == "acct-codex-0001"
    assert (
        decode_jwt_claims(t["id_token"])["https://api.openai.com/auth"]["chatgpt_account_id"]
        == "acct-codex-0001"
    )
    assert data["last_refresh"] != "2026-01-01T00:00:00Z" and data["last_refresh"].endswith("Z")
    assert cred.expires_at == decode_jwt_claims(t["access_token"])["exp"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The old refresh token is now refused with refresh_token_reused (what the Codex CLI would see).
    assert fake.codex.last_token_content_type == "application/json"


async def test_codex_reused_refresh_token_is_permanent(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    fake.codex.expires_in = 10
    tokens = fake.codex.issue_tokens()
    write_codex_file(home / ".codex" / "auth.json", tokens)
    fake.codex.revoke_refresh_tokens()  # e.g. the Codex CLI used it already
    with pytest.raises(CredentialError) as info:
        await codex_manager(oauth_url, session).get()
    assert info.value.permanent and info.value.code == "refresh_token_reused"
    assert tokens["refresh_token"] not in str(info.value) and tokens["access_token"] not in str(info.value)


async def test_codex_api_key_mode_falls_through_to_own_store(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    (home / ".codex").mkdir()
    (home / ".codex" / "auth.json").write_text('{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-SECRET"}')
    mgr = codex_manager(oauth_url, session)
    status = await mgr.status()
    assert status["state"] == "missing" and "SECRET" not in json.dumps(status)
    write_codex_file(home / ".local" / "share" / "ccproxy" / "codex_auth.json", fake.codex.issue_tokens())
    mgr.invalidate()
    assert (await mgr.get()).source == "ccproxy"


@pytest.mark.parametrize("provider", ["claude", "codex"])
async def test_corrupted_file_is_invalid_and_untouched(
    provider: str, home: Path, oauth_url: str, session: aiohttp.ClientSession
) -> None:
    path = cc_file(home) if provider == "claude" else home / ".codex" / "auth.json"
    path.parent.mkdir(parents=True)
    content = (
        b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-SECRET", '
        if provider == "claude"
        else b'{"tokens": 5}'
    )
    path.write_bytes(content)
    mgr = claude_manager(oauth_url, session) if provider == "claude" else codex_manager(oauth_url, session)
    with pytest.raises(CredentialError) as info:
        await mgr.get()
    assert str(path) in str(info.value) and "SECRET" not in str(info.value)
    status = await mgr.status()
    assert status["state"] == "invalid" and str(path) in status["error"]
    assert path.read_bytes() == content


async def test_missing_login(oauth_url: str, session: aiohttp.ClientSession) -> None:
    mgr = codex_manager(oauth_url, session)
    with pytest.raises(CredentialError, match="no codex login found") as info:
        await mgr.get()
    assert "ccproxy auth login codex" in str(info.value)
    status = await mgr.status()
    assert status["state"] == "missing" and status["source"] is None


async def test_status_and_repr_never_show_tokens(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    tokens = fake.codex.issue_tokens()
    write_codex_file(home / ".codex" / "auth.json", tokens)
    mgr = codex_manager(oauth_url, session)
    cred = await mgr.get()
    status = await mgr.status()
    json.dumps(status)  # JSON-safe
    assert (
        status["state"] == "valid" and status["account_id"] == "acct-codex-0001" and status["plan"] == "plus"
    )
    assert isinstance(status["expires_at"], int) and status["expires_in"] > 3000
    text = repr(cred) + str(cred) + json.dumps(status) + repr(mgr.provider.settings)
    for secret in (tokens["access_token"], tokens["refresh_token"], tokens["id_token"]):
        assert secret not in text
    assert tokens["access_token"].split(".")[1] not in text


async def test_force_refresh_without_a_shared_session(home: Path, oauth_url: str, fake: FakeOAuth) -> None:
    from ccproxy.auth import refresh

    write_claude_file(cc_file(home), fake.claude.issue_tokens(), expires_at=time.time() + 3600)
    cred = await refresh("claude", fake_claude_settings(oauth_url))
    assert fake.claude.refresh_count == 1 and cred.source == "claude-code"


async def test_every_refresh_reports_its_outcome(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    """``on_refresh`` (the ``ccproxy_credential_refreshed`` hook, counted by the metrics plugin)."""
    outcomes: list[str] = []
    old = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), old, expires_at=time.time() + 3600)
    mgr = TokenManager(
        get_provider("claude", fake_claude_settings(oauth_url)), session=session, on_refresh=outcomes.append
    )
    stale = (await mgr.get()).access_token
    await mgr.refresh_after_unauthorized(stale)  # refreshed
    newer = fake.claude.issue_tokens()
    write_claude_file(cc_file(home), newer, expires_at=time.time() + 3600)  # another process refreshed
    await mgr.refresh_after_unauthorized((await mgr.get()).access_token)
    fake.claude.fail_refresh = "invalid_grant"
    with pytest.raises(CredentialError):
        await mgr.force_refresh()
    assert outcomes == ["ok", "reloaded", "rejected"]
