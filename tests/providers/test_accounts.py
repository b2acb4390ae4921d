"""Issue 15: several accounts per provider, quota-aware failover and the billing guard, against the fakes.

Two fake Claude and two fake Codex accounts are named logins (``ccproxy auth login --account``'s files);
the fakes answer each access token with its own scripted subscription (``FakeUpstream.set_limits``) and the
real rate-limit headers. Time is simulated: the fake's clock and the registry's clock move together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccproxy import middleware
from ccproxy.accounts import Accounts, account_store
from ccproxy.app import create_app
from ccproxy.auth.credential import Credential
from ccproxy.testing import FakeUpstream, serve_app
from ccproxy.testing.fake_oauth import make_unsigned_jwt

from .conftest import Fakes, Home, OAuthServer, proxy_config
from .test_credentials import fifty_concurrent_messages

USER = [{"role": "user", "content": "hello"}]
FAR = 4102444800.0  # 2100: tokens that never expire during a test


def claude_token(name: str) -> str:
    return f"sk-ant-oat01-account-{name}"


def codex_token(name: str) -> str:
    claims = {
        "exp": int(FAR),
        "email": f"{name}@example.invalid",
        "https://api.openai.com/auth": {"chatgpt_account_id": f"acct-{name}", "chatgpt_plan_type": "pro"},
    }
    return make_unsigned_jwt(claims)


def add_account(
    provider: str, name: str, token: str, *, expires_at: float = FAR, refresh: str = "rt"
) -> None:
    """What ``ccproxy auth login <provider> --account NAME`` leaves behind."""
    account_id = f"acct-{name}" if provider == "codex" else f"uuid-{name}"
    credential = Credential(
        access_token=token, refresh_token=refresh, expires_at=expires_at, account_id=account_id, plan="max"
    )
    account_store(provider, name).save(credential)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Running:
    """A proxy with named accounts, its registries and a shared simulated clock."""

    def __init__(self, url: str, app: Any, clock: Clock) -> None:
        self.url, self.app, self.clock = url, app, clock

    def registry(self, plugin: str) -> Accounts:
        for entry in self.app.plugins.active:
            if entry.name == plugin:
                registry: Accounts = entry.ctx.state["accounts"]
                return registry
        raise LookupError(plugin)

    def accounts(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/accounts").json()
        return data

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds


@pytest.fixture
def run(fakes: Fakes, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    stack = contextlib.ExitStack()

    def start(**cli: Any) -> Running:
        settings = {
            "plugins.claude_api.accounts.jitter_seconds": 0,
            "plugins.codex.accounts.jitter_seconds": 0,
            **cli,
        }
        app = create_app(proxy_config(fakes, tmp_path / "cfg", **settings))
        url = stack.enter_context(serve_app(app))
        clock = Clock()
        running = Running(url, app, clock)
        for plugin in ("claude_api", "codex"):
            running.registry(plugin).clock = clock
        fakes.anthropic.clock = fakes.codex.clock = clock
        return running

    with stack:
        yield start


def who(upstream: FakeUpstream) -> list[str]:
    """The account (its token) of every request the fake received, in order."""
    names = []
    for request in upstream.requests:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        names.append(token.rsplit("-", 1)[-1] if token.startswith("sk-ant") else _codex_name(token))
    return names


def _codex_name(token: str) -> str:
    for name in ("a", "b"):
        if token == codex_token(name):
            return name
    return "?"


def two_accounts() -> None:
    for name in ("a", "b"):
        add_account("claude", name, claude_token(name))
        add_account("codex", name, codex_token(name))


def ask_claude(url: str, session: str | None = None, **kwargs: Any) -> Any:
    client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
    headers = {"x-claude-code-session-id": session} if session else {}
    return client.messages.create(
        model="sonnet",
        max_tokens=10,
        messages=USER,  # type: ignore[arg-type]
        extra_headers=headers,
        **kwargs,
    )


def ask_codex(url: str, session: str | None = None) -> Any:
    client = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
    extra = {"prompt_cache_key": session} if session else {}
    return client.responses.create(model="gpt-5.5", input="hello", extra_body=extra)


ASK = {"claude": ask_claude, "codex": ask_codex}
PLUGIN = {"claude": "claude_api", "codex": "codex"}


def upstream_of(fakes: Fakes, provider: str) -> FakeUpstream:
    return fakes.anthropic if provider == "claude" else fakes.codex


def token_of(provider: str, name: str) -> str:
    return claude_token(name) if provider == "claude" else codex_token(name)


# --------------------------------------------------------------------------------- fill-first, failover


@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_fill_first_fails_over_on_429_and_returns_after_the_reset(
    provider: str, run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run()
    ask, fake = ASK[provider], upstream_of(fakes, provider)
    for _ in range(3):
        ask(proxy.url)
    assert who(fake) == ["a", "a", "a"]  # fill-first sticks to the first

    fake.set_limits(token_of(provider, "a"), limited_until=proxy.clock.now + 3600)
    answer = ask(proxy.url)  # a answers 429; the client never sees it
    assert answer.id
    assert who(fake)[3:] == ["a", "b"]
    ask(proxy.url)
    assert who(fake)[5:] == ["b"]  # a rests until its reset: not even tried

    state = proxy.accounts()["providers"][provider]
    rows = {row["name"]: row for row in state["accounts"]}
    assert state["strategy"] == "fill-first"
    assert set(rows["a"]) == {
        "name", "source", "plan", "priority", "state", "expires_at", "resting_until", "windows", "overage",
        "credits", "last_seen",
    }  # fmt: skip
    assert (
        rows["b"]["source"] == "b"
        and rows["b"]["plan"] in ("max", "pro")
        and rows["b"]["last_seen"].endswith("Z")
    )
    assert {"name", "status", "utilization", "resets_at"} == set(rows["b"]["windows"][0])
    assert rows["a"]["state"] == "limited" and rows["a"]["resting_until"] is not None
    assert rows["b"]["state"] == "ok"
    short = "5h" if provider == "claude" else "primary"
    assert next(w for w in rows["a"]["windows"] if w["name"] == short)["status"] == "rejected"
    if provider == "codex":  # each account carries its own identity
        ids = [r.headers["chatgpt-account-id"] for r in fake.requests]
        assert ids[-3:] == ["acct-a", "acct-b", "acct-b"]

    proxy.advance(3601)  # the fake's window resets at the same moment
    ask(proxy.url)
    assert who(fake)[-1] == "a"


class AccessLog:
    """Stands in for the middleware's logger: the access-log lines, as keyword dicts."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_failover_is_on_the_lifecycle_event_and_in_the_access_log(
    run: Callable[..., Running], fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_accounts()
    proxy = run()
    fakes.anthropic.set_limits(claude_token("a"), limited_until=proxy.clock.now + 60)
    seen: list[Any] = []

    class Listener:
        from ccproxy.plugins import hookimpl

        @hookimpl
        def ccproxy_request_finished(self, event: Any) -> None:
            seen.append((event.account, event.retries, event.retry_reasons))

    proxy.app.plugins.hooks.register(Listener(), "test-listener")
    access_log = AccessLog()
    monkeypatch.setattr(middleware, "log", access_log)
    ask_claude(proxy.url)
    deadline = time.monotonic() + 2  # finished requests reach their observers in a batch, soon after
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [("b", 1, ("429",))]
    lines = [line for line in access_log.lines if line.get("path") == "/api/v1/messages"]
    assert len(lines) == 1 and lines[0]["event"] == "request" and lines[0]["account"] == "b"
    assert claude_token("b") not in str(lines)  # by name, never by token


