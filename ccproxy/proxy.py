"""The data path every provider shares.

    client body (client format) → translation.request → provider.prepare (auth, upstream rules)
        → upstream → passthrough bytes | translation.response | translation.stream → client

Providers only say how to build and authorise the upstream request; everything else (translation,
streaming, errors in the caller's format, 401 refresh-and-retry, bounded 429/529 retry, disconnects,
usage for the lifecycle hooks, request logging) happens here, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ccproxy import logs
from ccproxy.errors import ProxyError, error_response
from ccproxy.formats.base import (
    Format,
    StreamTranslator,
    Translation,
    TranslationContext,
    TranslationError,
    get_translation,
)
from ccproxy.formats.errors import (
    ErrorInfo,
    log_late_error,
    normalize_responses_failures,
    parse_error,
    render_stream_error,
    status_for_stream_error,
)
from ccproxy.formats.fields import depth_error, validate
from ccproxy.meter import USAGE_EVENTS, UsageMeter
from ccproxy.plugins import PluginContext, RequestEvent
from ccproxy.recorder import NULL_RECORD, Recorder
from ccproxy.responses_store import ResponseStore, input_items, terminal_response
from ccproxy.sse import SSEEvent, SSEParser
from ccproxy.upstream import InvalidAnswer, UpstreamClient, UpstreamError, UpstreamResponse

log = structlog.get_logger("ccproxy.proxy")
access_log = structlog.get_logger("ccproxy.access")

# Upstream response headers worth handing to the client (rate limits, retry signals, upstream ids).
_PASS_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "x-codex-", "openai-")
_PASS_EXACT = frozenset({"request-id", "retry-after", "retry-after-ms", "x-should-retry"})
_TERMINAL = {
    Format.ANTHROPIC: (b"message_stop", b"event: error"),
    Format.RESPONSES: (b"response.completed", b"response.incomplete", b"response.failed"),
    Format.CHAT: (b"[DONE]",),
}
_MAX_ERROR_BODY = 1 << 20
# Client headers naming one conversation (Claude Code sends the last one); the path's {session_id} wins.
SESSION_HEADERS = ("session_id", "session-id", "x-session-id", "x-claude-code-session-id")


@dataclass(slots=True)
class Call:
    """One inbound request as a provider sees it. ``body`` is already in the upstream format."""

    request_id: str
    client_format: Format
    upstream_path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]
    stream: bool
    client_model: str | None
    session_id: str | None = None
    raw: bytes | None = None  # the client's own bytes, when the body needed no translation
    state: dict[str, Any] = field(default_factory=dict)
    # Responses clients: called with the finished response object (in the client's shape) to keep it.
    remember: Callable[[dict[str, Any]], None] | None = None


@dataclass(slots=True)
class Outbound:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


class Provider(Protocol):
    name: str
    upstream_format: Format
    retry_attempts: int
    retry_max_wait: float
    responses: ResponseStore | None  # kept Responses, for previous_response_id

    async def prepare(self, call: Call) -> Outbound:
        """Build the authorised upstream request (raises ``ProxyError`` e.g. without credentials)."""
        ...

    async def unauthorized(self, call: Call, failed: Outbound) -> Outbound | None:
        """The upstream said 401: refresh once and rebuild, or ``None`` to give up."""
        ...

    def model_help(self) -> str:
        """The model names and aliases this provider takes, and where to configure more."""
        ...


class Proxy:
    """Shared services for the data path; one per app."""

    def __init__(self, http: UpstreamClient, ctx: PluginContext, recorder: Recorder) -> None:
        self.http = http
        self.ctx = ctx
        self.recorder = recorder

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        provider: Provider,
        client_format: Format,
        upstream_path: str,
    ) -> None:
        """The ASGI entry point of every proxied route (no framework Request object on the hot path)."""
        response = await self.handle(scope, receive, provider, client_format, upstream_path)
        await response(scope, receive, send)

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        provider: Provider,
        client_format: Format,
        upstream_path: str,
    ) -> Response:
        started = time.perf_counter()
        request_id = str(scope.get("state", {}).get("request_id", ""))
        raw = received = await _read_body(receive)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _timed(
                _error(client_format, 400, f"request body is not valid JSON: {exc}", request_id), started
            )
        if not isinstance(body, dict):
            return _timed(
                _error(client_format, 400, "request body must be a JSON object", request_id), started
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _timed(
                _error(client_format, 400, model_problem(model), request_id, param="model"), started
            )
        remember = None
        store = provider.responses if client_format is Format.RESPONSES else None
        if store is not None:
            if "previous_response_id" in body:
                try:
                    body = await store.expand(body)
                except ProxyError as exc:
                    return _timed(error_response(client_format, exc.info, request_id), started)
                raw = b""  # the body is no longer the client's bytes
            if body.get("store") is not False and store.enabled:
                remember = _keeper(store, input_items(body.get("input")))
        translation = _translation(client_format, provider.upstream_format)
        try:
            validate(client_format, provider.upstream_format, body)
            upstream_body = translation.request(body) if translation else body
        except TranslationError as exc:
            return _timed(
                _error(client_format, exc.status, exc.message, request_id, param=exc.param), started
            )
        except orjson.JSONEncodeError:
            deep = depth_error(body)  # a translator wrote a client value nested deeper than orjson can
            return _timed(_error(client_format, 400, deep.message, request_id, param=deep.param), started)
        stream = body.get("stream") is True
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        call = Call(
            request_id,
            client_format,
            upstream_path,
            scope["query_string"].decode("latin-1"),
            headers,
            upstream_body,
            stream,
            model,
            scope.get("path_params", {}).get("session_id"),
            raw if translation is None and raw else None,
            remember=remember,
        )
        event = RequestEvent(
            request_id,
            provider.name,
            path,
            client_format.value,
            provider.upstream_format.value,
            model,
            stream,
            started,
        )
        call.state["event"] = event  # providers may add what only they know (session, cost)
        hooks = self.ctx.hooks
        if hooks.listening:
            route = scope.get("route")
            event.route = getattr(route, "path", path)  # FixedPaths skips the router: path is the template
            event.session_id = call.session_id or _session_header(headers)
            # the client key's name when keys are configured, else the client's product name
            event.client = scope["state"].get("client_key") or client_name(headers.get("user-agent"))
        hooks.request_started(event)
        query = call.query
        record = self.recorder.start(
            request_id, scope["method"], f"{path}?{query}" if query else path, scope["headers"], received
        )
        watcher = _DisconnectWatcher(receive)
        response: Response | None = None
        try:
            response = await self._forward(call, provider, translation, body, event, record)
        except asyncio.CancelledError:
            if not watcher.fired:
                raise
            # The client left before the answer started: the upstream call is already cancelled with it.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            event.status, event.error = 499, "client disconnected"
            response = Response(b"", 499)
        except ProxyError as exc:
            event.status, event.error = exc.info.status, exc.info.message
            response = error_response(client_format, exc.info, request_id, exc.headers)
        except TranslationError as exc:
            event.status, event.error = exc.status, exc.message
            response = _error(client_format, exc.status, exc.message, request_id, param=exc.param)
        finally:
            if not isinstance(response, _Stream):
                watcher.stop()
        if isinstance(response, _Stream):
            response.watcher = watcher  # the same watcher guards the whole stream: no task per stream
            return response  # the stream reports its own end
        _timed(response, started, event.upstream_ttfb, event.upstream_read)
        event.status = event.status or response.status_code
        event.duration = event.ttfb = time.perf_counter() - started
        hooks.request_finished(event)
        record.finish(response.status_code, bytes(response.body), response.raw_headers)
        return response

    async def _forward(
        self,
        call: Call,
        provider: Provider,
        translation: Translation | None,
        client_body: dict[str, Any],
        event: RequestEvent,
        record: Any,
    ) -> Response:
        try:
            outbound = await provider.prepare(call)
        except orjson.JSONEncodeError:
            raise depth_error(client_body) from None  # nested deeper than the body can be written back
        event.model_served = call.body.get("model")
        resp = await self._send(call, provider, outbound, event, record)
        upstream_format = provider.upstream_format
        passthrough = _pass_headers(resp.headers)
        if resp.status >= 400:
            data = await _read_capped(resp)
            event.status = resp.status
            return _upstream_error(
                call.client_format, upstream_format, resp.status, data, call, passthrough, provider
            )
        is_sse = resp.content_type == "text/event-stream"
        ctx = TranslationContext(call.client_model or "", client_body)
        restore = _restore_model(call)
        meter = UsageMeter(upstream_format, event) if self.ctx.hooks.listening else None
        if is_sse and call.stream:
            if translation is None:
                body_iter = _passthrough(resp, upstream_format, call.client_format, restore, meter)
            else:
                body_iter = _translate_stream(resp, translation.stream(ctx), meter)
            stream_response = _Stream(resp, body_iter, passthrough, event, self.ctx, record)
            stream_response.remember = call.remember
            return stream_response
        read_started = time.perf_counter()
        try:
            if is_sse:
                final = await _collect(resp, upstream_format)
                if meter is not None:
                    meter.observe_body(final)
                body = final if translation is None else translation.response(final, ctx)
                if translation is None and restore:
                    body["model"] = call.client_model
                if call.remember is not None:
                    call.remember(body)
                content = orjson.dumps(body)
            else:
                content = await resp.read()
                if translation is not None or restore:
                    parsed = orjson.loads(content)
                    if meter is not None:
                        meter.observe_body(parsed)
                    if translation is not None:
                        parsed = translation.response(parsed, ctx)
                    elif restore:
                        parsed["model"] = call.client_model
                    if call.remember is not None:
                        call.remember(parsed)
                    content = orjson.dumps(parsed)
                elif meter is not None:
                    meter.observe_raw_body(content)
        except _STREAM_ERRORS as exc:
            # Nothing has reached the client yet: the answer is an error in its format, not a 500.
            log.warning("upstream response failed", error=_reason(exc))
            raise ProxyError(502, f"upstream {provider.name} answer broke off: {_reason(exc)}") from None
        except orjson.JSONDecodeError:
            raise ProxyError(502, "upstream answered with a body that is not valid JSON") from None
        finally:
            resp.release()
            event.upstream_read = time.perf_counter() - read_started
        return Response(content, resp.status, headers=passthrough, media_type="application/json")

    async def events(self, call: Call, provider: Provider, path: str) -> AsyncIterator[SSEEvent]:
        """The upstream's SSE events for one call, for front ends that are not HTTP (the WebSocket).

        Raises ``ProxyError`` for an upstream error status; lifecycle hooks see the call like any other.
        """
        event = RequestEvent(
            call.request_id,
            provider.name,
            path,
            call.client_format.value,
            provider.upstream_format.value,
            call.client_model,
            True,
            time.perf_counter(),
        )
        hooks = self.ctx.hooks
        if hooks.listening:
            sid = call.session_id  # the WebSocket's path, made a template again
            event.route = path.replace(f"/{sid}/", "/{session_id}/", 1) if sid else path
            event.session_id = call.session_id or _session_header(call.headers)
            event.client = client_name(call.headers.get("user-agent"))
        hooks.request_started(event)
        meter = UsageMeter(provider.upstream_format, event) if hooks.listening else None
        record = (
            self.recorder.start(
                call.request_id, "WS", path, call.headers.items(), call.raw or orjson.dumps(call.body)
            )
            if self.recorder.enabled
            else NULL_RECORD
        )
        resp: UpstreamResponse | None = None
        try:
            outbound = await provider.prepare(call)
            event.model_served = call.body.get("model")
            resp = await self._send(call, provider, outbound, event, record)
            if resp.status >= 400:
                info = parse_error(resp.status, await _read_capped(resp))
                raise ProxyError(resp.status, info.message, code=info.code, param=info.param)
            parser = SSEParser()
            async for chunk in resp.iter_chunks():
                for ev in parser.feed(chunk):
                    if ev.data and ev.data != "[DONE]":
                        if meter is not None:
                            meter.observe_text(ev.event, ev.data)
                        if not event.ttfb:
                            event.ttfb = time.perf_counter() - event.started
                        record.chunk(ev.raw)
                        yield ev
            event.status = 200
        except ProxyError as exc:
            event.status, event.error = exc.info.status, exc.info.message
            raise
        except _STREAM_ERRORS as exc:
            event.status, event.error = 502, f"upstream stream failed: {type(exc).__name__}"
            raise ProxyError(502, _LOST) from None
        finally:
            if resp is not None:
                resp.close()
            event.status = event.status or 499
            event.duration = time.perf_counter() - event.started
            hooks.request_finished(event)
            record.finish(event.status, None)
            access_log.info(
                "request",
                method="WS",
                path=path,
                status=event.status,
                ms=round(event.duration * 1000, 2),
                request_id=call.request_id,
                **({"reason": event.error} if event.error else {}),
            )

    async def _send(
        self, call: Call, provider: Provider, outbound: Outbound, event: RequestEvent, record: Any
    ) -> UpstreamResponse:
        attempts_left = provider.retry_attempts
        refreshed = False
        while True:
            if logs.DEBUG:
                _debug_sending(call, provider, outbound)
            sent = time.perf_counter()
            try:
                resp = await self.http.send(outbound.method, outbound.url, outbound.headers, outbound.body)
            except (UpstreamError, TimeoutError, OSError) as exc:
                log.debug("upstream unreachable", request_id=call.request_id, error=repr(exc))
                what = "invalid answer from" if isinstance(exc, InvalidAnswer) else "cannot reach"
                raise ProxyError(502, f"{what} upstream {provider.name}: {_reason(exc)}") from None
            event.upstream_ttfb = time.perf_counter() - sent
            event.upstream_status = resp.status
            if logs.DEBUG:
                ms = round(event.upstream_ttfb * 1000, 2)
                log.debug("upstream answered", request_id=call.request_id, status=resp.status, headers_ms=ms)
            if resp.status == 401 and not refreshed:
                refreshed = True
                retry = await provider.unauthorized(call, outbound)
                log.debug("upstream said 401", request_id=call.request_id, refreshed=retry is not None)
                if retry is not None:
                    resp.release()
                    outbound = retry
                    _retried(event, "401")
                    continue
            if resp.status in (429, 529) and attempts_left > 0:
                wait = _retry_wait(
                    resp.headers, provider.retry_attempts - attempts_left, provider.retry_max_wait
                )
                log.debug("upstream busy", request_id=call.request_id, status=resp.status, retry_in=wait)
                if wait is not None:
                    attempts_left -= 1
                    resp.release()
                    _retried(event, str(resp.status))
                    await asyncio.sleep(wait)
                    continue
            if record is not NULL_RECORD:
                record.upstream(outbound.method, outbound.url, outbound.headers, outbound.body)
                resp = record.tap(resp)
            return resp


def model_problem(model: object) -> str:
    """Why a request's ``model`` cannot be served (it is missing, empty or not a string)."""
    if model is None or model == "":
        return "'model' is required: name the model to use (GET <base_url>/v1/models lists them)"
    return f"'model' must be a string, not {type(model).__name__}"


