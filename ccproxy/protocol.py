"""uvicorn's httptools protocol with the limits only the server layer can enforce (docs/decisions.md).

uvicorn buffers the request line and headers before the ASGI app sees anything, and answers parser errors
itself in plain text. This subclass adds, per connection: a cap on header bytes and fields (431), a time
limit for receiving the headers and for each pause in the body (408, then close), load shedding past
``limits.max_connections`` (503 with ``retry-after``; ``/health`` still answered), and JSON for every error
it writes itself. One deadline and at most one timer per connection; nothing per body chunk but a clock read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from ccproxy.config import LimitsSettings
from ccproxy.errors import error_response, format_for
from ccproxy.formats.errors import ErrorInfo, render_error
from ccproxy.middleware import OPEN_PATHS

_ERROR_TYPES = {408: "invalid_request_error", 431: "invalid_request_error", 503: "overloaded_error"}


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; ``send_400_response`` then answers ``status``."""


class LimitedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: LimitsSettings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits if limits is not None else LimitsSettings()  # type: ignore[call-arg]
        self._in_head = True  # receiving a request line and headers (or waiting for them)
        self._head_bytes = 0
        self._head_fields = 0
        self._refusal: tuple[int, str] | None = None
        self._deadline: float | None = None  # when the current phase (headers, or a body pause) times out
        self._timer: asyncio.TimerHandle | None = None
        self._over_capacity = False

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_capacity = len(self.connections) > self.limits.max_connections
        self._watch(self.limits.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            limit = self.limits.max_header_bytes
            self._write_error(431, f"request line and headers over {limit} bytes (limits.max_header_bytes)")

    def handle_websocket_upgrade(self) -> None:
        self._deadline = None  # the WebSocket protocol owns the connection from here
        super().handle_websocket_upgrade()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a new request on a kept-alive connection
            self._watch(self.limits.header_timeout_seconds)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} header fields (limits.max_headers)")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = self._head_fields = 0
        self._watch(self.limits.body_timeout_seconds)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self.limits.body_timeout_seconds
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._deadline = None
        super().on_message_complete()

    # -- answers written by the server layer

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._over_capacity and cycle.scope["path"] not in OPEN_PATHS:
            app = self._shed
        super()._start_asgi_task(cycle, app)

    async def _shed(self, scope: Any, receive: Any, send: Any) -> None:
        message = f"ccproxy is at its limit of {self.limits.max_connections} connections; retry shortly"
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        extra = {"retry-after": str(self.limits.retry_after_seconds), "connection": "close"}
        info = ErrorInfo(503, "overloaded_error", message)
        await error_response(format_for(scope["path"], headers), info, None, extra)(scope, receive, send)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, in JSON (and our own refusals through it)."""
        status, message = self._refusal or (400, f"malformed HTTP request: {msg}")
        self._refusal = None
        self._write_error(status, message)

    def _write_error(self, status: int, message: str) -> None:
        if self.transport.is_closing():
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers or ()}
        path = (getattr(self, "url", b"") or b"").split(b"?", 1)[0].decode("latin-1")
        info = ErrorInfo(status, _ERROR_TYPES.get(status, "invalid_request_error"), message)
        status, body = render_error(format_for(path, headers), info)
        data = orjson.dumps(body)
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(data),
                    b"connection: close\r\n\r\n",
                    data,
                )
            )
        )
        self.transport.close()

    # -- slow clients

    def _watch(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app has not read what we have: not the client's delay
            self._deadline = self.loop.time() + self.limits.body_timeout_seconds
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._expired)
            return
        self._deadline = None
        if self._in_head:
            message = f"request headers not received within {self.limits.header_timeout_seconds} s"
            self._write_error(408, message + " (limits.header_timeout_seconds)")
        elif self.cycle is not None and not self.cycle.response_started:
            message = f"request body stalled for {self.limits.body_timeout_seconds} s"
            self._write_error(408, message + " (limits.body_timeout_seconds)")
        else:  # the answer has started: just cut the connection
            self.transport.close()
