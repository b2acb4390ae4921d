"""serve_app / BackgroundServer and the combined fake app's layout."""

from __future__ import annotations

import importlib.util
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ccproxy.testing import BackgroundServer, RunningFakes, create_fake_upstreams, serve_app


def _hello_app() -> Starlette:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def test_serve_app_is_ready_and_stops() -> None:
    start = time.monotonic()
    with serve_app(_hello_app()) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url).text == "hello"  # ready without any polling by the caller
        port = int(url.rsplit(":", 1)[1])
    assert time.monotonic() - start < 3
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        pass


def test_two_servers_side_by_side() -> None:
    with serve_app(_hello_app()) as first, serve_app(_hello_app()) as second:
        assert first != second
        assert httpx.get(first).text == httpx.get(second).text == "hello"


def test_startup_failure_is_raised() -> None:
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("boom")
        yield

    server = BackgroundServer(Starlette(lifespan=lifespan))
    with pytest.raises(RuntimeError, match="failed to start"):
        server.start()


def test_stop_does_not_hang_on_a_slow_stream(fakes: RunningFakes) -> None:
    with serve_app(create_fake_upstreams(fakes.anthropic, fakes.codex)) as url:
        fakes.anthropic.reply_text("word " * 50, delay=0.5)
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        body = {"model": "claude-opus-5-5", "max_tokens": 5, "stream": True, "messages": []}
        client = httpx.Client()
        response = client.send(
            client.build_request("POST", url + "/v1/messages", json=body, headers=headers), stream=True
        )
        assert response.status_code == 200
        start = time.monotonic()
    assert time.monotonic() - start < 5
    response.close()
    client.close()


def test_combined_layout(fakes: RunningFakes) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert httpx.get(fakes.url + "/v1/models", headers=headers).status_code == 200
    codex = httpx.post(fakes.codex_url + "/responses", json={}, headers={"authorization": "Bearer t"})
    assert codex.status_code == 401 and "detail" in codex.json()  # reached the Codex fake
    assert [r.path for r in fakes.codex.requests] == ["/backend-api/codex/responses"]
    assert httpx.get(fakes.url + "/nowhere").status_code == 404


@pytest.mark.skipif(
    importlib.util.find_spec("ccproxy.testing.fake_oauth") is None,
    reason="ccproxy.testing.fake_oauth not present",
)
def test_oauth_fake_is_mounted_at_its_own_paths() -> None:
    from ccproxy.testing import fake_oauth

    if not hasattr(fake_oauth, "create_app"):
        pytest.skip("fake_oauth has no create_app()")
    own_paths = {getattr(r, "path", None) for r in fake_oauth.create_app().routes}
    combined_paths = {getattr(r, "path", None) for r in create_fake_upstreams().routes}
    assert own_paths - {None} <= combined_paths
