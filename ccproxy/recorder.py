"""Raw exchange capture: the one mechanism behind ``logging.verbose_api`` and the raw HTTP logger.

The data path hands every proxied request to a record, which keeps both legs as they crossed the wire:
client → ccproxy (request line, headers, body) and ccproxy → client (status, headers, body or stream),
ccproxy → upstream and upstream → ccproxy. When the request ends, the record becomes an ``Exchange``:
``logging.verbose_api`` logs it (secrets redacted), and plugins implementing the ``ccproxy_http_exchange``
hook (the ``raw_http_logger`` plugin writes it as raw HTTP files) receive it. When neither is on, the
recorder hands out a shared no-op record, so the hot path pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ccproxy.logs import redact, redact_headers, redact_text
from ccproxy.upstream import UpstreamResponse

if TYPE_CHECKING:
    from ccproxy.plugins import Hooks

log = structlog.get_logger("ccproxy.api")
MAX_BODY_BYTES = 1 << 20  # kept per body and leg; the rest is counted, not kept


@dataclass(slots=True)
class HttpMessage:
    """One HTTP message as it crossed the wire (the body capped at ``MAX_BODY_BYTES``)."""

    start_line: str
    headers: list[tuple[str, str]]
    parts: list[bytes] = field(default_factory=list)
    size: int = 0  # the whole body's size, kept or not

    def add(self, data: bytes) -> None:
        kept = self.size
        self.size += len(data)
        if kept < MAX_BODY_BYTES:
            self.parts.append(data if kept + len(data) <= MAX_BODY_BYTES else data[: MAX_BODY_BYTES - kept])

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


@dataclass(slots=True)
class Exchange:
    """Both legs of one proxied request, handed to ``ccproxy_http_exchange`` hooks when it ends."""

    request_id: str
    started: float  # wall clock (time.time())
    duration: float
    client_request: HttpMessage
    client_response: HttpMessage | None = None
    upstream_request: HttpMessage | None = None
    upstream_response: HttpMessage | None = None


def status_line(status: int, version: str = "1.1") -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/{version} {status} {reason}".rstrip()


def _pairs(headers: Iterable[tuple[Any, Any]]) -> list[tuple[str, str]]:
    return [
        (
            k.decode("latin-1") if isinstance(k, bytes) else k,
            v.decode("latin-1") if isinstance(v, bytes) else v,
        )
        for k, v in headers
    ]


class _NullRecord:
    __slots__ = ()

    def upstream(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        return None

    def tap(self, resp: UpstreamResponse) -> UpstreamResponse:
        return resp

    def chunk(self, data: bytes) -> None:
        return None

    def finish(self, status: int, body: bytes | None, headers: Iterable[tuple[Any, Any]] = ()) -> None:
        return None


NULL_RECORD = _NullRecord()


class _Tapped(UpstreamResponse):
    """The upstream response, with every body chunk also kept by the record."""

    def __init__(self, resp: UpstreamResponse, message: HttpMessage) -> None:
        self.__dict__.update(resp.__dict__)
        self._message = message

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in super().iter_chunks():
            self._message.add(chunk)
            yield chunk


class Record:
    __slots__ = ("_clock", "_recorder", "exchange")

    def __init__(self, recorder: Recorder, exchange: Exchange) -> None:
        self._recorder = recorder
        self._clock = time.perf_counter()
        self.exchange = exchange

    def upstream(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        """The request as the upstream client writes it (the last attempt, after any retry)."""
        _, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        lines = [("host", authority)]
        lines += [(k, v) for k, v in headers.items() if k not in ("host", "content-length")]
        lines.append(("content-length", str(len(body))))
        message = HttpMessage(f"{method} {slash + path if slash else '/'} HTTP/1.1", lines)
        message.add(body)
        self.exchange.upstream_request = message

    def tap(self, resp: UpstreamResponse) -> UpstreamResponse:
        message = HttpMessage(status_line(resp.status), list(resp.headers.items()))
        self.exchange.upstream_response = message
        return _Tapped(resp, message)

    def chunk(self, data: bytes) -> None:
        ex = self.exchange
        if ex.client_response is None:
            ex.client_response = HttpMessage("", [])
        ex.client_response.add(data)

    def finish(self, status: int, body: bytes | None, headers: Iterable[tuple[Any, Any]] = ()) -> None:
        ex = self.exchange
        response = ex.client_response or HttpMessage("", [])
        response.start_line = status_line(status)
        response.headers = _pairs(headers)
        if body is not None:
            response.add(body)
        ex.client_response = response
        ex.duration = time.perf_counter() - self._clock
        self._recorder.write(ex)


class Recorder:
    def __init__(self, *, verbose: bool, hooks: Hooks | None = None) -> None:
        self.verbose = verbose
        self.hooks = hooks

    @property
    def enabled(self) -> bool:
        return self.verbose or (self.hooks is not None and self.hooks.capturing)

    def start(
        self, request_id: str, method: str, target: str, headers: Iterable[tuple[Any, Any]], body: bytes
    ) -> Record | _NullRecord:
        if not self.enabled:
            return NULL_RECORD
        message = HttpMessage(f"{method} {target} HTTP/1.1", _pairs(headers))
        message.add(body)
        return Record(self, Exchange(request_id, time.time(), 0.0, message))

    def write(self, exchange: Exchange) -> None:
        if self.verbose:
            log.info("api exchange", **verbose_fields(exchange))
        if self.hooks is not None:
            self.hooks.http_exchange(exchange)


def verbose_fields(ex: Exchange) -> dict[str, Any]:
    """The log line of ``logging.verbose_api``: bodies as JSON where they parse, everything redacted."""
    request = ex.client_request
    response = ex.client_response
    fields: dict[str, Any] = {
        "request_id": ex.request_id,
        "request_line": request.start_line,
        "headers": redact_headers(dict(request.headers)),
        "request": _body(request.body),
        "status": response.start_line if response else None,
        "response": _body(response.body) if response else None,
        "ms": round(ex.duration * 1000, 2),
    }
    if ex.upstream_response is not None:
        fields["upstream_status"] = ex.upstream_response.start_line
    return fields


def _body(data: bytes) -> Any:
    try:
        return redact(orjson.loads(data))
    except orjson.JSONDecodeError:
        return redact_text(data.decode("utf-8", "replace")) if data else None
