"""Failure behaviour through the proxy: dropped upstreams, client disconnects, bad bodies, unreachable
upstreams, and the bounded 429/529 retry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest

from ccproxy.app import create_app
from ccproxy.sse import frame
from ccproxy.testing.server import serve_app

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, Fakes, MakeProxy, proxy_config, start_proxy

USER = [{"role": "user", "content": "hello"}]
LONG = " ".join(f"word{i}" for i in range(400))
MESSAGES_BODY = {"model": "sonnet", "max_tokens": 50, "messages": USER, "stream": True}
CHAT_BODY = {"model": "sonnet", "messages": USER, "stream": True}
RESPONSES_BODY = {"model": "gpt-5.4", "input": "hi", "stream": True}


def sse_frames(raw: bytes) -> list[tuple[str | None, dict[str, object] | str]]:
    """(event, data) per frame; checks every frame is complete."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    out: list[tuple[str | None, dict[str, object] | str]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, ""
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        out.append((name, data if data == "[DONE]" else orjson.loads(data)))
    return out


# ------------------------------------------------------------------------------ upstream drops mid-stream


def test_passthrough_drop_anthropic_sdk_raises(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_text(LONG, disconnect_after=6)
    client = anthropic.Anthropic(base_url=proxy + "/api", api_key="x", max_retries=0)
    text = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model="sonnet", max_tokens=50, messages=USER) as stream,  # type: ignore[arg-type]
    ):
        text.extend(stream.text_stream)
    assert "upstream" in str(info.value)
    assert text  # what arrived before the drop was delivered


def test_passthrough_drop_is_well_formed(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_text(LONG, disconnect_after=6)
    resp = httpx.post(proxy + "/api/v1/messages", json=MESSAGES_BODY)  # reads to a clean end
    assert resp.status_code == 200
    frames = sse_frames(resp.content)
    name, data = frames[-1]
    assert name == "error"
    assert isinstance(data, dict) and data["type"] == "error"
    assert data["error"]["type"] == "api_error"  # type: ignore[index]
    assert [n for n, _ in frames].count("error") == 1


def test_translated_chat_drop_openai_sdk_raises(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_text(LONG, disconnect_after=6)
    client = openai.OpenAI(base_url=proxy + "/api/v1", api_key="x", max_retries=0)
    chunks = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="sonnet", messages=USER, stream=True):  # type: ignore[arg-type]
            chunks.append(chunk)
    assert "upstream" in str(info.value)
    assert chunks


def test_translated_chat_drop_is_well_formed(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_text(LONG, disconnect_after=6)
    resp = httpx.post(proxy + "/api/v1/chat/completions", json=CHAT_BODY)
    frames = sse_frames(resp.content)
    errors = [d for _, d in frames if isinstance(d, dict) and "error" in d]
    assert len(errors) == 1
    assert errors[0]["error"]["message"]  # type: ignore[index]
    assert not any(d == "[DONE]" for _, d in frames[:-1])  # nothing after a terminal marker


def test_translated_responses_drop_openai_sdk_raises(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_text(LONG, disconnect_after=6)
    client = openai.OpenAI(base_url=proxy + "/api/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.responses.create(model="sonnet", input="hi", stream=True))


def test_codex_passthrough_drop_openai_sdk_raises(proxy: str, fakes: Fakes) -> None:
    fakes.codex.reply_text(LONG, disconnect_after=8)
    client = openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError) as info:
        list(client.responses.create(model="gpt-5.4", input="hi", stream=True))
    assert "upstream" in str(info.value)
    resp = httpx.post(proxy + "/api/codex/v1/responses", json=RESPONSES_BODY)
    assert sse_frames(resp.content)  # complete frames only


def test_codex_translated_anthropic_drop(proxy: str, fakes: Fakes) -> None:
    fakes.codex.reply_text(LONG, disconnect_after=8)
    client = anthropic.Anthropic(base_url=proxy + "/api/codex", api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model="gpt-5.4", max_tokens=50, messages=USER) as stream,  # type: ignore[arg-type]
    ):
        stream.get_final_message()


def test_codex_non_streaming_drop_is_502(proxy: str, fakes: Fakes) -> None:
    fakes.codex.reply_text(LONG, disconnect_after=8)
    client = openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="gpt-5.4", input="hi")
    assert info.value.status_code == 502


@pytest.mark.parametrize("path", ["/api/v1/messages", "/api/v1/chat/completions", "/api/v1/responses"])
def test_json_body_drop_is_502(proxy: str, fakes: Fakes, path: str) -> None:
    fakes.anthropic.reply_text(LONG, disconnect_after=1)  # half the JSON body, then the connection drops
    body = {"model": "sonnet", "max_tokens": 50, "messages": USER, "input": "hi"}
    if path.endswith("/chat/completions"):
        body.pop("input")
    elif path.endswith("/responses"):
        body = {"model": "sonnet", "input": "hi"}
    resp = httpx.post(proxy + path, json=body)
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert "upstream" in error["message"]


def test_passthrough_clean_end_without_terminal_event(proxy: str, fakes: Fakes) -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }
    fakes.anthropic.reply_raw((frame("message_start", start),), content_type="text/event-stream")
    resp = httpx.post(proxy + "/api/v1/messages", json=MESSAGES_BODY)
    frames = sse_frames(resp.content)
    assert frames[0][0] == "message_start"
    assert frames[0][1]["message"]["model"] == "sonnet"  # type: ignore[index]
    assert frames[-1][0] == "error"


