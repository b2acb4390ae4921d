"""uvicorn's httptools protocol with the limits only the server layer can enforce (docs/decisions.md).

uvicorn buffers the request line and headers before the ASGI app sees anything, and answers parser errors
itself in plain text. This subclass adds, per connection: a cap on header bytes and fields (431), a time
limit for receiving the headers and for each pause in the body (408, then close), load shedding past
``limits.max_connections`` (503 with ``retry-after``; ``/health`` still answered), and JSON for every error
it writes itself. One deadline and at most one timer per connection; per request one parser callback more,
nothing per header or body chunk (body progress is a flag the timer looks at, so a pause is cut off after
between one and two ``body_timeout_seconds``).
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
        # plain attributes for the per-request checks
        self._max_head = self.limits.max_header_bytes
        self._header_timeout = self.limits.header_timeout_seconds
        self._body_timeout = self.limits.body_timeout_seconds
        self._head_bytes = 0  # bytes of the request line and headers being received (0: none yet)
        self._body_progress = False  # body bytes arrived since the timer last looked
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
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            self._body_progress = True
        else:
            if not self._head_bytes:  # the first bytes of a request: its headers' clock starts
                self._watch(self._header_timeout)
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes > self._max_head:
            limit = self._max_head
            self._write_error(431, f"request line and headers over {limit} bytes (limits.max_header_bytes)")

    def handle_websocket_upgrade(self) -> None:
        self._deadline = None  # the WebSocket protocol owns the connection from here
        super().handle_websocket_upgrade()

    def on_headers_complete(self) -> None:  # the one parser callback added per request
        self._head_bytes = 0
        if len(self.headers) > self.limits.max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} header fields (limits.max_headers)")
            raise _Refused
        self._watch(self._body_timeout)
        super().on_headers_complete()

    def _in_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

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
        in_body = self._in_body()
        if in_body and (self._body_progress or self.flow.read_paused):
            # the body is moving (or waits for the app to read it): the pause starts now
            self._body_progress = False
            self._deadline = self.loop.time() + self.limits.body_timeout_seconds
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._expired)
            return
        self._deadline = None
        if in_body and not self.cycle.response_started:
            message = f"request body stalled for {self.limits.body_timeout_seconds} s"
            self._write_error(408, message + " (limits.body_timeout_seconds)")
        elif in_body:  # the answer has started: just cut the connection
            self.transport.close()
        elif self._head_bytes or self.cycle is None:  # headers begun, or nothing at all since connecting
            message = f"request headers not received within {self.limits.header_timeout_seconds} s"
            self._write_error(408, message + " (limits.header_timeout_seconds)")
        # otherwise the connection is idle between requests (uvicorn's keep-alive timer) or being answered
