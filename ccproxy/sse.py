"""Server-sent events: an incremental parser and the frame writer.

The parser is fed raw network chunks and yields complete events only; an event is dispatched when its
terminating blank line arrives (WHATWG rule), so a truncated final event is never half-delivered.
Every frame the writer produces ends in a blank line.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson


class SSEEvent(NamedTuple):
    event: str | None
    data: str
    raw: bytes  # the complete frame as received, blank line included, for byte-faithful passthrough


class SSEParser:
    """Incremental SSE parser: constant work per byte, no per-event re-scan of old input."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        held = b""
        if buf.endswith(b"\r"):  # may be the first half of a CRLF split across chunks
            buf, held = buf[:-1], b"\r"
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            frame = buf[start : end + 2]
            start = end + 2
            event = _parse_frame(frame)
            if event is not None:
                events.append(event)
        self._buf = buf[start:] + held
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not been terminated yet (non-empty after an abrupt end)."""
        return self._buf


def _parse_frame(frame: bytes) -> SSEEvent | None:
    name: str | None = None
    data_lines: list[str] = []
    for line in frame.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data_lines.append(value)
    if name is None and not data_lines:
        return None  # comment-only frame (keep-alive)
    return SSEEvent(name, "\n".join(data_lines), frame)


def frame(event: str | None, data: object) -> bytes:
    """One SSE frame; ``data`` is serialised with orjson unless it is already bytes or str."""
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = orjson.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
