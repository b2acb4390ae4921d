"""The dashboard's access rules over HTTP: loopback-only without a token; with one, a login that makes a
server-side session cookie (never the token), CSRF-protected state changes, and the live stream."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from ccproxy.app import create_app
from ccproxy.dashboard import DashboardPlugin, Viewer, live_row
from ccproxy.plugins import RequestEvent, Usage
from ccproxy.testing import RunningFakes, serve_app
from tests.conftest import config_for
from tests.observe.conftest import observe_config

TOKEN = "dash-token-0123456789"


def _dashboard(app: Any) -> DashboardPlugin:
    entry = app.plugins.get("dashboard")
    assert entry is not None and isinstance(entry.plugin, DashboardPlugin)
    return entry.plugin


def test_without_a_token_only_loopback_clients_get_the_dashboard() -> None:
    app = create_app(config_for(), mock=True)

    async def get(client: tuple[str, int]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            return await c.get("/dashboard/api/usage")

    remote = asyncio.run(get(("192.0.2.7", 5555)))
    assert remote.status_code == 403 and "loopback" in remote.json()["error"]["message"]
    page = asyncio.run(get(("127.0.0.1", 5555)))
    assert page.status_code != 403


def test_page_is_served_with_a_strict_csp_and_no_inline_script(served: Any) -> None:
    url = served(config_for(), mock=True)
    page = httpx.get(f"{url}/dashboard")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and " style=" not in page.text
    for name in ("app.js", "app.css"):
        assert httpx.get(f"{url}/dashboard/static/{name}").status_code == 200
    assert httpx.get(f"{url}/dashboard/static/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{url}/dashboard/api/v1/messages").status_code == 404  # only the page's own endpoints


def test_with_a_token_a_login_makes_a_session_cookie_and_csrf_guards_changes(served: Any) -> None:
    url = served(config_for({"security.auth_token": TOKEN}), mock=True)
    assert httpx.get(f"{url}/dashboard").status_code == 200  # the shell (login form) holds no data
    assert httpx.get(f"{url}/dashboard/api/usage").status_code == 401
    assert httpx.get(f"{url}/dashboard/info").status_code == 401
    assert httpx.post(f"{url}/dashboard/login", json={"token": "wrong"}).status_code == 401
    login = httpx.post(f"{url}/dashboard/login", json={"token": TOKEN})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert TOKEN not in cookie and TOKEN[:8] not in cookie
    csrf = login.json()["csrf"]
    sid = login.cookies["ccproxy_dashboard"]
    with httpx.Client(base_url=url, cookies={"ccproxy_dashboard": sid}) as browser:
        assert browser.get("/dashboard/api/usage").status_code == 200
        assert browser.get("/dashboard/info").json()["csrf"] == csrf
        # /health's detail is for a loopback caller with the token: a session counts as the token
        checks = browser.get("/dashboard/api/health").json()["checks"]
        assert any("output" in item for items in checks.values() for item in items)
        assert not any("output" in i for v in httpx.get(url + "/health").json()["checks"].values() for i in v)
        # the cookie is accepted for the dashboard only, never for the API itself
        assert browser.get("/usage").status_code == 401
        origin = {"origin": url}
        body = {"allowed": True}
        forged = browser.post("/dashboard/api/permissions/x/respond", json=body, headers=origin)
        assert forged.status_code == 403 and "CSRF" in forged.json()["error"]["message"]
        cross = browser.post(
            "/dashboard/api/permissions/x/respond",
            json=body,
            headers={"origin": "https://evil.example", "x-csrf-token": csrf},
        )
        assert cross.status_code == 403
        no_origin = browser.post(
            "/dashboard/api/permissions/x/respond", json=body, headers={"x-csrf-token": csrf}
        )
        assert no_origin.status_code == 403
        genuine = browser.post(
            "/dashboard/api/permissions/x/respond", json=body, headers={**origin, "x-csrf-token": csrf}
        )
        assert genuine.status_code == 404  # admitted: the service says there is no such request
        assert browser.post("/dashboard/logout", json={}, headers={**origin, "x-csrf-token": csrf}).is_success
        assert browser.get("/dashboard/api/usage").status_code == 401


def test_sessions_expire() -> None:
    from ccproxy.dashboard.access import DashboardGate

    now = [0.0]
    gate = DashboardGate(TOKEN, 60, clock=lambda: now[0])
    made = gate.login(TOKEN)
    assert made is not None
    raw = {b"cookie": f"other=1; ccproxy_dashboard={made[0]}".encode()}
    assert gate.session(raw) is made[1]
    now[0] = 61
    assert gate.session(raw) is None and not gate.sessions


def test_live_stream_shows_a_request_and_a_slow_viewer_loses_rows_not_time(fakes: RunningFakes) -> None:
    app = create_app(observe_config(fakes))
    plugin = _dashboard(app)
    with serve_app(app) as url:
        lines: list[str] = []
        connected = threading.Event()

        def watch() -> None:
            with httpx.stream("GET", f"{url}/dashboard/live", timeout=10) as response:
                for line in response.iter_lines():
                    connected.set()
                    lines.append(line)
                    if line.startswith("data:"):
                        return

        thread = threading.Thread(target=watch)
        thread.start()
        assert connected.wait(5)
        client = anthropic.Anthropic(base_url=f"{url}/api", api_key="x", max_retries=0)
        started = time.monotonic()
        client.messages.create(
            model="claude-opus-5-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
        thread.join(5)
        assert time.monotonic() - started < 5
        assert "event: request" in lines
        row = orjson.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert row["status"] == 200 and row["route"] == "/api/v1/messages" and row["output_tokens"] > 0
    assert not plugin.viewers  # the viewer is gone once its stream closed

    viewer = Viewer(2)
    for _ in range(5):
        viewer.offer(b"{}")
    assert viewer.queue.qsize() == 2 and viewer.dropped == 3


def test_with_no_viewer_the_dashboard_is_no_listener(fakes: RunningFakes) -> None:
    """Nobody watching: the dashboard adds no hook, so the data path builds no events on its account."""
    cli = {"ledger.enabled": False, "plugins.metrics.enabled": False, "plugins.pricing.enabled": False}
    app = create_app(observe_config(fakes, **cli))
    hooks = app.plugins.hooks
    assert not hooks.listening
    with serve_app(app) as url, httpx.stream("GET", f"{url}/dashboard/live", timeout=10) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the stream
        assert next(lines) == ": connected"
        assert hooks.listening  # a viewer: the live feed listens
    deadline = time.monotonic() + 5
    while hooks.listening and time.monotonic() < deadline:  # the server notices the closed stream
        time.sleep(0.02)
    assert not hooks.listening
    event = RequestEvent("id", "claude_api", "/v1/messages", "anthropic", "anthropic", "m", False, 0.0)
    event.usage = Usage(1, 2)
    assert live_row(event, 10.0)["input_tokens"] == 1


@pytest.mark.parametrize("path", ["/dashboard/config", "/dashboard/info"])
def test_json_views_answer(served: Any, path: str) -> None:
    url = served(config_for({"security.auth_token": TOKEN}), mock=True)
    body = httpx.get(url + path, headers={"authorization": f"Bearer {TOKEN}"}).json()
    if path.endswith("config"):
        shown = {row["key"]: row for row in body["settings"]}
        assert shown["security.auth_token"]["value"] == "***"
        assert TOKEN not in orjson.dumps(body).decode()
    else:
        assert body["auth"] is True and body["mock"] is True
