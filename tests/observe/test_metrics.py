"""``GET /metrics``: known counts and token sums after a mix of requests on every provider, route
templates, status classes, bounded model labels, auth, several workers; and ``Server-Timing``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccproxy.testing import Completion, RunningFakes
from tests.conftest import free_port, stop_process, wait_healthy

from .conftest import MakeProxy

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}


def scrape(url: str, **kw: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    resp = httpx.get(url + "/metrics", **kw)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return samples


def total(samples: dict[str, dict[Any, float]], name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, {}).items() if match.items() <= dict(labels).items())


def test_metrics_count_every_provider_stream_and_json(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    with make_proxy() as (url, _):
        for stream in (False, True):
            fakes.anthropic.reply(Completion(text="a", input_tokens=10, output_tokens=5, cache_read_tokens=3))
            body = {**MESSAGES, "stream": stream}
            assert httpx.post(url + "/api/v1/messages", json=body).status_code == 200
        fakes.anthropic.reply(Completion(text="b", input_tokens=7, output_tokens=2, cache_creation_tokens=4))
        assert httpx.post(url + "/api/v1/chat/completions", json=CHAT).status_code == 200
        for session in ("s-1", "s-2"):
            fakes.codex.reply(Completion(text="c", input_tokens=6, output_tokens=9, thinking="hmm"))
            body = {"model": "gpt-5.5", "input": "hi", "stream": True}
            assert httpx.post(url + f"/api/codex/{session}/responses", json=body).status_code == 200
        fakes.codex.reply(Completion(text="d", input_tokens=1, output_tokens=1))
        assert (
            httpx.post(url + "/api/codex/v1/chat/completions", json={**CHAT, "model": "gpt-5.5"}).status_code
            == 200
        )
        fakes.anthropic.reply_error(529, "overloaded")
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 529
        m = scrape(url)
    requests = "ccproxy_requests_total"
    assert total(m, requests) == 7
    assert total(m, requests, provider="claude_api") == 4 and total(m, requests, provider="codex") == 3
    # the route label is the template: two sessions, one label value
    assert total(m, requests, route="/api/codex/{session_id}/responses", status="2xx") == 2
    assert not any("s-1" in str(labels) for labels in m[requests])
    assert total(m, requests, route="/api/v1/messages", status="5xx", model="claude-sonnet-4-5") == 1
    assert total(m, requests, route="/api/v1/chat/completions", format="openai_chat") == 1
    tokens = "ccproxy_tokens_total"
    assert total(m, tokens, provider="claude_api", kind="input") == 10 + 10 + 7
    assert total(m, tokens, provider="claude_api", kind="output") == 5 + 5 + 2
    assert total(m, tokens, kind="cache_read") == 6
    assert total(m, tokens, kind="cache_write") == 4
    assert total(m, tokens, provider="codex", kind="input") == 6 + 6 + 1
    assert total(m, tokens, provider="codex", kind="reasoning") > 0
    sonnet = (10 * 3 + 5 * 15 + 3 * 0.3) * 2 + (7 * 3 + 2 * 15 + 4 * 3.75)
    assert total(m, "ccproxy_cost_usd_total", model="claude-sonnet-4-5") == pytest.approx(sonnet / 1e6)
    assert total(m, "ccproxy_request_duration_seconds_count") == 7
    assert total(m, "ccproxy_time_to_first_byte_seconds_count") == 7
    assert total(m, "ccproxy_requests_in_flight") == 0
    assert total(m, "ccproxy_upstream_errors_total", provider="claude_api", reason="upstream_529") == 1


def test_retries_and_credential_refreshes_are_counted(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    with make_proxy(**{"plugins.claude_api.retry_attempts": 2}) as (url, app):
        fakes.anthropic.reply_error(429, "busy", headers={"retry-after": "0"})
        fakes.anthropic.reply_error(529, "overloaded", headers={"retry-after": "0"})
        fakes.anthropic.reply(Completion(text="ok"))
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
        app.plugins.hooks.credential_refreshed("claude_api", None, "ok")
        m = scrape(url)
    assert total(m, "ccproxy_upstream_retries_total", reason="429") == 1
    assert total(m, "ccproxy_upstream_retries_total", reason="529") == 1
    assert total(m, "ccproxy_credential_refreshes_total", provider="claude_api", outcome="ok") == 1


def test_model_label_cardinality_is_capped(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    with make_proxy(**{"plugins.metrics.max_models": 2, "plugins.claude_api.aliases": []}) as (url, _):
        for model in ("claude-a", "claude-b", "claude-c", "claude-d", "claude-a"):
            fakes.anthropic.reply(Completion(text="x"))
            assert httpx.post(url + "/api/v1/messages", json={**MESSAGES, "model": model}).status_code == 200
        m = scrape(url)
    models = {dict(labels)["model"] for labels in m["ccproxy_requests_total"]}
    assert models == {"claude-a", "claude-b", "other"}
    assert total(m, "ccproxy_requests_total", model="other") == 2


def test_metrics_sit_behind_the_auth_token_unless_opened_on_loopback(make_proxy: MakeProxy) -> None:
    token = "metrics-token-abcdef"
    with make_proxy(**{"security.auth_token": token}) as (url, _):
        assert httpx.get(url + "/metrics").status_code == 401
        assert httpx.get(url + "/metrics", headers={"authorization": f"Bearer {token}"}).status_code == 200
    with make_proxy(**{"security.auth_token": token, "plugins.metrics.open_on_loopback": True}) as (url, _):
        assert httpx.get(url + "/metrics").status_code == 200
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 401  # only /metrics
    with make_proxy(**{"plugins.metrics.enabled": False}) as (url, _):
        assert httpx.get(url + "/metrics").status_code == 404


def test_several_workers_aggregate() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccproxy", "serve", "--mock", "--port", str(port), "--workers", "2"],
        env={**os.environ, "LOGGING__LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=30)
        for _ in range(24):  # new connections: both workers answer some
            with httpx.Client(timeout=10) as client:
                resp = client.post(url + "/api/v1/messages", json=MESSAGES)
                assert resp.status_code == 200
        time.sleep(1.5)  # each worker shares its totals once a second
        for _ in range(6):  # each scrape is answered by either worker and sees both workers' counts
            assert total(scrape(url, timeout=10), "ccproxy_requests_total") == 24
    finally:
        stop_process(proc, timeout=20)


def test_server_timing_on_every_proxied_response(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    timing = re.compile(r'^proxy;dur=[\d.]+, upstream;dur=[\d.]+;desc="upstream TTFB"$')
    with make_proxy() as (url, _):
        fakes.anthropic.reply(Completion(text="a"))
        plain = httpx.post(url + "/api/v1/messages", json=MESSAGES)
        assert timing.match(plain.headers["server-timing"]), plain.headers["server-timing"]
        fakes.anthropic.reply(Completion(text="a"))
        with httpx.stream("POST", url + "/api/v1/messages", json={**MESSAGES, "stream": True}) as streamed:
            assert timing.match(streamed.headers["server-timing"])  # in the head: known before the body
            streamed.read()
        fakes.anthropic.reply_error(400, "bad")
        failed = httpx.post(url + "/api/v1/messages", json=MESSAGES)
        assert timing.match(failed.headers["server-timing"])
        invalid = httpx.post(
            url + "/api/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert re.match(r"^proxy;dur=[\d.]+$", invalid.headers["server-timing"])  # no upstream call


async def test_websocket_turns_are_counted_under_the_route_template(
    make_proxy: MakeProxy, fakes: RunningFakes
) -> None:
    import json

    import websockets

    with make_proxy() as (url, _):
        for session in ("ws-a", "ws-b"):
            fakes.codex.reply(Completion(text="x", input_tokens=3, output_tokens=2))
            path = f"/api/codex/{session}/responses"
            async with websockets.connect(url.replace("http://", "ws://") + path) as ws:
                item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
                await ws.send(json.dumps({"type": "response.create", "model": "gpt-5.5", "input": [item]}))
                while json.loads(await ws.recv())["type"] != "response.completed":
                    pass
        m = scrape(url)
    assert total(m, "ccproxy_requests_total", route="/api/codex/{session_id}/responses") == 2
    assert total(m, "ccproxy_tokens_total", provider="codex", kind="input") == 6
