"""The usage meter's raw-bytes shortcut (passthrough answers) agrees with a full parse on every recorded
answer of the conformance corpus, and falls back to a full parse where the shortcut does not apply."""

from __future__ import annotations

import orjson
import pytest

from ccproxy.formats.base import Format
from ccproxy.meter import UsageMeter, observe_body, observe_raw_body
from ccproxy.plugins import RequestEvent
from ccproxy.sse import SSEParser
from ccproxy.testing.corpus import CorpusCase, all_cases, corpus_available, corpus_dir, split_frames

_UPSTREAM = {"anthropic": Format.ANTHROPIC, "openai_responses": Format.RESPONSES}


def _cases(kind: str) -> list[CorpusCase]:
    if not corpus_available():
        return []
    return [c for c in all_cases(kind) if c.format in _UPSTREAM and c.status == 200]


def _event(fmt: Format) -> RequestEvent:
    return RequestEvent("r", "p", "/", "x", fmt.value, "asked", False, 0.0)


def _meter(fmt: Format) -> UsageMeter:
    return UsageMeter(fmt, _event(fmt))


def _skip_without_corpus() -> None:
    if not corpus_available():
        pytest.skip(f"conformance corpus not found at {corpus_dir()} (set CCPROXY_CONFORMANCE_DIR)")


@pytest.mark.parametrize("case", _cases("response"), ids=lambda c: c.id)
def test_raw_body_equals_parsed_body(case: CorpusCase) -> None:
    fmt = _UPSTREAM[case.format]
    raw, parsed = _event(fmt), _event(fmt)
    observe_raw_body(raw, fmt, case.body())
    observe_body(parsed, fmt, case.json())
    assert raw.usage == parsed.usage
    assert raw.model_served == parsed.model_served
    assert raw.usage is not None and raw.usage.output_tokens > 0


@pytest.mark.parametrize("case", _cases("stream"), ids=lambda c: c.id)
@pytest.mark.parametrize("pieces", ["frame by frame", "in one piece"])
def test_raw_stream_head_and_tail_equal_parsed_events(case: CorpusCase, pieces: str) -> None:
    """As the passthrough feeds it: the first piece, then the last two (each piece whole frames)."""
    fmt = _UPSTREAM[case.format]
    raw, parsed = _meter(fmt), _meter(fmt)
    chunks = split_frames(case.body()) if pieces == "frame by frame" else [case.body()]
    raw.observe_head(chunks[0])
    raw.observe_tail(chunks[-1], chunks[-2] if len(chunks) > 1 else b"")
    for ev in SSEParser().feed(case.body() + b"\n\n"):
        parsed.observe_text(ev.event, ev.data)
    assert raw.usage == parsed.usage
    assert raw.event.model_served == parsed.event.model_served


def test_corpus_has_answers_to_compare() -> None:
    _skip_without_corpus()
    assert len(_cases("response")) >= 5 and len(_cases("stream")) >= 5


def test_tool_input_named_usage_does_not_fool_the_shortcut() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-x",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"usage": {"input_tokens": 999}}}],
        "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 2},
    }
    event = _event(Format.ANTHROPIC)
    observe_raw_body(event, Format.ANTHROPIC, orjson.dumps(body))
    assert event.usage is not None
    assert (event.usage.input_tokens, event.usage.output_tokens, event.usage.cache_read_tokens) == (7, 3, 2)
    assert event.model_served == "claude-x"


@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "m", "usage": {"input_tokens": 5, "output_tokens": 1}}',  # spaced: the shortcut applies
        b'{"usage": null, "model": "m", "x": {"usage": "text"}, "output_tokens": 0}',  # no object: full parse
        b'{"model":"m","usage":{"input_tokens":5,"output_tokens":1,"details":{"a":{"b":1}}}}',
        # the last "usage" key is nested: the tail does not parse alone, the full parse decides
        b'{"model":"m","usage":{"input_tokens":5},"metadata":{"usage":{"input_tokens":9}}}',
        b'{"model":"m","usage":{"input_tokens":5},"x":{"usage":{"input_tokens":9},"y":1}}',
        b'{"model":"m\\"x","usage":{"input_tokens":5}}',  # an escape in the model: the full parse's name
    ],
)
def test_unusual_shapes_agree_with_a_full_parse(content: bytes) -> None:
    raw, parsed = _event(Format.ANTHROPIC), _event(Format.ANTHROPIC)
    observe_raw_body(raw, Format.ANTHROPIC, content)
    observe_body(parsed, Format.ANTHROPIC, orjson.loads(content))
    assert raw.usage == parsed.usage and raw.model_served == parsed.model_served


def test_garbage_is_ignored() -> None:
    event = _event(Format.RESPONSES)
    observe_raw_body(event, Format.RESPONSES, b'{"usage":{"input_tokens":')
    assert event.usage is None
    meter = _meter(Format.RESPONSES)
    meter.observe_tail(b'data: {"usage":{"input_tokens":\n\n', b"")
    assert meter.usage is not None and meter.usage.input_tokens == 0


_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x","usage":'
    b'{"input_tokens":9,"cache_read_input_tokens":4,"output_tokens":1}}}\n\n'
)


def test_an_abandoned_stream_keeps_the_input_usage_of_its_first_frame() -> None:
    meter = _meter(Format.ANTHROPIC)
    meter.observe_head(_START + b"event: ping\ndata: {}\n\n")
    meter.observe_tail(b"", b"")  # the client left before message_delta
    assert (meter.usage.input_tokens, meter.usage.cache_read_tokens, meter.usage.output_tokens) == (9, 4, 1)
    assert meter.event.model_served == "claude-x"


def test_an_older_message_delta_without_input_counts_adds_the_first_frame() -> None:
    meter = _meter(Format.ANTHROPIC)
    meter.observe_head(_START)
    delta = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":30}}\n\n'
    meter.observe_tail(b'event: message_stop\ndata: {"type":"message_stop"}\n\n', delta)
    assert (meter.usage.input_tokens, meter.usage.cache_read_tokens, meter.usage.output_tokens) == (9, 4, 30)
