"""The answer going back: passthrough and translated streams, the streaming response, and the watcher that
cancels a request when its client leaves. Split from ``ccproxy.proxy`` (the request side)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ccproxy.errors import ProxyError
from ccproxy.formats.base import (
    Format,
    StreamTranslator,
)
from ccproxy.formats.errors import (
    ErrorInfo,
    log_late_error,
    normalize_responses_failures,
    parse_error,
    render_stream_error,
    status_for_stream_error,
)
from ccproxy.meter import USAGE_EVENTS, UsageMeter
from ccproxy.plugins import PluginContext, RequestEvent
from ccproxy.responses_store import terminal_response
from ccproxy.sse import SSEEvent, SSEParser
from ccproxy.upstream import UpstreamError, UpstreamResponse

log = structlog.get_logger("ccproxy.proxy")

# Upstream response headers worth handing to the client (rate limits, retry signals, upstream ids).

_TERMINAL = {
    Format.ANTHROPIC: (b"message_stop", b"event: error"),
    Format.RESPONSES: (b"response.completed", b"response.incomplete", b"response.failed"),
    Format.CHAT: (b"[DONE]",),
}


def _timing(started: float, upstream_ttfb: float, upstream_read: float = 0.0) -> bytes:
    own = (time.perf_counter() - started - upstream_ttfb - upstream_read) * 1000
    if not upstream_ttfb:
        return f"proxy;dur={own:.2f}".encode()
    return f'proxy;dur={own:.2f}, upstream;dur={upstream_ttfb * 1000:.2f};desc="upstream TTFB"'.encode()


_STREAM_ERRORS = (UpstreamError, TimeoutError, OSError)


def _reason(exc: BaseException) -> str:
    """Our own client's message (never holds a secret), else the exception's type."""
    return str(exc) if isinstance(exc, UpstreamError) and str(exc) else type(exc).__name__


_LOST = "upstream connection lost mid-stream"


async def _passthrough(
    resp: UpstreamResponse,
    upstream: Format,
    client: Format,
    restore: str | None,
    meter: UsageMeter | None,
) -> AsyncGenerator[bytes, None]:
    """Forward upstream bytes as they come, cut at frame boundaries so an abrupt end stays well-formed."""
    tail = b""
    last = before = b""
    first = True
    normalize_errors = upstream is Format.RESPONSES  # one OpenAI error mapping on every route
    try:
        async for chunk in resp.iter_chunks():
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n\n")
            if cut < 0:
                tail = data
                continue
            out, tail = data[: cut + 2], data[cut + 2 :]
            if first:
                if meter is not None:
                    meter.observe_head(out)  # before the model is put back: the served one
                if restore:
                    out = _rewrite_first_model(out, restore)
                first = False
            if normalize_errors:
                out = normalize_responses_failures(out)
            last, before = out, last
            yield out
    except GeneratorExit:  # the client left: what was seen (the input usage) is still counted
        if meter is not None:
            meter.observe_tail(last, before)
        raise
    except _STREAM_ERRORS as exc:
        if meter is not None:
            meter.observe_tail(last, before)
        log.warning("upstream stream failed", error=_reason(exc))
        yield render_stream_error(client, ErrorInfo(502, "api_error", _LOST))
        return
    if meter is not None:
        # Usage rides on the last frames (message_delta, response.completed): only they are looked at,
        # from the end, so a stream is never scanned byte by byte.
        if tail.strip():
            meter.observe_tail(tail, last)
        else:
            meter.observe_tail(last, before)
    if tail.strip() and any(marker in tail for marker in _TERMINAL[upstream]):
        # The terminal event arrived without its closing blank line: forwarded exactly as it came.
        yield tail
    elif not any(marker in last for marker in _TERMINAL[upstream]):
        # A stream that really ends early: the incomplete event (never dispatched) gives way to an error.
        yield render_stream_error(client, ErrorInfo(502, "api_error", "upstream ended the stream early"))
    elif tail:
        yield tail  # trailing blank lines after the terminal event, kept byte for byte


def _rewrite_first_model(out: bytes, model: str) -> bytes:
    """Put the client's model name back into the first frame (``message_start``) of a passthrough."""
    end = out.find(b"\n\n") + 2
    head, rest = out[:end], out[end:]
    prefix, sep, payload = head.partition(b"data: ")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return out
    message = data.get("message")
    if isinstance(message, dict) and "model" in message:
        message["model"] = model
        return prefix + sep + orjson.dumps(data) + b"\n\n" + rest
    return out


async def _translate_stream(
    resp: UpstreamResponse, translator: StreamTranslator, meter: UsageMeter | None
) -> AsyncGenerator[bytes, None]:
    parser = SSEParser()
    try:
        async for chunk in resp.iter_chunks():
            out = _translate_events(parser.feed(chunk), translator, meter)
            if out:
                yield out
        # A final event without its closing blank line still counts when it arrived whole.
        out = _translate_events(parser.feed(b"\n\n"), translator, meter) if parser.pending.strip() else b""
    except _STREAM_ERRORS as exc:
        log.warning("upstream stream failed", error=_reason(exc))
        yield translator.fail(502, "api_error", _LOST)
        return
    yield out + translator.finish()


