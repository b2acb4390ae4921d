"""The single pure-ASGI middleware in front of every route.

One layer does what would otherwise be a stack: request id (accepted or made, always returned), the auth
token check, one access-log line, and the last-resort error answer in the caller's wire format.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccproxy.errors import error_response, format_for
from ccproxy.formats.errors import ErrorInfo
from ccproxy.memory import IdleTrimmer

if TYPE_CHECKING:
    from ccproxy.keys import KeyGate

log = structlog.get_logger("ccproxy.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OPEN_PATHS = frozenset({"/health", "/health/"})
# The offline mode's in-process fakes are the "upstream", not part of the proxy's own surface.
UNGUARDED_PREFIX = "/_mock/"


class CoreMiddleware:
    def __init__(
        self, app: ASGIApp, *, auth_token: str | None, access_log: bool = True, keys: KeyGate | None = None
    ) -> None:
        self.app = app
        self.auth_token = auth_token.encode() if auth_token else None
        self.keys = keys  # client keys (ccproxy.keys): with any, a request needs a key or the auth token
        self.access_log = access_log
        self.memory = IdleTrimmer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        self.memory.started()
        try:
            await self._serve(scope, receive, send)
        finally:
            self.memory.finished()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            guarded = scope["type"] == "websocket" and (self.auth_token or self.keys) is not None
            if guarded and not self._ws_authorized(scope, _headers(scope)):
                await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
                return
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(UNGUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")
                break
        if not request_id or not _VALID_REQUEST_ID.match(request_id):
            request_id = secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        rid_header = (b"x-request-id", request_id.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            if self.keys is not None and path not in OPEN_PATHS:
                headers = _headers(scope)
                if self.auth_token is None or not self._authorized(headers):
                    refusal = self.keys.admit(scope, headers, request_id)
                    if refusal is not None:
                        await refusal(scope, receive, send_with_id)
                        return
            elif self.auth_token is not None and path not in OPEN_PATHS:
                headers = _headers(scope)
                if not self._authorized(headers):
                    fmt = format_for(path, headers)
                    info = ErrorInfo(401, "authentication_error", "missing or invalid ccproxy auth token")
                    response = error_response(fmt, info, request_id, {"www-authenticate": "Bearer"})
                    await response(scope, receive, send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", request_id=request_id, path=path)
            if status == 0:  # nothing sent yet: answer in the caller's format
                fmt = format_for(path, _headers(scope))
                info = ErrorInfo(500, "api_error", "internal proxy error; see the server log")
                await error_response(fmt, info, request_id)(scope, receive, send_with_id)
        finally:
            if self.access_log:
                log.info(
                    "request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                    request_id=request_id,
                )

    def _ws_authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self.auth_token is not None and self._authorized(headers):
            return True
        return self.keys is not None and self.keys.admit(scope, headers, "") is None

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.auth_token is not None
        token = self.auth_token
        # compare every candidate so timing does not reveal which header matched
        matches = [hmac.compare_digest(p.encode(), token) for p in presented(headers)]
        return any(matches)


def presented(headers: dict[str, str]) -> list[str]:
    """The credentials a caller presents: ``x-api-key`` and a Bearer ``authorization``, non-empty ones."""
    found = [headers.get("x-api-key", "")]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    return [p for p in found if p]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
