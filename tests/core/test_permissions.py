"""The permission service and its routes without an agent; SDK mode's refusals and its absence."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest

from ccproxy.app import create_app
from ccproxy.config import PermissionsSettings, load_config
from ccproxy.permissions import AnswerError, PermissionService
from ccproxy.providers.claude_sdk import ClaudeSDKSettings, agent_env
from ccproxy.testing import serve_app


def service(**settings: Any) -> PermissionService:
    return PermissionService(PermissionsSettings.model_validate(settings))


async def test_policy_allows_and_denies_without_asking() -> None:
    svc = service(allow=["Read"], deny=["WebFetch"])
    assert (await svc.ask("Read", {}, source="sdk")).allowed
    denied = await svc.ask("WebFetch", {}, source="sdk")
    assert not denied.allowed and denied.by == "policy" and "policy" in denied.message
    assert svc.pending == {}


async def test_answer_timeout_and_cancel() -> None:
    svc = service(timeout_seconds=0.2, recent_size=2)
    async with svc.subscribe() as events:
        task = asyncio.create_task(svc.ask("Bash", {"command": "ls"}, source="sdk", owner="r1"))
        first = await events.get()
        assert first.kind == "pending" and first.request["tool_name"] == "Bash"
        svc.respond(first.request["id"], True, updated_input={"command": "ls -l"})
        decision = await task
        assert decision.allowed and decision.updated_input == {"command": "ls -l"}
        assert (await events.get()).kind == "resolved"
        with pytest.raises(AnswerError) as twice:
            svc.respond(first.request["id"], False)
        assert twice.value.status == 409
        with pytest.raises(AnswerError) as unknown:
            svc.respond("perm_unknown", True)
        assert unknown.value.status == 404

        timed_out = await svc.ask("Bash", {"command": "rm x"}, source="sdk")
        assert not timed_out.allowed and timed_out.by == "timeout" and "nobody answered" in timed_out.message
        kinds = [(await events.get()).kind for _ in range(2)]
        assert kinds == ["pending", "expired"]

        waiting = asyncio.create_task(svc.ask("Write", {}, source="sdk", owner="gone", timeout=30))
        await events.get()
        assert svc.cancel_owner("gone") == 1
        assert not (await waiting).allowed
    assert len(svc.recent) == 2  # bounded


async def test_a_new_listener_first_gets_what_is_pending() -> None:
    svc = service()
    task = asyncio.create_task(svc.ask("Bash", {}, source="mcp"))
    await asyncio.sleep(0)
    async with svc.subscribe() as events:
        replay = events.get_nowait()
        assert replay.kind == "pending" and replay.request["source"] == "mcp"
        svc.respond(replay.request["id"], False)
    assert not (await task).allowed


def test_routes_are_behind_the_auth_token() -> None:
    config = load_config(env={}, cli={"security.auth_token": "tok-123456"})
    with serve_app(create_app(config)) as url:
        for path in ("/permissions", "/permissions/x", "/claude/sessions"):
            assert httpx.get(url + path).status_code == 401, path
        assert httpx.post(url + "/permissions/x/respond", json={"allowed": True}).status_code == 401
        assert httpx.post(url + "/mcp", json={}).status_code == 401
        ok = httpx.get(url + "/permissions", headers={"authorization": "Bearer tok-123456"})
        assert ok.status_code == 200 and ok.json() == {"pending": [], "recent": []}
        missing = httpx.post(
            url + "/permissions/perm_x/respond", json={"allowed": True}, headers={"x-api-key": "tok-123456"}
        )
        assert missing.status_code == 404


def test_sdk_missing_answers_503_and_the_rest_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "claude_agent_sdk", None)  # import fails as if not installed
    config = load_config(env={}, cli={"plugins.claude_api.access_token": "sk-ant-oat01-x"})
    with serve_app(create_app(config)) as url:
        resp = httpx.post(url + "/claude/v1/chat/completions", json={"model": "m", "messages": []})
        assert resp.status_code == 503
        assert "pip install 'ccproxy-api[sdk]'" in resp.json()["error"]["message"]
        assert "error" in resp.json() and resp.json()["error"]["type"]
        assert httpx.get(url + "/api/v1/models").status_code == 200
        assert httpx.get(url + "/permissions").status_code == 200
        health = httpx.get(url + "/health").json()
        assert health["checks"]["claude_sdk:sdk"][0]["status"] == "warn"


def test_agent_environment_blanks_ccproxy_secrets() -> None:
    settings = ClaudeSDKSettings.model_validate({"base_url": "http://127.0.0.1:1", "api_key": "sk-x"})
    environ = {
        "CCPROXY_AUTH_TOKEN": "secret",
        "SECURITY__AUTH_TOKEN": "secret",
        "PLUGINS__CLAUDE_API__ACCESS_TOKEN": "secret",
        "CLAUDE_CODE_OAUTH_TOKEN": "user-secret",
        "PATH": "/bin",
    }
    env = agent_env(settings, None, environ)
    assert env["CCPROXY_AUTH_TOKEN"] == env["SECURITY__AUTH_TOKEN"] == ""
    assert env["PLUGINS__CLAUDE_API__ACCESS_TOKEN"] == ""
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == ""  # the user's login never goes to a configured base_url
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1" and env["ANTHROPIC_API_KEY"] == "sk-x"
    assert "PATH" not in env  # inherited as is
