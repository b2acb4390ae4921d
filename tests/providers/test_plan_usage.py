"""Issue 15 item 4: the CLIs' plan-usage endpoints, answered by the upstream for the account in use, with
that account's credential (never the caller's), errors in the caller's format, bounded size and time, and
the same guard as every route."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from ccproxy.providers import plan_usage

from .conftest import CLAUDE_TOKEN, CODEX_ACCOUNT, CODEX_TOKEN, Fakes, MakeProxy

CLIENT_KEY = "sk-client-own-key-never-forwarded"
CODEX_USAGE_PATHS = ["/backend-api/wham/usage", "/wham/usage", "/api/codex/usage"]
CODEX_CHECK_PATHS = ["/backend-api/wham/accounts/check", "/wham/accounts/check"]


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers={"authorization": f"Bearer {CLIENT_KEY}", **headers}, timeout=10)


def test_claude_usage_is_the_accounts(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.plan_usage.primary_percent = 37.0
    fakes.anthropic.plan_usage.secondary_percent = 81.5
    resp = get(
        proxy + "/api/api/oauth/usage?skip_spend=1", **{"user-agent": "claude-cli/2.1.331 (external, cli)"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["five_hour"]["utilization"] == 37.0 and body["seven_day"]["utilization"] == 81.5
    assert body["five_hour"]["resets_at"].endswith("+00:00")
    assert {"seven_day_opus", "seven_day_sonnet", "extra_usage"} <= body.keys()

    seen = fakes.anthropic.last_request
    assert (seen.method, seen.path, seen.query) == ("GET", "/api/oauth/usage", {"skip_spend": "1"})
    assert seen.headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
    assert "oauth-2025-04-20" in seen.headers["anthropic-beta"]
    assert seen.headers["user-agent"] == "claude-cli/2.1.331 (external, cli)"
    assert all(CLIENT_KEY not in value for value in seen.headers.values())


@pytest.mark.parametrize("path", CODEX_USAGE_PATHS)
def test_codex_usage_is_the_accounts(proxy: str, fakes: Fakes, path: str) -> None:
    fakes.codex.plan_usage.primary_percent = 12
    fakes.codex.plan_usage.secondary_percent = 64
    fakes.codex.plan_usage.plan_type = "plus"
    resp = get(proxy + "/api/codex" + path)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["plan_type"] == "plus"
    limits = body["rate_limit"]
    assert limits["primary_window"]["used_percent"] == 12
    assert limits["secondary_window"]["used_percent"] == 64
    assert limits["primary_window"]["limit_window_seconds"] == 18000

    seen = fakes.codex.last_request
    assert (seen.method, seen.path) == ("GET", "/backend-api/wham/usage")
    assert seen.headers["authorization"] == f"Bearer {CODEX_TOKEN}"
    assert seen.headers["chatgpt-account-id"] == CODEX_ACCOUNT
    assert seen.headers["originator"] == "codex_cli_rs"
    assert all(CLIENT_KEY not in value for value in seen.headers.values())


@pytest.mark.parametrize("path", CODEX_CHECK_PATHS)
def test_codex_accounts_check_is_the_accounts_workspace(proxy: str, fakes: Fakes, path: str) -> None:
    resp = get(proxy + "/api/codex" + path)
    assert resp.status_code == 200, resp.text
    assert resp.json()["default_account_id"] == CODEX_ACCOUNT
    assert fakes.codex.last_request.path == "/backend-api/wham/accounts/check"
    assert fakes.codex.last_request.headers["authorization"] == f"Bearer {CODEX_TOKEN}"


def test_upstream_errors_arrive_in_the_callers_format(make_proxy: MakeProxy, fakes: Fakes) -> None:
    fakes.anthropic.plan_usage.status = 503
    fakes.codex.plan_usage.status = 403
    tokens = {"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN}
    with make_proxy(**tokens) as proxy:  # a fresh proxy: no rate-limit headers seen to answer from
        claude = get(proxy + "/api/api/oauth/usage")
        codex = get(proxy + "/api/codex/backend-api/wham/usage")
    assert claude.status_code == 503
    error = claude.json()
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert "plan-usage endpoint answered 503" in error["error"]["message"]
    assert codex.status_code == 403
    assert "answered 403" in codex.json()["error"]["message"]


def test_no_credential_is_a_clear_401(make_proxy: MakeProxy) -> None:
    with make_proxy() as url:  # no access token, no stored login
        claude = get(url + "/api/api/oauth/usage")
        codex = get(url + "/api/codex/wham/usage")
    assert claude.status_code == 401
    assert claude.json()["error"]["type"] == "authentication_error"
    assert "ccproxy auth login" in claude.json()["error"]["message"]
    assert codex.status_code == 401 and "ccproxy auth login codex" in codex.json()["error"]["message"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("port_fixture", "status", "message"),
    [("closed_port", 502, "could not be reached"), ("silent_port", 504, "did not answer within 0.3 s")],
)
def test_an_unreachable_or_silent_upstream_is_a_clear_error(
    make_proxy: MakeProxy,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    port_fixture: str,
    status: int,
    message: str,
) -> None:
    monkeypatch.setattr(plan_usage, "TIMEOUT_SECONDS", 0.3)
    port: int = request.getfixturevalue(port_fixture)
    upstream = {
        "plugins.claude_api.access_token": CLAUDE_TOKEN,
        "plugins.claude_api.base_url": f"http://127.0.0.1:{port}",
    }
    with make_proxy(**upstream) as url:
        resp = get(url + "/api/api/oauth/usage")
    assert resp.status_code == status
    assert resp.json()["type"] == "error" and message in resp.json()["error"]["message"]


def test_an_oversized_answer_is_refused(make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_usage, "MAX_BYTES", 64)  # the fake's answer is ~300 bytes
    with make_proxy(**{"plugins.codex.access_token": CODEX_TOKEN}) as proxy:  # nothing seen to fall back on
        resp = get(proxy + "/api/codex/wham/usage")
        assert resp.status_code == 502
        assert "answered more than" in resp.json()["error"]["message"]
        monkeypatch.undo()
        assert get(proxy + "/api/codex/wham/usage").status_code == 200  # the connection pool is still sound


def test_the_routes_are_guarded(make_proxy: MakeProxy, fakes: Fakes) -> None:
    secret = "s3cret-proxy-token"
    with make_proxy(
        **{
            "security.auth_token": secret,
            "plugins.claude_api.access_token": CLAUDE_TOKEN,
            "plugins.codex.access_token": CODEX_TOKEN,
        }
    ) as url:
        for path in ["/api/api/oauth/usage", "/api/codex/wham/usage", "/api/codex/wham/accounts/check"]:
            assert get(url + path).status_code == 401, path
            fakes.reset()
            ok = httpx.get(url + path, headers={"authorization": f"Bearer {secret}"})
            assert ok.status_code == 200, path
            assert all(
                secret not in value
                for value in fakes.anthropic.requests[-1:] + fakes.codex.requests[-1:]
                for value in value.headers.values()
            )
        evil = httpx.get(
            url + "/api/api/oauth/usage",
            headers={"authorization": f"Bearer {secret}", "origin": "https://evil.example"},
        )
        assert evil.status_code == 403


def test_a_failing_usage_endpoint_is_answered_from_the_last_seen_headers(
    make_proxy: MakeProxy, fakes: Fakes
) -> None:
    """Issue 15 item 4's fallback: the endpoint answers 404 or 500 (or is missing), and the caller still gets
    the windows in the endpoint's own shape, from the rate-limit headers of the account's last answer."""
    fakes.anthropic.set_limits(CLAUDE_TOKEN, used=0.42, weekly=0.7)
    fakes.codex.set_limits(CODEX_TOKEN, used=0.3, weekly=0.55)
    fakes.anthropic.plan_usage.status = 404
    fakes.codex.plan_usage.status = 500
    tokens = {"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN}
    with make_proxy(**tokens) as proxy:
        _answers_from_the_last_seen_headers(proxy, fakes)


def _answers_from_the_last_seen_headers(proxy: str, fakes: Fakes) -> None:
    # nothing seen yet for the account: the upstream's error, saying so
    early = get(proxy + "/api/api/oauth/usage")
    assert early.status_code == 404 and "no rate-limit headers seen" in early.json()["error"]["message"]

    ask = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(proxy + "/api/v1/messages", json=ask, timeout=10).status_code == 200
    codex_ask = {"model": "gpt-5.1-codex", "input": "hi"}
    assert httpx.post(proxy + "/api/codex/v1/responses", json=codex_ask, timeout=10).status_code == 200

    claude = get(proxy + "/api/api/oauth/usage")
    assert claude.status_code == 200, claude.text
    assert claude.headers["x-ccproxy-plan-usage"] == "last-seen"
    assert claude.headers["x-ccproxy-last-seen"].endswith("Z")
    body = claude.json()
    assert body["five_hour"]["utilization"] == 42.0 and body["seven_day"]["utilization"] == 70.0
    assert body["five_hour"]["resets_at"].endswith("+00:00")
    assert {"seven_day_opus", "seven_day_sonnet", "extra_usage"} <= body.keys()

    codex = get(proxy + "/api/codex/wham/usage")
    assert codex.status_code == 200, codex.text
    assert codex.headers["x-ccproxy-plan-usage"] == "last-seen"
    limits = codex.json()["rate_limit"]
    assert limits["primary_window"]["used_percent"] == 30 and limits["secondary_window"]["used_percent"] == 55
    assert limits["primary_window"]["limit_window_seconds"] == 18000 and limits["allowed"] is True

    # a refused credential is not papered over; the endpoint's own answer wins again once it is back
    fakes.codex.plan_usage.status = 403
    assert get(proxy + "/api/codex/wham/usage").status_code == 403
    fakes.anthropic.plan_usage.status = 200
    fresh = get(proxy + "/api/api/oauth/usage")
    assert fresh.status_code == 200 and "x-ccproxy-plan-usage" not in fresh.headers
