"""Issue 10's probe table, in-process rows: browser origins, DNS rebinding, WebSocket Origin, content types,
CORS, /health disclosure, body limit, load shedding, /_mock behind the token (the socket-level rows are in
test_limits_process.py)."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ccproxy.app import create_app
from ccproxy.middleware import HostGuard
from tests.conftest import config_for

# The 9 POST routes (the Codex ones are on in offline mode).
POST_ROUTES = [
    "/api/v1/messages",
    "/api/v1/messages/count_tokens",
    "/api/v1/chat/completions",
    "/api/v1/responses",
    "/api/codex/responses",
    "/api/codex/v1/responses",
    "/api/codex/chat/completions",
    "/api/codex/v1/chat/completions",
    "/api/codex/v1/messages",
]
BROWSER_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
EVIL = "http://evil.example"
# A body the proxy refuses itself (400) before any upstream call, so nothing leaves the test.
BAD_MODEL = b'{"model": 5, "max_tokens": 1, "messages": []}'
TOKEN = "sk-test-ccproxy-token-0123456789"


def error_message(route: str, resp: httpx.Response) -> str:
    """The message of an error in the route's own envelope (Anthropic for /messages, OpenAI otherwise)."""
    body = resp.json()
    if route.endswith(("/messages", "/count_tokens")):
        assert body["type"] == "error", body
        return str(body["error"]["message"])
    assert set(body) == {"error"} and "param" in body["error"], body
    return str(body["error"]["message"])


@pytest.fixture
def offline(served: Callable[..., str]) -> Callable[..., str]:
    def start(**cli: Any) -> str:
        return served(config_for(cli), mock=True)

    return start


@pytest.mark.parametrize("content_type", BROWSER_TYPES)
def test_cross_site_simple_requests_are_never_served(offline: Callable[..., str], content_type: str) -> None:
    url = offline()
    for route in POST_ROUTES:
        headers = {"content-type": content_type, "origin": EVIL}
        resp = httpx.post(url + route, content=BAD_MODEL, headers=headers)
        assert resp.status_code == 403, (route, resp.text)
        assert "evil.example" in error_message(route, resp)
        # the same body without an Origin (a non-browser client) is still not taken as JSON
        resp = httpx.post(url + route, content=BAD_MODEL, headers={"content-type": content_type})
        assert resp.status_code == 415, (route, resp.text)
        assert "application/json" in error_message(route, resp)


def test_json_with_or_without_charset_is_accepted(offline: Callable[..., str]) -> None:
    url = offline()
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
    ):
        resp = httpx.post(
            url + "/api/v1/chat/completions", content=BAD_MODEL, headers={"content-type": content_type}
        )
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"  # reached the route


def test_dns_rebinding_host_is_refused(offline: Callable[..., str]) -> None:
    url = offline()
    for method, route in [("GET", "/health"), ("GET", "/api/v1/models"), ("POST", "/api/v1/messages")]:
        resp = httpx.request(
            method,
            url + route,
            content=BAD_MODEL,
            headers={"host": "evil.example:8000", "content-type": "application/json"},
        )
        assert resp.status_code == 403, route
        assert "security.allowed_hosts" in resp.text and "checks" not in resp.text


def test_loopback_names_and_configured_hosts_are_allowed(offline: Callable[..., str]) -> None:
    url = offline(**{"security.allowed_hosts": [".lan.example", "box"]})
    allowed = [
        "localhost:9",
        "app.localhost",
        "127.8.9.10:1",
        "[::1]:8000",
        "box:80",
        "lan.example",
        "a.lan.example:1",
    ]
    for host in allowed:
        assert httpx.get(url + "/health", headers={"host": host}).status_code == 200, host
    for host in [
        "evil.example",
        "localhost.evil.example",
        "lan.example.evil",
        "127.0.0.1.nip.io",
        "box:x",
        "[::1",
    ]:
        assert httpx.get(url + "/health", headers={"host": host}).status_code == 403, host


def _ws_handshake(url: str, **headers: str) -> bytes:
    port = int(url.rsplit(":", 1)[1])
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /api/codex/v1/responses HTTP/1.1",
        *(f"{k}: {v}" for k, v in {"host": f"127.0.0.1:{port}", **headers}.items()),
        "upgrade: websocket",
        "connection: Upgrade",
        f"sec-websocket-key: {key}",
        "sec-websocket-version: 13",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_websocket_from_another_origin_or_host_is_refused_before_accept(offline: Callable[..., str]) -> None:
    url = offline(**{"security.allowed_origins": ["http://localhost:3000"]})
    assert b" 403 " in _ws_handshake(url, origin=EVIL)
    assert b" 403 " in _ws_handshake(url, host="evil.example")
    assert b" 101 " in _ws_handshake(url)  # the Codex CLI sends no Origin
    assert b" 101 " in _ws_handshake(url, origin="http://localhost:3000")


