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