def _translate_events(
    events: list[SSEEvent], translator: StreamTranslator, meter: UsageMeter | None
) -> bytes:
    out = b""
    for ev in events:
        if not ev.data or ev.data == "[DONE]":
            continue
        try:
            data = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            continue  # a garbled frame is skipped rather than failing a whole answer
        if meter is not None and (ev.event in USAGE_EVENTS or ev.event is None):
            meter.observe(ev.event, data)
        out += translator.feed(ev.event, data)
    return out


async def _collect(resp: UpstreamResponse, upstream: Format) -> dict[str, Any]:
    """Read a Responses stream to its terminal event and return the final ``response`` object."""
    if upstream is not Format.RESPONSES:
        raise ProxyError(502, "upstream streamed an answer to a non-streaming request")
    parser = SSEParser()
    final: dict[str, Any] | None = None
    async for chunk in resp.iter_chunks():
        for ev in parser.feed(chunk):
            if not ev.data or ev.data == "[DONE]":
                continue
            data = orjson.loads(ev.data)
            kind = data.get("type")
            if kind in ("response.completed", "response.incomplete"):
                final = data.get("response")
            elif kind == "response.failed":
                error = (data.get("response") or {}).get("error") or {}
                info = parse_error(500, {"error": error})
                raise ProxyError(status_for_stream_error(info), info.message, code=info.code)
            elif kind == "error" and final is not None:
                log_late_error(data)  # the answer is already complete
            elif kind == "error":
                info = parse_error(500, {"error": data.get("error") or data})
                raise ProxyError(status_for_stream_error(info), info.message, code=info.code)
    if not isinstance(final, dict):
        raise ProxyError(502, "upstream ended the stream before the response completed")
    if not isinstance(final.get("output"), list):
        final["output"] = []
    return final


class _Stream(Response):
    """A streaming response, sent from the request's own task.

    The request's disconnect watcher stays on for the whole stream: when the client leaves, it cancels this
    task wherever it waits (upstream read or client write), and the upstream connection is closed.
    """

    watcher: _DisconnectWatcher | None = None
    remember: Callable[[dict[str, Any]], None] | None = (
        None  # keeps a Responses answer (previous_response_id)
    )

    def __init__(
        self,
        upstream: UpstreamResponse,
        body: AsyncGenerator[bytes, None],
        headers: dict[str, str],
        event: RequestEvent,
        ctx: PluginContext,
        record: Any,
    ) -> None:
        self.status_code = 200
        self.background = None
        # no content-length: the body is streamed
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]
        self.upstream = upstream
        self.body_iter = body
        self.event = event
        self.plugin_ctx = ctx
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ev, record, watcher = self.event, self.record, self.watcher
        finished = disconnected = False
        last = b""
        # Server-Timing goes in the head, so it carries what is known when the stream starts.
        self.raw_headers.append((b"server-timing", _timing(ev.started, ev.upstream_ttfb)))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.body_iter:
                if chunk:
                    last = chunk
                    if not ev.ttfb:
                        ev.ttfb = time.perf_counter() - ev.started
                    record.chunk(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            finished = True
            if self.remember is not None and (response := terminal_response(last)) is not None:
                self.remember(response)
        except asyncio.CancelledError:
            if watcher is None or not watcher.fired:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # our own cancel: the client left
            disconnected = True
        except BaseException as exc:
            ev.error = ev.error or f"stream failed: {type(exc).__name__}"
            raise
        finally:
            if watcher is not None:
                watcher.stop()
            if finished:
                self.upstream.release()
            else:
                self.upstream.close()
                await self.body_iter.aclose()
            ev.status = 200 if finished else 499 if disconnected else 500
            ev.error = ev.error or ("client disconnected" if disconnected else None)
            ev.duration = time.perf_counter() - ev.started
            self.plugin_ctx.hooks.request_finished(ev)
            record.finish(ev.status, None, self.raw_headers)


class _DisconnectWatcher:
    """Cancels the request's task if the client disconnects, until ``stop()``.

    One watcher task per request, for the upstream call and, on a stream, the whole answer; the answer
    itself runs in the request's own task.
    """

    __slots__ = ("_task", "fired")

    def __init__(self, receive: Receive) -> None:
        self.fired = False
        current = asyncio.current_task()
        assert current is not None

        async def watch() -> None:
            await _wait_disconnect(receive)
            self.fired = True
            current.cancel()

        self._task: asyncio.Task[None] | None = asyncio.ensure_future(watch())

    def stop(self) -> None:
        if self._task is not None:
            # Dropping the reference breaks the watcher → task → CancelledError → frame → watcher cycle,
            # so one request leaves nothing for the garbage collector.
            self._task.cancel()
            self._task = None


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