def test_cors_only_for_configured_origins_with_preflight(offline: Callable[..., str]) -> None:
    app_origin = "http://localhost:3000"
    url = offline(**{"security.allowed_origins": [app_origin + "/"], "security.auth_token": TOKEN})
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-api-key",
    }
    ok = httpx.options(url + "/api/v1/messages", headers={"origin": app_origin, **preflight})
    assert ok.status_code == 204  # no token on a preflight: browsers never send one
    assert ok.headers["access-control-allow-origin"] == app_origin
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"]
    assert ok.headers["vary"] == "origin"
    refused = httpx.options(url + "/api/v1/messages", headers={"origin": EVIL, **preflight})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    call = httpx.post(
        url + "/api/v1/messages",
        content=BAD_MODEL,
        headers={"origin": app_origin, "content-type": "application/json", "x-api-key": TOKEN},
    )
    assert call.status_code == 400 and call.headers["access-control-allow-origin"] == app_origin
    assert "x-request-id" in call.headers["access-control-expose-headers"]
    # a page of ccproxy's own origin is not cross-site
    own = httpx.get(url + "/health", headers={"origin": url})
    assert own.status_code == 200 and "access-control-allow-origin" not in own.headers


async def test_health_shows_credential_detail_only_to_trusted_callers() -> None:
    config = config_for({"plugins.claude_api.access_token": "sk-ant-oat01-x", "security.auth_token": TOKEN})
    app = create_app(config)

    async def detail(client: str, **headers: str) -> set[str]:
        transport = httpx.ASGITransport(app=app, client=(client, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            resp = await http.get("/health", headers=headers)
        assert resp.status_code == 200
        return {key for checks in resp.json()["checks"].values() for check in checks for key in check}

    assert await detail("127.0.0.1", authorization=f"Bearer {TOKEN}") > {"status"}
    assert await detail("127.0.0.1") == {"status"}  # no token
    assert await detail("10.1.2.3", authorization=f"Bearer {TOKEN}") == {"status"}  # not loopback


def test_body_over_the_limit_is_413_in_the_callers_format(offline: Callable[..., str]) -> None:
    url = offline(**{"limits.max_body_bytes": 4096})
    big = b'{"model": "' + b"x" * 5000 + b'"}'
    resp = httpx.post(url + "/api/v1/messages", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large"
    assert "limits.max_body_bytes" in resp.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    resp = httpx.post(
        url + "/api/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413 and "4096" in resp.json()["error"]["message"]


def test_load_shedding_past_the_in_flight_limit_but_health_answers(offline: Callable[..., str]) -> None:
    url = offline(**{"limits.max_requests_in_flight": 1, "limits.retry_after_seconds": 3})
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/messages HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    ).encode()

    def hold() -> socket.socket:
        """A request whose body never ends (until told): it stays in flight."""
        held = socket.create_connection((host, int(port)))
        held.sendall(head + b"b\r\n" + b'{"model": 5' + b"\r\n")
        return held

    def probe() -> httpx.Response:
        return httpx.post(
            url + "/api/v1/messages", content=BAD_MODEL, headers={"content-type": "application/json"}
        )

    held = hold()
    try:
        deadline = time.monotonic() + 20  # until the held request is in flight (slow on a loaded machine)
        while time.monotonic() < deadline:
            shed = probe()
            if shed.status_code == 503:
                held.settimeout(0.05)
                try:
                    answered = held.recv(1024)  # the held request met a probe in flight and was shed itself
                except TimeoutError:
                    break  # still in flight: the probe was the one shed
                assert answered.startswith(b"HTTP/1.1 503")
                held.close()
                held = hold()
            threading.Event().wait(0.01)
        assert shed.status_code == 503 and shed.headers["retry-after"] == "3"
        assert shed.json()["error"]["type"] == "overloaded_error"
        assert httpx.get(url + "/health").status_code == 200
        extra = hold()  # another slow body is shed at once, without waiting for its body
        extra.settimeout(10)
        assert extra.recv(1024).startswith(b"HTTP/1.1 503")
        extra.close()
        held.settimeout(30)
        held.sendall(b"1\r\n}\r\n0\r\n\r\n")  # the body ends: the held request is answered
        assert held.recv(1024).startswith(b"HTTP/1.1 400")  # "model" must be a string
    finally:
        held.close()
    assert probe().status_code == 400  # no longer at the limit


def test_mock_upstream_is_behind_the_auth_token(offline: Callable[..., str]) -> None:
    url = offline(**{"security.auth_token": TOKEN})
    assert httpx.get(url + "/_mock/v1/models").status_code == 401
    assert (
        httpx.get(url + "/_mock/v1/models", headers={"origin": EVIL, "x-api-key": TOKEN}).status_code == 403
    )
    assert httpx.get(url + "/_mock/v1/models", headers={"x-api-key": TOKEN}).status_code == 200


def test_bind_address_and_wildcard_binds_extend_the_host_list() -> None:
    lan = HostGuard("192.168.1.5", [])
    assert lan.allows(b"192.168.1.5:8000") and lan.allows(b"127.0.0.1:8000")
    assert not lan.allows(b"192.168.1.6:8000") and not lan.allows(b"evil.example")
    anywhere = HostGuard(
        "0.0.0.0", []
    )  # reached by any of the machine's addresses: IP literals cannot be rebound
    assert anywhere.allows(b"10.0.0.7:8000") and anywhere.allows(b"[fe80::1]:8000")
    assert anywhere.allows(socket.gethostname().encode()) and not anywhere.allows(b"evil.example")
    assert HostGuard("127.0.0.1", ["*"]).allows(b"evil.example")
