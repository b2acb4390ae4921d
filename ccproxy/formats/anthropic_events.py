"""The part every translation of an Anthropic stream shares: event dispatch, usage and stop bookkeeping,
and the endings (normal, truncated upstream, outside failure). Subclasses render the target format."""

from __future__ import annotations

from typing import Any

from ccproxy.formats.base import JSON
from ccproxy.formats.errors import ErrorInfo, parse_error, status_for_stream_error

TRUNCATED = "upstream stream ended before the message was complete"


class AnthropicEventStream:
    __slots__ = ("_done", "_stop_details", "_stop_reason", "_usage")

    def __init__(self) -> None:
        self._done = False
        self._usage: JSON = {}
        self._stop_reason: str | None = None
        self._stop_details: Any = None

    # -- what the target format renders

    def _on_message_start(self, message: JSON) -> bytes:
        raise NotImplementedError

    def _delta(self, data: JSON) -> bytes:
        raise NotImplementedError

    def _block_start(self, data: JSON) -> bytes:
        raise NotImplementedError

    def _block_stop(self, data: JSON) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        raise NotImplementedError

    def _error(self, info: ErrorInfo) -> bytes:
        raise NotImplementedError

    # -- the StreamTranslator protocol

    def feed(self, event: str | None, data: JSON) -> bytes:
        if self._done:
            return b""
        kind = event or data.get("type")
        if kind == "content_block_delta":  # by far the most frequent: first
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_stop":
            return self._block_stop(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._usage = dict(message.get("usage") or {})
            return self._on_message_start(message)
        if kind == "message_delta":
            delta = data.get("delta") or {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._stop_details = delta.get("stop_details") or self._stop_details
            self._usage.update(data.get("usage") or {})  # cumulative counts: overwrite, never add
            return b""
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            info = parse_error(200, data)
            return self._error(ErrorInfo(status_for_stream_error(info), info.type, info.message))
        return b""  # ping and event types this translation does not know

    def finish(self) -> bytes:
        if self._done:
            return b""
        if self._stop_reason is not None:
            return self._end()  # only message_stop was lost: the answer is complete
        # The upstream ended before saying why it stopped: the answer is truncated, so say so in-band.
        return self._error(ErrorInfo(502, "api_error", TRUNCATED))

    def fail(self, status: int, error_type: str, message: str) -> bytes:
        if self._done:
            return b""
        return self._error(ErrorInfo(status, error_type, message))