def _debug_sending(call: Call, provider: Provider, outbound: Outbound) -> None:
    log.debug(
        "upstream request",
        request_id=call.request_id,
        provider=provider.name,
        url=outbound.url.partition("?")[0],  # a query may carry a secret; the path says enough
        model=call.client_model,
        upstream_model=call.body.get("model"),
        stream=call.stream,
        session=call.session_id,
        bytes=len(outbound.body),
    )


def _keeper(store: ResponseStore, history: list[Any]) -> Callable[[dict[str, Any]], None]:
    """Keeps a finished response with the whole history that led to it (input items, then output)."""

    def keep(response: dict[str, Any]) -> None:
        output = response.get("output")
        if response.get("status") in ("completed", "incomplete") and isinstance(output, list):
            store.put(str(response.get("id") or ""), [*history, *output], response)

    return keep


def _retried(event: RequestEvent, reason: str) -> None:
    event.retries += 1
    event.retry_reasons = (*event.retry_reasons, reason)


def _session_header(headers: dict[str, str]) -> str | None:
    for name in SESSION_HEADERS:
        if value := headers.get(name):
            return value
    return None


_CLIENT_NAMES: dict[str, str | None] = {}  # user agent → product name; a client sends the same one each time


def client_name(user_agent: str | None) -> str | None:
    """The client's product name from its user agent: ``claude-cli/2.1 (external)`` → ``claude-cli``."""
    if not user_agent:
        return None
    try:
        return _CLIENT_NAMES[user_agent]
    except KeyError:
        name = user_agent.split("/", 1)[0].split(" ", 1)[0][:40] or None
        if len(_CLIENT_NAMES) < 256:  # user agents are client-chosen: the cache stays bounded
            _CLIENT_NAMES[user_agent] = name
        return name