# ---------------------------------------------------------------------------------- client disconnects


@pytest.mark.parametrize(
    ("path", "body", "upstream", "suffix"),
    [
        ("/api/v1/messages", MESSAGES_BODY, "anthropic", "/v1/messages"),
        ("/api/v1/chat/completions", CHAT_BODY, "anthropic", "/v1/messages"),
        ("/api/codex/v1/responses", RESPONSES_BODY, "codex", "/responses"),
        ("/api/codex/v1/messages", {**MESSAGES_BODY, "model": "gpt-5.4"}, "codex", "/responses"),
    ],
    ids=["passthrough", "translated", "codex-passthrough", "codex-translated"],
)
def test_client_disconnect_cancels_upstream(
    proxy: str, fakes: Fakes, path: str, body: dict[str, object], upstream: str, suffix: str
) -> None:
    fake = fakes.anthropic if upstream == "anthropic" else fakes.codex
    fake.reply_text(LONG, delay=0.05)  # ~200 events: about ten seconds if nobody stops it
    with httpx.Client(timeout=5) as http, http.stream("POST", proxy + path, json=body) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            if chunk:
                break
        closed_at = time.monotonic()  # leaving the blocks closes the connection (the body was not read)
    seen = fakes.watch.wait_for(suffix, timeout=3)
    assert seen is not None, "the fake never saw the proxy drop the upstream request"
    assert seen - closed_at < 0.2, f"upstream cancelled {seen - closed_at:.3f}s after the client left"


