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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ccproxy import logs
from ccproxy.errors import ProxyError, error_response, upstream_error_response
from ccproxy.formats.base import (
    Format,
    Translation,
    TranslationContext,
    TranslationError,
    get_translation,
)
from ccproxy.formats.errors import (
    ErrorInfo,
    parse_error,
)
from ccproxy.formats.fields import depth_error, validate
from ccproxy.meter import UsageMeter, observe_body, observe_later
from ccproxy.plugins import PluginContext, RequestEvent
from ccproxy.recorder import NULL_RECORD, Recorder
from ccproxy.responses_store import ResponseStore, input_items
from ccproxy.sse import SSEEvent, SSEParser
from ccproxy.streaming import (
    _LOST,
    _STREAM_ERRORS,
    _collect,
    _DisconnectWatcher,
    _passthrough,
    _reason,
    _Stream,
    _timing,
    _translate_stream,
)
from ccproxy.upstream import InvalidAnswer, UpstreamClient, UpstreamError, UpstreamResponse

log = structlog.get_logger("ccproxy.proxy")
access_log = structlog.get_logger("ccproxy.access")

# Upstream response headers worth handing to the client (rate limits, retry signals, upstream ids).
_PASS_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "x-codex-", "openai-")
_PASS_EXACT = frozenset({"request-id", "retry-after", "retry-after-ms", "x-should-retry"})
_MAX_ERROR_BODY = 1 << 20
# Moved to another account before the first byte (a 401 only once a refresh did not help).
_FAILOVER = frozenset({401, 429, 529})


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

    def observe(self, call: Call, resp: UpstreamResponse) -> None:
        """Every upstream response head: read the rate-limit headers into the account's state."""
        ...

    async def failover(self, call: Call, resp: UpstreamResponse | None) -> Outbound | None:
        """429/529/401-after-refresh (``resp``) or no connection (``None``): the request rebuilt for the
        next account with room, or ``None``. May raise ``ProxyError`` (every account limited)."""
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
        call.state["scope"] = scope["state"]  # the access log's: which account served it
        hooks = self.ctx.hooks
        if hooks.listening:
            route = scope.get("route")
            event.route = getattr(route, "path", path)  # FixedPaths skips the router: path is the template
            event.session_id = call.session_id
            # the name of the client key that admitted it; else the product name (meter.settle)
            event.key = event.client = scope["state"].get("client_key")
            event.headers = headers
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
            asked = {call.client_model, call.body.get("model")}
            return upstream_error_response(
                call.client_format,
                upstream_format,
                resp.status,
                data,
                call.request_id,
                passthrough,
                asked,
                provider.model_help,
            )
        is_sse = resp.content_type == "text/event-stream"
        ctx = TranslationContext(call.client_model or "", client_body)
        restore = _restore_model(call)
        listening = self.ctx.hooks.listening  # someone reads the usage: the meter runs
        if is_sse and call.stream:
            meter = UsageMeter(upstream_format, event) if listening else None
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
                if listening:
                    observe_body(event, upstream_format, final)
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
                    if listening:
                        observe_body(event, upstream_format, parsed)
                    if translation is not None:
                        parsed = translation.response(parsed, ctx)
                    elif restore:
                        parsed["model"] = call.client_model
                    if call.remember is not None:
                        call.remember(parsed)
                    content = orjson.dumps(parsed)
                elif listening:
                    observe_later(event, upstream_format, content)
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
            event.session_id = call.session_id
            event.key = event.client = call.state.get("client_key")
            event.headers = call.headers
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
                if (moved := await provider.failover(call, None)) is not None:
                    outbound, refreshed = moved, False
                    _retried(event, "connect")
                    continue
                what = "invalid answer from" if isinstance(exc, InvalidAnswer) else "cannot reach"
                raise ProxyError(502, f"{what} upstream {provider.name}: {_reason(exc)}") from None
            event.upstream_ttfb = time.perf_counter() - sent
            event.upstream_status = resp.status
            provider.observe(call, resp)
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
            if resp.status in _FAILOVER and (resp.status != 401 or refreshed):
                try:
                    moved = await provider.failover(call, resp)
                except ProxyError:
                    resp.release()
                    raise
                if moved is not None:
                    resp.release()
                    outbound, refreshed = moved, False
                    _retried(event, str(resp.status))
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


def _timed(
    response: Response, started: float, upstream_ttfb: float = 0.0, upstream_read: float = 0.0
) -> Response:
    """Add ``Server-Timing``: the proxy's own time and the upstream's time to first byte, in ms."""
    response.raw_headers.append((b"server-timing", _timing(started, upstream_ttfb, upstream_read)))
    return response


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


def _restore_model(call: Call) -> str | None:
    """The client's model name when the provider rewrote it (an alias), else ``None``."""
    if call.client_model is not None and call.body.get("model") != call.client_model:
        return call.client_model
    return None


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