def _timed(
    response: Response, started: float, upstream_ttfb: float = 0.0, upstream_read: float = 0.0
) -> Response:
    """Add ``Server-Timing``: the proxy's own time and the upstream's time to first byte, in ms."""
    response.raw_headers.append((b"server-timing", _timing(started, upstream_ttfb, upstream_read)))
    return response


def _timing(started: float, upstream_ttfb: float, upstream_read: float = 0.0) -> bytes:
    own = (time.perf_counter() - started - upstream_ttfb - upstream_read) * 1000
    if not upstream_ttfb:
        return f"proxy;dur={own:.2f}".encode()
    return f'proxy;dur={own:.2f}, upstream;dur={upstream_ttfb * 1000:.2f};desc="upstream TTFB"'.encode()


def _translation(client: Format, upstream: Format) -> Translation | None:
    if client is upstream:
        return None
    try:
        return get_translation(client, upstream)
    except KeyError:
        raise ProxyError(
            400, f"{client.value} requests cannot be served by a {upstream.value} upstream"
        ) from None


def _error(fmt: Format, status: int, message: str, request_id: str, *, param: str | None = None) -> Response:
    return error_response(fmt, ErrorInfo(status, "", message, param), request_id)


def _pass_headers(headers: Any) -> dict[str, str]:
    return {
        k: v for k, v in headers.items() if (lk := k.lower()) in _PASS_EXACT or lk.startswith(_PASS_PREFIXES)
    }


