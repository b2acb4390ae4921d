"""Playing a fake upstream's answers: a ``ProviderFake`` renders format-neutral replies (``ccproxy.testing.
scripting``) into its wire format up front, and ``ChunkedResponse`` plays the pre-built chunks (an optional
delay between them, an optional abrupt disconnect). ``ProviderFake`` also routes a fake's HTTP requests to its
handlers and keeps its ``FakeUpstream``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from ccproxy.testing.corpus import get_case, split_frames
from ccproxy.testing.scripting import (
    Completion,
    Conversation,
    CorpusReply,
    ErrorReply,
    FakeLimits,
    FakeUpstream,
    PlanUsage,
    RawReply,
    Reply,
    StreamErrorReply,
    record_request,
)


class ChunkedResponse:
    """An ASGI response of pre-rendered chunks, played with an optional delay and abrupt disconnect.

    The abrupt disconnect returns without the final empty body message: uvicorn then closes the
    connection mid-body (logging "ASGI callable returned without completing response"), which the client
    sees as a truncated chunked body.
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        chunks: Sequence[bytes],
        *,
        delay: float = 0.0,
        disconnect_after: int | None = None,
    ) -> None:
        self.status = status
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.chunks = chunks
        self.delay = delay
        self.disconnect_after = disconnect_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            # Stop playing (e.g. a slow stream) as soon as the client goes away.
            async def watch_disconnect() -> None:
                while True:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch_disconnect)
            await self._play(send)
            group.cancel_scope.cancel()

    async def _play(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers})
        for index, chunk in enumerate(self.chunks):
            if self.disconnect_after is not None and index >= self.disconnect_after:
                return  # abrupt end: no final body message
            if self.delay and (index or len(self.chunks) == 1):
                await anyio.sleep(self.delay)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def json_chunks(body: bytes, reply: Reply) -> tuple[dict[str, str], list[bytes], int | None]:
    """Headers, chunks and disconnect point for a JSON body (a disconnect cuts it in half)."""
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if reply.disconnect_after is not None:
        return headers, [body[: len(body) // 2], body[len(body) // 2 :]], 1
    return headers, [body], None


SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


class ProviderFake(ABC):
    """One fake upstream app: turns format-neutral replies into its own wire format."""

    name: str

    # (path, handler method name, HTTP method) of each route the fake serves
    ROUTES: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, upstream: FakeUpstream | None = None) -> None:
        self.upstream = upstream if upstream is not None else FakeUpstream(self.name)

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route(path, getattr(self, handler), methods=[method]) for path, handler, method in self.ROUTES
        ]

    def app(self) -> Starlette:
        """The fake as an app; its ``FakeUpstream`` is ``app.state.upstream``."""
        app = Starlette(routes=self.routes)
        app.state.upstream = self.upstream
        return app

    @abstractmethod
    def conversation(self, body: Mapping[str, Any]) -> Conversation: ...

    @abstractmethod
    def stream_frames(self, completion: Completion, body: Mapping[str, Any]) -> list[bytes]: ...

    @abstractmethod
    def stream_error_frames(self, reply: StreamErrorReply, body: Mapping[str, Any]) -> list[bytes]: ...

    @abstractmethod
    def error(self, reply: ErrorReply) -> tuple[bytes, dict[str, str]]:
        """Body and headers of an HTTP error in this provider's envelope."""

    def response_json(self, completion: Completion, body: Mapping[str, Any]) -> Any:
        raise NotImplementedError(f"{self.name} only streams")

    def stream_error_as_http(self, reply: StreamErrorReply) -> ErrorReply:
        raise NotImplementedError(f"{self.name} only streams")

    def response_headers(self) -> dict[str, str]:
        """Headers this provider puts on every model response (request ids, rate-limit info)."""
        return {}

    def quota_headers(self, limits: FakeLimits, now: float) -> dict[str, str]:
        """The rate-limit headers of an account in state ``limits`` (the upstream's real names)."""
        return {}

    limit_error_type: str | None = None  # the error type of a subscription 429

    def answer(
        self, request: Request, reply: Reply, body: Mapping[str, Any], stream: bool
    ) -> ChunkedResponse:
        """``respond``, for the account the request's token belongs to: a 429 while it is limited, and its
        rate-limit headers on every answer."""
        now = self.upstream.clock()
        limits = self.upstream.limits_for(request.headers.get("authorization"))
        quota = self.quota_headers(limits, now)
        if limits.limited(now):
            assert limits.limited_until is not None
            wait = str(max(1, int(limits.limited_until - now)))
            limited = ErrorReply(status=429, message="rate limited", error_type=self.limit_error_type)
            data, headers = self.error(limited)
            return ChunkedResponse(429, {**headers, **quota, "retry-after": wait}, [data])
        return self.respond(reply, body, stream, quota)

    def error_response(self, status: int, message: str, error_type: str | None = None) -> ChunkedResponse:
        data, headers = self.error(ErrorReply(status=status, message=message, error_type=error_type))
        return ChunkedResponse(status, headers, [data])

    async def account_read(self, request: Request, body: Callable[[PlanUsage], Any]) -> ChunkedResponse:
        """A ``GET`` of the account's own data (plan usage, workspace check): recorded, so a test sees
        whose token asked; 401 without a Bearer token; the scripted status, else ``body(plan_usage)``."""
        await record_request(self.upstream, request)
        auth = request.headers.get("authorization", "")
        if self.upstream.require_auth and not (auth.lower().startswith("bearer ") and auth[7:].strip()):
            return self.error_response(401, "Missing or invalid Authorization header")
        usage = self.upstream.plan_usage
        if usage.status != 200:
            return self.error_response(usage.status, f"plan usage unavailable ({usage.status})")
        return ChunkedResponse(200, {"content-type": "application/json"}, [orjson.dumps(body(usage))])

    def respond(
        self, reply: Reply, body: Mapping[str, Any], stream: bool, quota: Mapping[str, str] | None = None
    ) -> ChunkedResponse:
        headers = self.response_headers()
        if quota:
            headers.update(quota)
        status = 200
        disconnect = reply.disconnect_after
        if isinstance(reply, CorpusReply):
            case = get_case(reply.case_id)
            status, headers = case.status, {**headers, **case.response_headers()}
            data = case.body()
            chunks = split_frames(data) if case.kind == "stream" else [data]
        elif isinstance(reply, RawReply):
            status = reply.status
            headers["content-type"] = reply.content_type
            chunks = list(reply.body) if isinstance(reply.body, tuple) else [reply.body]
        elif isinstance(reply, ErrorReply):
            status = reply.status
            data, error_headers = self.error(reply)
            extra, chunks, disconnect = json_chunks(data, reply)
            headers = {**headers, **extra, **error_headers}
        elif isinstance(reply, StreamErrorReply) and not stream:
            return self.respond(self.stream_error_as_http(reply), body, stream)
        elif isinstance(reply, StreamErrorReply):
            headers.update(SSE_HEADERS)
            chunks = self.stream_error_frames(reply, body)
        elif isinstance(reply, Completion) and stream:
            headers.update(SSE_HEADERS)
            chunks = self.stream_frames(reply, body)
        elif isinstance(reply, Completion):
            extra, chunks, disconnect = json_chunks(orjson.dumps(self.response_json(reply, body)), reply)
            headers.update(extra)
        else:
            raise TypeError(f"unknown reply {reply!r}")
        headers.update(reply.headers)
        return ChunkedResponse(status, headers, chunks, delay=reply.delay, disconnect_after=disconnect)