def test_lifecycle_events_tell_a_finished_stream_from_an_abandoned_one(
    fakes: Fakes, tmp_path: Path, install_plugins: Callable[[dict[str, str]], None]
) -> None:
    """What metrics and the usage ledger will read: status, error and usage of every stream."""
    install_plugins({"hello": "ccproxy_hello:plugin"})
    import ccproxy_hello

    seen = ccproxy_hello.plugin.finished
    seen.clear()
    tokens = {"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN}
    app = create_app(proxy_config(fakes, tmp_path, **tokens))
    finished = [
        ("/api/v1/messages", MESSAGES_BODY, b"message_stop"),  # passthrough
        ("/api/v1/chat/completions", CHAT_BODY, b"[DONE]"),  # translated
        ("/api/codex/v1/responses", RESPONSES_BODY, b"response.completed"),  # the other upstream
    ]
    with serve_app(app) as url:
        for path, body, end in finished:
            (fakes.anthropic if "codex" not in path else fakes.codex).reply_text("all of it")
            assert end in httpx.post(url + path, json=body).content
        fakes.anthropic.reply_text(LONG, delay=0.05)
        with (
            httpx.Client(timeout=5) as http,
            http.stream("POST", url + "/api/v1/messages", json=MESSAGES_BODY) as r,
        ):
            next(r.iter_raw())
        deadline = time.monotonic() + 3
        while len(seen) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.memory.in_flight == 0
    *done, left = seen
    for event in done:
        assert (event.status, event.error, event.stream) == (200, None, True), event
        assert event.usage is not None and event.usage.output_tokens > 0 and event.usage.input_tokens > 0
    assert [e.path for e in done] == [path for path, _, _ in finished]
    assert (left.status, left.error) == (499, "client disconnected") and left.duration < 2


def test_sdk_client_closing_stream_cancels_upstream(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_text(LONG, delay=0.05)
    client = anthropic.Anthropic(base_url=proxy + "/api", api_key="x", max_retries=0)
    with client.messages.stream(model="sonnet", max_tokens=50, messages=USER) as stream:  # type: ignore[arg-type]
        for event in stream:
            if event.type == "content_block_delta":
                closed_at = time.monotonic()
                break
    seen = fakes.watch.wait_for("/v1/messages", timeout=3)
    assert seen is not None and seen - closed_at < 0.2


def test_completed_stream_is_not_a_disconnect(proxy: str, fakes: Fakes) -> None:
    httpx.post(proxy + "/api/v1/messages", json=MESSAGES_BODY)
    assert fakes.watch.wait_for("/v1/messages", timeout=0.1) is None


# ----------------------------------------------------------------------------------------- bad bodies


ANTHROPIC_PATHS = ["/api/v1/messages", "/api/v1/messages/count_tokens", "/api/codex/v1/messages"]
OPENAI_PATHS = [
    "/api/v1/chat/completions",
    "/api/v1/responses",
    "/api/codex/v1/responses",
    "/api/codex/v1/chat/completions",
    "/api/codex/sess-1/responses",
]
BAD_BODIES = [
    (b'{"model": "sonnet", "messages": [', "JSON"),
    (b"[1, 2, 3]", "object"),
    (b'"just a string"', "object"),
    (b'{"model": 42, "messages": [], "max_tokens": 5}', "model"),
    (b'{"model": ["a"], "input": "x"}', "model"),
]


@pytest.mark.parametrize("path", ANTHROPIC_PATHS)
@pytest.mark.parametrize(("raw", "mentions"), BAD_BODIES)
def test_bad_body_anthropic_envelope(proxy: str, fakes: Fakes, path: str, raw: bytes, mentions: str) -> None:
    resp = httpx.post(proxy + path, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert mentions in body["error"]["message"]
    assert fakes.anthropic.requests == [] and fakes.codex.requests == []


@pytest.mark.parametrize("path", OPENAI_PATHS)
@pytest.mark.parametrize(("raw", "mentions"), BAD_BODIES)
def test_bad_body_openai_envelope(proxy: str, fakes: Fakes, path: str, raw: bytes, mentions: str) -> None:
    resp = httpx.post(proxy + path, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    assert mentions in body["error"]["message"]
    if mentions == "model":
        assert body["error"]["param"] == "model"
    assert fakes.anthropic.requests == [] and fakes.codex.requests == []


def test_bad_body_through_sdks(proxy: str) -> None:
    claude = anthropic.Anthropic(base_url=proxy + "/api", api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=42, max_tokens=5, messages=USER)  # type: ignore[arg-type]
    chat = openai.OpenAI(base_url=proxy + "/api/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        chat.chat.completions.create(model=42, messages=USER)  # type: ignore[arg-type]
    assert info.value.param == "model"


# ---------------------------------------------------------------------------------- upstream unreachable


def test_unreachable_upstream_is_502_in_callers_format(make_proxy: MakeProxy, closed_port: int) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    with make_proxy(
        **{
            "plugins.claude_api.base_url": dead,
            "plugins.claude_api.access_token": CLAUDE_TOKEN,
            "plugins.codex.base_url": dead + "/backend-api/codex",
            "plugins.codex.access_token": CODEX_TOKEN,
        }
    ) as url:
        claude = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as ainfo:
            claude.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        assert ainfo.value.status_code == 502
        assert ainfo.value.body["type"] == "error"  # type: ignore[index]
        assert "cannot reach upstream" in str(ainfo.value)
        with (
            pytest.raises(anthropic.APIStatusError) as ainfo,
            claude.messages.stream(model="sonnet", max_tokens=5, messages=USER) as s,  # type: ignore[arg-type]
        ):
            s.get_final_message()
        assert ainfo.value.status_code == 502

        chat = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as oinfo:
            chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
        assert oinfo.value.status_code == 502
        assert "cannot reach upstream" in oinfo.value.message

        codex = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as oinfo:
            list(codex.responses.create(model="gpt-5.4", input="hi", stream=True))
        assert oinfo.value.status_code == 502


# ------------------------------------------------------------------------------------- bounded retry


@pytest.fixture(scope="module")
def retrying(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_proxy(
        fakes,
        tmp_path_factory.mktemp("retrying"),
        **{
            "plugins.claude_api.access_token": CLAUDE_TOKEN,
            "plugins.claude_api.retry_attempts": 1,
            "plugins.claude_api.retry_max_wait": 1.0,
            "plugins.codex.access_token": CODEX_TOKEN,
            "plugins.codex.retry_attempts": 1,
            "plugins.codex.retry_max_wait": 1.0,
        },
    ) as url:
        yield url


@pytest.mark.parametrize("status", [429, 529])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_bounded_retry_once_before_first_byte(retrying: str, fakes: Fakes, status: int, stream: bool) -> None:
    fakes.anthropic.reply_error(status, headers={"retry-after": "0.05"})
    client = anthropic.Anthropic(base_url=retrying + "/api", api_key="x", max_retries=0)
    if stream:
        with client.messages.stream(model="sonnet", max_tokens=5, messages=USER) as s:  # type: ignore[arg-type]
            message = s.get_final_message()
    else:
        message = client.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert message.content
    first, second = fakes.anthropic.requests
    assert first.body == second.body


def test_bounded_retry_on_codex(retrying: str, fakes: Fakes) -> None:
    fakes.codex.reply_error(429, "slow down", headers={"retry-after": "0.05"})
    client = openai.OpenAI(base_url=retrying + "/api/codex/v1", api_key="x", max_retries=0)
    events = [e.type for e in client.responses.create(model="gpt-5.4", input="hi", stream=True)]
    assert events[-1] == "response.completed"
    assert len(fakes.codex.requests) == 2


def test_bounded_retry_gives_up_after_one(retrying: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_error(429, headers={"retry-after": "0.05"}).reply_error(429, "still limited")
    client = anthropic.Anthropic(base_url=retrying + "/api", api_key="x", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert "still limited" in str(info.value)
    assert len(fakes.anthropic.requests) == 2


def test_bounded_retry_skips_long_retry_after(retrying: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_error(429, headers={"retry-after": "30"})
    client = anthropic.Anthropic(base_url=retrying + "/api", api_key="x", max_retries=0)
    started = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert time.monotonic() - started < 1
    assert info.value.response.headers["retry-after"] == "30"
    assert len(fakes.anthropic.requests) == 1


def test_no_retry_by_default(proxy: str, fakes: Fakes) -> None:
    fakes.anthropic.reply_error(529, headers={"retry-after": "0.01"})
    client = anthropic.Anthropic(base_url=proxy + "/api", api_key="x", max_retries=0)
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert len(fakes.anthropic.requests) == 1


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/codex/v1/responses", {"model": "gpt-5.4", "input": "hi"}),
        ("/api/codex/v1/chat/completions", {"model": "gpt-5.4", "messages": USER}),
    ],
    ids=["responses", "chat"],
)
def test_client_leaving_a_non_streaming_call_cancels_upstream(
    proxy: str, fakes: Fakes, path: str, payload: dict[str, object]
) -> None:
    """A non-streaming client served from a slow upstream stream: leaving early cancels the upstream."""
    fakes.codex.reply_text(LONG, delay=0.05)  # the proxy would need ~10 s to collect the answer
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(proxy + path, json=payload, timeout=httpx.Timeout(5, read=0.3))
    closed_at = time.monotonic()
    seen = fakes.watch.wait_for("/responses", timeout=3)
    assert seen is not None, "the fake never saw the proxy drop the upstream request"
    assert seen - closed_at < 0.2, f"upstream cancelled {seen - closed_at:.3f}s after the client left"
