"""Wire-level checks the SDKs hide: stream framing and terminators, content types, passed-through headers."""

from __future__ import annotations

import httpx
import orjson
import pytest

from ccproxy.testing import Completion

from .conftest import Fakes

USER = [{"role": "user", "content": "hello"}]


def frames(raw: bytes) -> list[tuple[str | None, str]]:
    assert raw.endswith(b"\n\n")
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        out.append((name, data))
    return out


@pytest.mark.parametrize(
    ("path", "body", "last"),
    [
        ("/api/v1/messages", {"model": "sonnet", "max_tokens": 9, "messages": USER}, "message_stop"),
        ("/api/v1/chat/completions", {"model": "sonnet", "messages": USER}, "[DONE]"),
        ("/api/v1/responses", {"model": "sonnet", "input": "hi"}, "response.completed"),
        ("/api/codex/v1/responses", {"model": "gpt-5.4", "input": "hi"}, "response.completed"),
        ("/api/codex/v1/chat/completions", {"model": "gpt-5.4", "messages": USER}, "[DONE]"),
        ("/api/codex/v1/messages", {"model": "gpt-5.4", "max_tokens": 9, "messages": USER}, "message_stop"),
    ],
)
def test_stream_ends_with_its_terminator(proxy: str, path: str, body: dict[str, object], last: str) -> None:
    resp = httpx.post(proxy + path, json={**body, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    got = frames(resp.content)
    name, data = got[-1]
    if last == "[DONE]":
        assert data == "[DONE]"
        assert [d for _, d in got].count("[DONE]") == 1
    else:
        assert name == last or orjson.loads(data)["type"] == last
    for _, data in got:
        if data != "[DONE]":
            orjson.loads(data)  # every frame is complete JSON


def test_rate_limit_headers_passed_on_success(proxy: str, fakes: Fakes) -> None:
    resp = httpx.post(proxy + "/api/v1/messages", json={"model": "sonnet", "max_tokens": 9, "messages": USER})
    assert resp.headers["anthropic-ratelimit-unified-status"] == "allowed"
    assert resp.headers["request-id"].startswith("req_fake")
    assert resp.headers["x-request-id"]  # the proxy's own id
    resp = httpx.post(proxy + "/api/codex/v1/responses", json={"model": "gpt-5.4", "input": "hi"})
    assert resp.headers["x-codex-primary-used-percent"] == "0"


def test_client_request_id_is_echoed_not_forwarded(proxy: str, fakes: Fakes) -> None:
    resp = httpx.post(
        proxy + "/api/v1/messages",
        json={"model": "sonnet", "max_tokens": 9, "messages": USER},
        headers={"x-request-id": "client-req-1"},
    )
    assert resp.headers["x-request-id"] == "client-req-1"
    assert "x-request-id" not in fakes.anthropic.last_request.headers


def test_unchanged_passthrough_body_is_forwarded_byte_for_byte(proxy: str, fakes: Fakes) -> None:
    identity = "You are Claude Code, Anthropic's official CLI for Claude."
    raw = (
        b'{"model":"claude-sonnet-4-5","max_tokens":9,  "system":[{"type":"text","text":"'
        + identity.encode()
        + b'"}],"messages":[{"role":"user","content":"hi"}]}'
    )
    httpx.post(proxy + "/api/v1/messages", content=raw, headers={"content-type": "application/json"})
    assert fakes.anthropic.last_request.body == raw


def test_non_json_upstream_error_is_rendered_in_callers_envelope(proxy: str, fakes: Fakes) -> None:
    for path, body in (
        ("/api/v1/messages", {"model": "sonnet", "max_tokens": 9, "messages": USER}),
        ("/api/v1/chat/completions", {"model": "sonnet", "messages": USER}),
    ):
        fakes.anthropic.reply_raw(b"<html>502 Bad Gateway</html>", status=502, content_type="text/html")
        resp = httpx.post(proxy + path, json=body)
        assert resp.status_code == 502
        data = resp.json()
        assert "502 Bad Gateway" in data["error"]["message"]
        if path.endswith("/messages"):
            assert data["type"] == "error"


@pytest.mark.parametrize(
    ("path", "body", "check"),
    [
        ("/api/codex/v1/messages", {"max_tokens": 9, "messages": USER}, ("stop_reason", "max_tokens")),
        ("/api/codex/v1/chat/completions", {"messages": USER}, ("finish_reason", "length")),
        ("/api/codex/v1/responses", {"input": "hi"}, ("status", "incomplete")),
    ],
)
def test_codex_incomplete_answer(
    proxy: str, fakes: Fakes, path: str, body: dict[str, object], check: tuple[str, str]
) -> None:
    fakes.codex.reply(Completion(text="cut short", stop_reason="max_tokens"))
    resp = httpx.post(proxy + path, json={"model": "gpt-5.4", **body})
    assert resp.status_code == 200
    data = resp.json()
    key, value = check
    found = data["choices"][0][key] if key == "finish_reason" else data[key]
    assert found == value


def test_codex_session_path_for_anthropic_client(proxy: str, fakes: Fakes) -> None:
    for _ in range(2):
        httpx.post(
            proxy + "/api/codex/claude-sess/v1/messages",
            json={"model": "gpt-5.4", "max_tokens": 9, "messages": USER},
        )
    assert [r.headers["session_id"] for r in fakes.codex.requests] == ["claude-sess", "claude-sess"]
    assert {r.json["prompt_cache_key"] for r in fakes.codex.requests} == {"claude-sess"}