def _retry_wait(headers: Any, attempt: int, cap: float) -> float | None:
    try:
        wait = float(headers.get("retry-after", "")) if headers.get("retry-after") else 0.5 * 2**attempt
    except ValueError:
        wait = 0.5 * 2**attempt
    return wait if wait <= cap else None


async def _read_capped(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read(_MAX_ERROR_BODY)
    finally:
        resp.release()


def _upstream_error(
    client: Format,
    upstream: Format,
    status: int,
    data: bytes,
    call: Call,
    headers: dict[str, str],
    provider: Provider,
) -> Response:
    # Same format and the right envelope: hand it over untouched. Anything else is re-rendered; an
    # unknown model also learns which names the provider takes.
    unknown_model = status in (400, 404) and _names_model(data, call)
    if client is upstream and not unknown_model and _is_envelope(client, data):
        return Response(data, status, headers=headers, media_type="application/json")
    info = parse_error(status, data)
    if unknown_model:
        info = replace(info, message=f"{info.message}. {provider.model_help()}")
    return error_response(client, info, call.request_id, headers)


def _names_model(data: bytes, call: Call) -> bool:
    """Whether an upstream error is about the model asked for (``model: x``, ``The 'x' model is not ...``)."""
    text = data.decode("utf-8", "replace")
    names = {call.client_model, call.body.get("model")} - {None, ""}
    return "model" in text.lower() and any(str(name) in text for name in names)


def _is_envelope(fmt: Format, data: bytes) -> bool:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    return body.get("type") == "error" if fmt is Format.ANTHROPIC else True


def _restore_model(call: Call) -> str | None:
    """The client's model name when the provider rewrote it (an alias), else ``None``."""
    if call.client_model is not None and call.body.get("model") != call.client_model:
        return call.client_model
    return None


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


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
    return b"".join(parts)


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
