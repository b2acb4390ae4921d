"""The server core: health, auth token, request ids, error envelopes, plugin runtime, bind safety."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ccproxy.app import FixedPaths, create_app
from ccproxy.config import ConfigError
from ccproxy.plugins import load_plugins
from ccproxy.server import check_bind
from tests.conftest import config_for

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def test_health_reports_plugins_without_secrets(served: Callable[..., str]) -> None:
    url = served(config_for({"plugins.claude_api.access_token": "sk-ant-oat01-secret-value"}))
    resp = httpx.get(url + "/health")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/health+json"
    body = resp.json()
    assert body["status"] == "pass"
    assert body["checks"]["claude_api:credentials"][0]["status"] == "pass"
    assert "codex:credentials" not in body["checks"]  # disabled by default
    assert "secret-value" not in resp.text


def test_health_warns_when_credentials_missing(served: Callable[..., str]) -> None:
    url = served(config_for())
    body = httpx.get(url + "/health").json()
    check = body["checks"]["claude_api:credentials"][0]
    assert body["status"] == "warn" and check["status"] == "warn"
    assert "ccproxy auth login" in check["output"]


@pytest.fixture
def guarded(served: Callable[..., str]) -> str:
    return served(config_for({"security.auth_token": "s3cret-token"}))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"x-api-key": "wrong"}, 401),
        ({"authorization": "Basic s3cret-token"}, 401),
        ({"authorization": "Bearer s3cret-token"}, 200),
        ({"x-api-key": "s3cret-token"}, 200),
        ({"authorization": "bearer s3cret-token"}, 200),
    ],
)
def test_auth_token(guarded: str, headers: dict[str, str], status: int) -> None:
    resp = httpx.get(guarded + "/api/v1/models", headers=headers)
    assert resp.status_code == status


def test_auth_errors_use_the_callers_format(guarded: str) -> None:
    anthropic = httpx.post(guarded + "/api/v1/messages", json=MESSAGES)
    assert anthropic.status_code == 401
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "authentication_error"
    openai = httpx.post(guarded + "/api/v1/chat/completions", json={"model": "x", "messages": []})
    assert openai.status_code == 401
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(guarded + "/health").status_code == 200  # open for monitors


def test_request_id_is_accepted_or_made(served: Callable[..., str]) -> None:
    url = served(config_for())
    given = httpx.get(url + "/health", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.get(url + "/health")
    assert len(made.headers["x-request-id"]) == 32
    hostile = httpx.get(url + "/health", headers={"x-request-id": "a b\tc" + "x" * 300})
    assert hostile.headers["x-request-id"] != "a b\tc" + "x" * 300


def test_error_envelopes_by_route(served: Callable[..., str]) -> None:
    url = served(config_for({"plugins.claude_api.access_token": "t"}))
    bad = httpx.post(
        url + "/api/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.json()["type"] == "error" and bad.json()["error"]["type"] == "invalid_request_error"
    assert bad.json()["request_id"] == bad.headers["x-request-id"]
    json_type = {"content-type": "application/json"}
    bad_chat = httpx.post(url + "/api/v1/chat/completions", content=b"[1, 2]", headers=json_type)
    assert bad_chat.status_code == 400 and "JSON object" in bad_chat.json()["error"]["message"]
    wrong_type = httpx.post(url + "/api/v1/responses", json={"model": 5, "input": "hi"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "model"


def test_missing_credentials_say_how_to_log_in(served: Callable[..., str]) -> None:
    url = served(config_for())
    resp = httpx.post(url + "/api/v1/messages", json=MESSAGES)
    assert resp.status_code == 401
    assert "ccproxy auth login" in resp.json()["error"]["message"]
    chat = httpx.post(
        url + "/api/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 401 and "ccproxy auth login" in chat.json()["error"]["message"]


def test_disabled_codex_routes_say_how_to_enable(served: Callable[..., str]) -> None:
    url = served(config_for())
    resp = httpx.post(url + "/api/codex/v1/responses", json={"model": "gpt-5.5", "input": "hi"})
    assert resp.status_code == 404
    assert "ccproxy config codex --enable" in resp.json()["error"]["message"]
    messages = httpx.post(url + "/api/codex/v1/messages", json=MESSAGES)
    assert messages.json()["type"] == "error"


def test_example_plugin_is_discovered_configured_and_hooked(
    install_plugins: Callable[[dict[str, str]], None], served: Callable[..., str]
) -> None:
    install_plugins({"hello": "ccproxy_hello:plugin"})
    config = config_for(
        {
            "plugins.hello.greeting": "bonjour",
            "plugins.claude_api.access_token": "t",
            "plugins.claude_api.base_url": "http://127.0.0.1:9",
        }
    )
    url = served(config)
    hello = httpx.get(url + "/hello").json()
    # the example plugin is one module-level object: earlier tests in this process may have fed it events
    assert hello["greeting"] == "bonjour"
    before = hello["requests_seen"]
    health = httpx.get(url + "/health").json()
    assert health["checks"]["hello:ready"][0]["status"] == "pass"
    httpx.post(url + "/api/v1/messages", json=MESSAGES)  # upstream unreachable: 502, still an event
    seen = httpx.get(url + "/hello").json()["requests_seen"]
    assert seen == before + 1


def test_broken_plugin_is_skipped_and_server_starts(
    install_plugins: Callable[[dict[str, str]], None],
    served: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    install_plugins({"broken": "ccproxy_does_not_exist:plugin", "notaplugin": "ccproxy_hello:HelloSettings"})
    config = config_for()
    plugins = load_plugins(config)
    broken = plugins.get("broken")
    assert broken is not None and not broken.enabled and "No module named" in broken.why
    notaplugin = plugins.get("notaplugin")
    assert notaplugin is not None and notaplugin.error
    url = served(config, mock=False)
    health = httpx.get(url + "/health").json()
    assert health["checks"]["broken:plugin"][0]["status"] == "fail"
    assert "plugin failed to load" in capsys.readouterr().err


def test_enable_and_disable_flags(install_plugins: Callable[[dict[str, str]], None]) -> None:
    install_plugins({"hello": "ccproxy_hello:plugin"})
    plugins = load_plugins(config_for({"plugins.hello.enabled": False, "plugins.codex.enabled": True}))
    hello, codex = plugins.get("hello"), plugins.get("codex")
    assert hello is not None and not hello.enabled and hello.why == "disabled on the command line"
    assert codex is not None and codex.enabled


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ValueError, match="auth token"):
        check_bind(config_for({"server.host": "0.0.0.0"}))
    check_bind(config_for({"server.host": "0.0.0.0", "security.auth_token": "t"}))
    check_bind(config_for({"server.host": "0.0.0.0", "security.allow_unauthenticated": True}))
    check_bind(config_for({"server.host": "::1"}))


def test_unknown_config_is_refused_before_serving() -> None:
    with pytest.raises(ConfigError):
        config_for({"server.nope": 1})


def _unused(*_: Any) -> None: ...


def test_fixed_path_dispatch_picks_what_the_router_would() -> None:
    from starlette.routing import Match, Route

    app = create_app(config_for({"plugins.codex.enabled": True}))
    fixed = app.app
    assert isinstance(fixed, FixedPaths)
    assert "/api/v1/messages" in fixed.exact and "/api/codex/v1/responses" in fixed.exact
    for path, (methods, target) in fixed.exact.items():
        for method in methods:
            scope = {"type": "http", "path": path, "method": method}
            first = next(r for r in fixed.router.routes if r.matches(scope)[0] is not Match.NONE)
            assert isinstance(first, Route) and first.app is target, path


def test_wrong_method_on_a_fixed_path_still_gets_the_routers_answer(served: Callable[..., str]) -> None:
    url = served(config_for())
    assert httpx.get(url + "/api/v1/messages").status_code == 405
    assert httpx.post(url + "/api/v1/messages/", json=MESSAGES, follow_redirects=False).status_code == 307
