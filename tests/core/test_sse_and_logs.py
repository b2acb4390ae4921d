"""The SSE parser/writer and secret redaction, without I/O."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from ccproxy.logs import configure, redact, redact_headers, redact_text
from ccproxy.sse import DONE, SSEParser, frame

STREAM = (
    b'event: message_start\ndata: {"type":"message_start"}  \n\n'
    b": keep-alive comment\n\n"
    b'event: ping\r\ndata: {"type":"ping"}\r\n\r\n'
    b"data: first line\ndata: second line\n\n"
    b'event: message_stop\ndata: {"type":"message_stop"}'
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_parser_yields_complete_events_whatever_the_chunking(size: int) -> None:
    parser = SSEParser()
    events = []
    for start in range(0, len(STREAM), size):
        events.extend(parser.feed(STREAM[start : start + size]))
    assert [e.event for e in events] == ["message_start", "ping", None]
    assert json.loads(events[0].data) == {"type": "message_start"}  # trailing spaces tolerated
    assert events[2].data == "first line\nsecond line"
    # the last frame has no blank line: not dispatched, kept as pending
    assert parser.pending.startswith(b"event: message_stop")


def test_raw_frame_is_kept_for_passthrough() -> None:
    events = SSEParser().feed(b"event: a\ndata: 1\n\n")
    assert events[0].raw == b"event: a\ndata: 1\n\n"


def test_frame_writer_terminates_every_frame() -> None:
    assert frame("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert frame(None, b"[DONE]") == DONE
    assert frame(None, "x") == b"data: x\n\n"


def test_redaction_of_keys_and_values() -> None:
    data = {
        "authorization": "Bearer abcdefghijklmnop",
        "x-api-key": "sk-ant-api03-abcdefghijkl",
        "nested": {"refresh_token": "rt-123456789", "note": "token sk-ant-oat01-zzzzzzzzzzzz in text"},
        "list": ["Bearer qwertyuiopasdf", "plain"],
        "jwt": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "count": 3,
    }
    out = redact(data)
    text = json.dumps(out)
    for secret in (
        "abcdefghijklmnop",
        "sk-ant-api03",
        "rt-123456789",
        "zzzzzzzzzzzz",
        "qwertyuiopasdf",
        "eyJzdWIiOiJ4In0",
    ):
        assert secret not in text
    assert out["count"] == 3 and out["list"][1] == "plain"
    assert redact_headers({"Authorization": "Bearer abcdefghijk", "accept": "x"}) == {
        "Authorization": "***",
        "accept": "x",
    }
    assert redact_text("no secrets here") == "no secrets here"


def test_structlog_output_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")
    structlog.get_logger("t").info(
        "calling", authorization="Bearer abcdefghijklmnopq", detail="got sk-ant-oat01-secretsecretsecret back"
    )
    logging.getLogger("t").handlers.clear()
    err = capsys.readouterr().err
    assert "abcdefghijklmnopq" not in err and "secretsecretsecret" not in err and "calling" in err


def test_usage_counters_are_not_secrets() -> None:
    body = {
        "max_tokens": 100,
        "max_output_tokens": 5,
        "budget_tokens": 1024,
        "usage": {
            "input_tokens": 3,
            "output_tokens": 4,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 6,
            "output_tokens_details": {"reasoning_tokens": 1},
        },
        "access_token": "at-1",
        "refresh_token": "rt-1",
        "id_token": "it-1",
        "api-key": "k-1",
        "client_secret": "cs-1",
        "sessionKey": "sk-1",
        "password": "pw",
    }
    out = redact(body)
    assert out["max_tokens"] == 100 and out["budget_tokens"] == 1024 and out["max_output_tokens"] == 5
    assert out["usage"] == body["usage"]
    for name in (
        "access_token",
        "refresh_token",
        "id_token",
        "api-key",
        "client_secret",
        "sessionKey",
        "password",
    ):
        assert out[name] == "***", name
    # the same in free text (a JSON fragment in a message)
    text = redact_text('{"max_tokens": 100, "input_tokens": 5, "refresh_token": "rt-secret"}')
    assert text == '{"max_tokens": 100, "input_tokens": 5, "refresh_token": "***"}'


def test_secret_headers_by_name_pattern() -> None:
    headers = {
        "authorization": "Bearer a",
        "proxy-authorization": "Basic b",
        "x-api-key": "c",
        "api-key": "d",
        "chatgpt-token": "e",
        "cookie": "f",
        "set-cookie": "g",
        "x-acme-session-credential": "h",
        "x-custom-secret": "i",
        "openai-organization": "org-1",
        "x-trace": "sk-ant-oat01-looksliketoken",  # an innocent name with a token-shaped value
        "anthropic-version": "2023-06-01",
    }
    out = redact_headers(headers)
    assert [k for k, v in out.items() if v == "***"] == [*list(headers)[:9], "x-trace"]
    assert out["openai-organization"] == "org-1" and out["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize(
    "line",
    [
        "< api-key: abcdef123",  # websockets' handshake dump at debug level
        "< chatgpt-token: abcdef123",
        "< X-Acme-Auth: abcdef123",
        "(b'x-api-key', b'abcdef123')",  # an ASGI scope's repr
        "Authorization: Basic abcdef123",
        "token=abcdef123&state=x",
        "x-trace: sk-abcdef123",
        "id eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.abcdef123",
    ],
)
def test_secret_values_in_text(line: str) -> None:
    out = redact_text(line)
    assert "abcdef123" not in out and "***" in out


def test_stdlib_and_uvicorn_records_share_the_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    configure("debug", "json")
    try:
        logging.getLogger("uvicorn.error").debug("< chatgpt-token: %s", "tok-abcdef123456")
        logging.getLogger("uvicorn.error").info("Application startup complete.")
        structlog.get_logger("ccproxy").debug("upstream request", url="http://x/v1/messages")
        try:
            raise RuntimeError("failed with Bearer abcdefghijklmnop")
        except RuntimeError:
            logging.getLogger("asyncio").exception("task failed")
    finally:
        configure("info", "json")
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object: no plain text mixed in
    assert [r["event"] for r in records][:3] == [
        "< chatgpt-token: ***",
        "Application startup complete.",
        "upstream request",
    ]
    assert records[0]["logger"] == "uvicorn.error" and records[0]["level"] == "debug"
    assert "RuntimeError" in records[3]["exception"] and "abcdefghijklmnop" not in lines[3]


def test_debug_flag_follows_the_level() -> None:
    from ccproxy import logs

    configure("debug", "json")
    assert logs.DEBUG
    configure("info", "json")
    assert not logs.DEBUG
