"""The raw HTTP logger: both legs as raw HTTP, byte-faithful apart from redaction, private files, no
secret in any file, caps under a burst; the seed's and the old request-log spellings turn it on."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import httpx
import orjson

from ccproxy.config import load_config
from ccproxy.observe.rawlog import redact_body
from ccproxy.plugins import load_plugins
from ccproxy.testing import Completion, RunningFakes

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, MakeProxy

CLIENT_KEY = "sk-ant-api03-client-key-that-must-not-leak-0123456789"
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi ü"}]}


def wait_for(directory: Path, pattern: str, count: int) -> list[Path]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = sorted(directory.glob(pattern))
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{pattern}: {sorted(p.name for p in directory.iterdir())}")


def split_leg(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(request head, request body, response head, response body) of one leg file."""
    req_head, _, rest = data.partition(b"\r\n\r\n")
    length = int(
        next(v for k, _, v in (h.partition(b": ") for h in req_head.split(b"\r\n")) if k == b"content-length")
    )
    req_body, rest = rest[:length], rest[length:]
    assert rest.startswith(b"\r\n\r\n")
    resp_head, _, resp_body = rest[4:].partition(b"\r\n\r\n")
    return req_head, req_body, resp_head, resp_body


def test_both_legs_are_written_as_raw_http(
    make_proxy: MakeProxy, fakes: RunningFakes, tmp_path: Path
) -> None:
    log_dir = tmp_path / "raw"
    cli = {"plugins.raw_http_logger.enabled": True, "plugins.raw_http_logger.log_dir": str(log_dir)}
    raw = orjson.dumps(MESSAGES)
    headers = {"x-api-key": CLIENT_KEY, "content-type": "application/json", "cookie": "session=abcdef123456"}
    with make_proxy(**cli) as (url, _):
        fakes.anthropic.reply(Completion(text="hello"))
        plain = httpx.post(url + "/api/v1/messages", content=raw, headers=headers)
        assert plain.status_code == 200
        fakes.anthropic.reply(Completion(text="streamed words here"))
        streamed = httpx.post(
            url + "/api/v1/messages",
            content=orjson.dumps({**MESSAGES, "stream": True}),
            headers={"content-type": "application/json"},
        )
        fakes.codex.reply(Completion(text="codex"))
        codex = httpx.post(
            url + "/api/codex/v1/responses", json={"model": "gpt-5.5", "input": "x", "stream": True}
        )
        assert codex.status_code == 200
        clients = wait_for(log_dir, "*-client.http", 3)
        upstreams = wait_for(log_dir, "*-upstream.http", 3)

    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    for path in log_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    request_id = plain.headers["x-request-id"]
    client_leg = next(p for p in clients if request_id in p.name).read_bytes()
    head, body, resp_head, resp_body = split_leg(client_leg)
    assert head.startswith(b"POST /api/v1/messages HTTP/1.1\r\n")
    assert body == raw  # the client's bytes, untouched
    assert resp_head.startswith(b"HTTP/1.1 200 OK\r\n") and b"server-timing: proxy;dur=" in resp_head
    assert resp_body == plain.content
    assert b"x-api-key: ***" in head and b"cookie: ***" in head
    upstream_leg = next(p for p in upstreams if request_id in p.name).read_bytes()
    up_head, up_body, up_resp_head, up_resp_body = split_leg(upstream_leg)
    assert up_head.startswith(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"authorization: ***" in up_head
    assert json.loads(up_body)["messages"] == MESSAGES["messages"]
    assert up_resp_head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(up_resp_body)["content"][0]["text"] == "hello"

    stream_id = streamed.headers["x-request-id"]
    _, _, stream_head, stream_body = split_leg(next(p for p in clients if stream_id in p.name).read_bytes())
    assert b"content-type: text/event-stream" in stream_head
    assert stream_body == streamed.content  # the stream as sent, byte for byte
    _, _, _, upstream_stream = split_leg(next(p for p in upstreams if stream_id in p.name).read_bytes())
    assert upstream_stream == streamed.content  # a passthrough: the upstream's bytes are the client's

    everything = b"".join(p.read_bytes() for p in log_dir.iterdir())
    for secret in (CLIENT_KEY, CLAUDE_TOKEN, CODEX_TOKEN, CODEX_TOKEN.split(".")[1], "abcdef123456"):
        assert secret.encode() not in everything, secret


def test_caps_hold_under_a_burst(make_proxy: MakeProxy, fakes: RunningFakes, tmp_path: Path) -> None:
    log_dir = tmp_path / "raw"
    cli = {
        "plugins.raw_http_logger.log_dir": str(log_dir),  # a directory alone turns it on
        "plugins.raw_http_logger.max_body_bytes": 100,
        "plugins.raw_http_logger.max_total_bytes": 20_000,
    }
    big = {**MESSAGES, "messages": [{"role": "user", "content": "x" * 5000}]}
    with make_proxy(**cli) as (url, _), httpx.Client() as client:
        for _ in range(60):
            fakes.anthropic.reply(Completion(text="y" * 2000))
            assert client.post(url + "/api/v1/messages", json=big).status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the writer catches up, the directory stays capped
            if _total_size(log_dir) <= 20_000 and len(list(log_dir.iterdir())) > 4:
                break
            time.sleep(0.05)
    files = list(log_dir.iterdir())
    assert sum(p.stat().st_size for p in files) <= 20_000
    assert 4 < len(files) < 120  # the oldest were rotated away
    sample = files[-1].read_bytes()
    assert b"[ccproxy: body cut, 100 of " in sample
    assert len(sample) < 2000


def test_redaction_keeps_everything_else_byte_for_byte() -> None:
    body = '{"refresh_token": "opaque-value", "input_tokens": 3, "text": "Bearer abcdefghijkl ünï"}'.encode()
    cleaned = redact_body(body + b"\xff")
    assert (
        cleaned == '{"refresh_token": "***", "input_tokens": 3, "text": "Bearer *** ünï"}'.encode() + b"\xff"
    )


def test_seed_and_old_spellings_turn_it_on(tmp_path: Path) -> None:
    for env in (
        {
            "PLUGINS__RAWHTTPLOGGERCONFIG__ENABLED": "true",
            "PLUGINS__RAWHTTPLOGGERCONFIG__LOG_DIR": str(tmp_path),
        },
        {"PLUGINS__RAW_HTTP_LOGGER__ENABLED": "true", "PLUGINS__RAW_HTTP_LOGGER__LOG_DIR": str(tmp_path)},
        {"CCPROXY_REQUEST_LOG_DIR": str(tmp_path)},
        {"LOGGING__REQUEST_LOG_DIR": str(tmp_path)},
    ):
        entry = load_plugins(load_config(env=env)).get("raw_http_logger")
        assert entry is not None and entry.enabled and entry.ctx is not None, env
        assert entry.ctx.settings.log_dir == tmp_path
    entry = load_plugins(load_config(env={})).get("raw_http_logger")
    assert entry is not None and not entry.enabled  # off by default


def _total_size(directory: Path) -> int:
    """Bytes in the directory now; a file rotated away between listing and stat counts as gone."""
    total = 0
    for path in directory.iterdir():
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total
