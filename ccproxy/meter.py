"""Token usage and the served model, read off an answer as it passes; built only when a plugin listens.

A translated answer is parsed anyway, so the meter reads the parsed events and bodies. A passthrough
answer is never parsed: the meter finds the ``"usage":{...}`` object (and the first ``"model":"..."``)
in the raw bytes and parses only those few hundred bytes. In JSON a ``"`` inside a string is always
escaped, so ``"usage":{`` in the raw bytes is a key, never text; the top-level usage is the last one (it
follows the content and tool inputs in both upstream formats). Anything unexpected falls back to a full
parse, so the figures never depend on the shortcut (``tests/core/test_meter.py`` checks both ways agree
on every recorded answer).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from ccproxy.formats.base import Format
from ccproxy.plugins import RequestEvent, Usage

# The events that carry usage or the served model; the meter sees no other.
USAGE_EVENTS = frozenset(
    {"message_start", "message_delta", "response.completed", "response.incomplete", "response.failed"}
)
_USAGE = b'"usage":'
_MODEL = b'"model":'
_SPACE = b" \t\r\n"
_PARSE_BELOW = 2048  # smaller answers: one full parse is cheaper than the scan


class UsageMeter:
    __slots__ = ("event", "fmt", "usage")

    def __init__(self, fmt: Format, event: RequestEvent) -> None:
        self.fmt = fmt
        self.event = event
        event.usage = self.usage = Usage()  # filled in as the answer passes

    def observe(self, name: str | None, data: dict[str, Any]) -> None:
        """One parsed upstream event."""
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.event.model_served = message.get("model") or self.event.model_served
            self._anthropic(message.get("usage") or {})
        elif kind == "message_delta":
            self._anthropic(data.get("usage") or {})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = data.get("response") or {}
            self.event.model_served = response.get("model") or self.event.model_served
            self._responses(response.get("usage") or {})

    def observe_text(self, name: str | None, data: str) -> None:
        """One upstream SSE event as received (its ``data`` unparsed)."""
        if name in USAGE_EVENTS:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.observe(name, orjson.loads(data))

    def observe_body(self, body: Any) -> None:
        """A parsed upstream JSON answer."""
        if not isinstance(body, dict):
            return
        model = body.get("model")
        if isinstance(model, str):
            self.event.model_served = model
        self._usage(body.get("usage") or {})

    def observe_raw_body(self, content: bytes) -> None:
        """An upstream JSON answer as bytes (passthrough)."""
        if len(content) < _PARSE_BELOW:  # one parse of a small answer is cheaper than the scan
            try:
                body = orjson.loads(content)
            except orjson.JSONDecodeError:
                return
            if isinstance(body, dict):
                model = body.get("model")
                if isinstance(model, str):
                    self.event.model_served = model
                usage = body.get("usage")
                if isinstance(usage, dict):
                    self._usage(usage)
            return
        found = _usage_object(content, 0, len(content))
        if found is None:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.observe_body(orjson.loads(content))
            return
        model = _first_model(content, 0, len(content))
        if model is not None:
            self.event.model_served = model
        self._usage(found)

    def observe_head(self, out: bytes) -> None:
        """The first frames of a passthrough stream: the first one (message_start, response.created)
        names the served model, and Anthropic's carries the input usage."""
        end = out.find(b"\n\n")
        end = len(out) if end < 0 else end
        model = _first_model(out, 0, end)
        if model is not None:
            self.event.model_served = model
        if self.fmt is Format.ANTHROPIC:
            usage = _usage_object(out, 0, end)
            if usage is not None:
                self._anthropic(usage)

    def observe_tail(self, last: bytes, before: bytes) -> None:
        """The last two pieces of a passthrough stream (whole frames): the final usage (message_delta,
        response.completed) is the last usage object, found by searching back from the end."""
        for piece in (last, before):
            usage = _usage_object(piece, 0, len(piece))
            if usage is not None:
                self._usage(usage)
                return

    def _usage(self, usage: dict[str, Any]) -> None:
        if self.fmt is Format.ANTHROPIC:
            self._anthropic(usage)
        else:
            self._responses(usage)

    def _anthropic(self, usage: dict[str, Any]) -> None:
        u = self.usage
        u.input_tokens = usage.get("input_tokens") or u.input_tokens
        u.output_tokens = usage.get("output_tokens") or u.output_tokens
        u.cache_read_tokens = usage.get("cache_read_input_tokens") or u.cache_read_tokens
        u.cache_write_tokens = usage.get("cache_creation_input_tokens") or u.cache_write_tokens

    def _responses(self, usage: dict[str, Any]) -> None:
        u = self.usage
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        u.input_tokens = (usage.get("input_tokens") or 0) - cached
        u.cache_read_tokens = cached
        u.output_tokens = usage.get("output_tokens") or 0
        u.reasoning_tokens = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0


def _usage_object(data: bytes, start: int, end: int) -> dict[str, Any] | None:
    """The last ``"usage":{...}`` object in ``data[start:end]``, parsed; ``None`` if there is none
    (a ``"usage":null`` or ``"usage":"text"`` is passed over) or it does not parse as an object."""
    at = data.rfind(_USAGE, start, end)
    while at >= 0:
        begin = _skip_space(data, at + len(_USAGE), end)
        if data[begin : begin + 1] == b"{":
            break
        at = data.rfind(_USAGE, start, at)
    else:
        return None
    # Usage holds numbers, short strings and small objects: it ends at the first "}" before which as
    # many "{" as "}" have been seen.
    closes, pos = 0, begin
    while True:
        close = data.find(b"}", pos, end)
        if close < 0:
            return None
        closes += 1
        if data.count(b"{", begin, close) == closes:
            break
        pos = close + 1
    try:
        usage = orjson.loads(data[begin : close + 1])
    except orjson.JSONDecodeError:
        return None
    return usage if isinstance(usage, dict) else None


def _first_model(data: bytes, start: int, end: int) -> str | None:
    """The first ``"model":"..."`` string value (a schema's ``"model": {...}`` is passed over)."""
    at = data.find(_MODEL, start, end)
    while at >= 0:
        begin = _skip_space(data, at + len(_MODEL), end)
        if data[begin : begin + 1] == b'"':
            close = data.find(b'"', begin + 1, end)
            if close < 0 or data.find(b"\\", begin + 1, close) >= 0:  # model names hold no escapes
                return None
            return data[begin + 1 : close].decode("utf-8", "replace")
        at = data.find(_MODEL, begin, end)
    return None


def _skip_space(data: bytes, at: int, end: int) -> int:
    while at < end and data[at] in _SPACE:
        at += 1
    return at