# ------------------------------------------------------------------------------------ session affinity


@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_session_affinity_over_twenty_requests_and_two_sessions(
    provider: str, run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run(**{f"plugins.{PLUGIN[provider]}.accounts.strategy": "round-robin"})
    ask, fake = ASK[provider], upstream_of(fakes, provider)
    for i in range(20):
        ask(proxy.url, session=f"session-{i % 2}")
    names = who(fake)
    first, second = set(names[0::2]), set(names[1::2])
    assert len(first) == 1 and len(second) == 1  # each session stays on one account
    assert first != second  # round-robin spread the two sessions


# -------------------------------------------------------------------------------- no retry mid-stream


def test_a_429_mid_stream_is_not_retried(run: Callable[..., Running], fakes: Fakes) -> None:
    two_accounts()
    proxy = run()
    fakes.anthropic.reply_stream_error("rate limited", error_type="rate_limit_error", text_before="partial")
    client = anthropic.Anthropic(base_url=proxy.url + "/api", api_key="x", max_retries=0)
    stream = client.messages.stream(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    with pytest.raises(anthropic.APIStatusError), stream as events:
        for _ in events:
            pass
    assert who(fakes.anthropic) == ["a"]


# ----------------------------------------------------------------------------------- all limited


def test_all_accounts_limited_gives_one_429_with_the_earliest_reset(
    run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run()
    now = proxy.clock.now
    fakes.anthropic.set_limits(claude_token("a"), limited_until=now + 100)
    fakes.anthropic.set_limits(claude_token("b"), limited_until=now + 50)
    response = httpx.post(
        proxy.url + "/api/v1/messages",
        json={"model": "sonnet", "max_tokens": 10, "messages": USER},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "50"
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    message = body["error"]["message"]
    assert "a: 5h window" in message and "b: 5h window" in message
    assert who(fakes.anthropic) == ["a", "b"]

    # OpenAI callers get their own envelope, without another upstream call
    chat = openai.OpenAI(base_url=proxy.url + "/api/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "50"
    assert len(fakes.anthropic.requests) == 2


def test_a_single_account_passes_the_upstreams_429_on_unchanged(
    run: Callable[..., Running], fakes: Fakes
) -> None:
    add_account("claude", "only", claude_token("only"))
    proxy = run()
    fakes.anthropic.set_limits(claude_token("only"), limited_until=proxy.clock.now + 30)
    client = anthropic.Anthropic(base_url=proxy.url + "/api", api_key="x", max_retries=0)
    for _ in range(2):  # not parked: each request reaches the upstream, as with one login before
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
        assert info.value.response.headers["retry-after"] == "30"
        assert info.value.body["error"]["message"] == "rate limited"  # type: ignore[index]
    assert len(fakes.anthropic.requests) == 2
    # shown as limited until the reset (GET /accounts, the dashboard, `auth status`), though not parked
    only = proxy.accounts()["providers"]["claude"]["accounts"][0]
    assert only["name"] == "only" and only["state"] == "limited" and only["resting_until"] is None
    proxy.advance(31)
    assert proxy.accounts()["providers"]["claude"]["accounts"][0]["state"] == "ok"


# -------------------------------------------------------------------------------------- billing guard


@pytest.mark.parametrize("allow", [False, True])
def test_overage_parks_the_account_unless_allowed(
    allow: bool, run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run(**{"billing.allow_overage": allow})
    fakes.anthropic.set_limits(claude_token("a"), overage=True)
    for _ in range(3):
        ask_claude(proxy.url)
    rows = {row["name"]: row for row in proxy.accounts()["providers"]["claude"]["accounts"]}
    if allow:
        assert who(fakes.anthropic) == ["a", "a", "a"]
        assert rows["a"]["state"] == "ok"
    else:
        assert who(fakes.anthropic) == ["a", "b", "b"]  # the first overage answer parks it
        assert rows["a"]["state"] == "overage"
    assert rows["a"]["overage"] == {"status": "allowed", "resets_at": None}


def test_a_clients_own_api_key_never_reaches_the_upstream(run: Callable[..., Running], fakes: Fakes) -> None:
    two_accounts()
    proxy = run()
    secret = "sk-ant-api03-the-clients-own-key"
    anthropic.Anthropic(base_url=proxy.url + "/api", api_key=secret, max_retries=0).messages.create(
        model="sonnet",
        max_tokens=10,
        messages=USER,  # type: ignore[arg-type]
    )
    for base in ("/api/v1", "/api/codex/v1"):
        client = openai.OpenAI(base_url=proxy.url + base, api_key=secret, max_retries=0)
        client.chat.completions.create(model="sonnet" if "codex" not in base else "gpt-5.5", messages=USER)  # type: ignore[arg-type]
        client.responses.create(model="sonnet" if "codex" not in base else "gpt-5.5", input="hi")
    httpx.post(
        proxy.url + "/api/v1/messages/count_tokens",
        json={"model": "sonnet", "messages": USER},
        headers={"x-api-key": secret, "authorization": f"Bearer {secret}", "anthropic-version": "2023-06-01"},
    ).raise_for_status()
    requests = fakes.anthropic.requests + fakes.codex.requests
    assert len(requests) == 6
    for request in requests:
        assert secret not in json.dumps(request.headers)
        assert request.headers["authorization"] in {
            f"Bearer {claude_token('a')}",
            f"Bearer {codex_token('a')}",
        }


# ----------------------------------------------------------------------------------- restart, refresh


def test_the_rest_survives_a_restart(run: Callable[..., Running], fakes: Fakes, home: Home) -> None:
    two_accounts()
    proxy = run()
    fakes.anthropic.set_limits(claude_token("a"), limited_until=proxy.clock.now + 3600)
    ask_claude(proxy.url)
    asyncio.run(proxy.registry("claude_api").save())
    saved = json.loads((home.data_dir / "ccproxy" / "accounts-state.json").read_text())
    assert saved["claude"]["a"]["reason"] == "limited"
    assert (home.data_dir / "ccproxy" / "accounts-state.json").stat().st_mode & 0o777 == 0o600
    assert "sk-ant" not in json.dumps(saved)
    fakes.anthropic.reset()
    again = run()
    ask_claude(again.url)
    assert who(fakes.anthropic) == ["b"]  # a still rests: not tried after the restart


async def test_fifty_concurrent_requests_during_expiry_refresh_each_account_once(
    run: Callable[..., Running], fakes: Fakes, oauth: OAuthServer
) -> None:
    issued = {}
    for name in ("a", "b"):
        tokens = oauth.state.claude.issue_tokens(expires_in=30)  # inside the refresh grace
        issued[name] = tokens
        add_account(
            "claude",
            name,
            tokens["access_token"],
            expires_at=time.time() + 30,
            refresh=tokens["refresh_token"],
        )
    oauth.state.claude.refresh_delay = 0.2  # every request arrives while the refreshes are in flight
    proxy = run(
        **{
            "plugins.claude_api.oauth.token_url": oauth.url + "/v1/oauth/token",
            "plugins.claude_api.accounts.strategy": "round-robin",
        }
    )
    results = await fifty_concurrent_messages(proxy.url)
    assert len(results) == 50
    assert oauth.state.claude.refresh_attempts == 2
    assert oauth.state.claude.refresh_count == 2  # one per account
    tokens = {r.headers["authorization"] for r in fakes.anthropic.requests}
    assert len(tokens) == 2
    assert not tokens & {f"Bearer {t['access_token']}" for t in issued.values()}
    for name in ("a", "b"):
        stored = account_store("claude", name).load()
        assert stored is not None and stored.refresh_token != issued[name]["refresh_token"]


def test_an_overloaded_529_moves_the_request_on_without_resting_the_account(
    run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run()
    fakes.anthropic.reply_error(529, "Overloaded", error_type="overloaded_error")
    assert ask_claude(proxy.url).content
    ask_claude(proxy.url)
    assert who(fakes.anthropic) == ["a", "b", "a"]


def test_accounts_endpoint_is_behind_the_auth_token(run: Callable[..., Running]) -> None:
    two_accounts()
    proxy = run(**{"security.auth_token": "s3cret-token"})
    assert httpx.get(proxy.url + "/accounts").status_code == 401
    answer = httpx.get(proxy.url + "/accounts", headers={"authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and set(answer.json()["providers"]) == {"claude", "codex"}
    assert "sk-ant" not in answer.text and codex_token("a") not in answer.text


def test_when_no_account_is_left_a_529_reaches_the_client_as_it_came(
    run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run()
    fakes.anthropic.reply_error(529, "Overloaded", error_type="overloaded_error")
    fakes.anthropic.reply_error(529, "Overloaded", error_type="overloaded_error")
    client = anthropic.Anthropic(base_url=proxy.url + "/api", api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="sonnet", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    assert info.value.status_code == 529 and "Overloaded" in str(info.value)
    assert who(fakes.anthropic) == ["a", "b"]


def test_plan_usage_is_asked_for_the_account_the_session_uses(
    run: Callable[..., Running], fakes: Fakes
) -> None:
    two_accounts()
    proxy = run(**{"plugins.claude_api.accounts.strategy": "round-robin"})
    ask_claude(proxy.url, session="first")
    ask_claude(proxy.url, session="second")
    assert who(fakes.anthropic) == ["a", "b"]
    for session, account in (("second", "b"), ("first", "a"), ("second", "b")):
        usage = httpx.get(proxy.url + "/api/api/oauth/usage", headers={"x-claude-code-session-id": session})
        assert usage.status_code == 200
        assert fakes.anthropic.requests[-1].headers["authorization"] == f"Bearer {claude_token(account)}"
