"""The single pure-ASGI middleware in front of every route.

One layer does what would otherwise be a stack: the browser guard (Host allow-list against DNS rebinding,
Origin refusal, JSON-only bodies, optional CORS), the body-size limit and load shedding, request id
(accepted or made, always returned), the auth token check, one access-log line, and the last-resort error
answer in the caller's wire format. The guard reads the raw header bytes once; the common request (a
loopback Host, no Origin, ``application/json``, a content-length) costs a few dict and set lookups.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccproxy.config import LimitsSettings, SecuritySettings
from ccproxy.errors import error_response, failure_reason, format_for
from ccproxy.formats.errors import ErrorInfo
from ccproxy.memory import IdleTrimmer

if TYPE_CHECKING:
    from ccproxy.dashboard.access import DashboardGate
    from ccproxy.keys import KeyGate

log = structlog.get_logger("ccproxy.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request ids: a random prefix per process and a counter. Unique across processes, workers and restarts
# like a random id, without a getrandom() syscall per request (it releases the GIL, and a busy ledger
# thread then takes it: measured as ~4% of the proxy's samples under load).
_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count()


def new_request_id() -> str:
    """32 hex characters, unique per request."""
    return f"{_id_prefix}{next(_id_counter):016x}"


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker never repeats its parent's ids
OPEN_PATHS = frozenset({"/health", "/health/"})
# The offline mode's in-process fakes are the "upstream": guarded like every route, but neither logged nor
# counted as requests in flight (each proxied call would count twice).
MOCK_PREFIX = "/_mock/"
TRUSTED = "ccproxy.trusted"  # scope["state"] key: the caller may see credential details (/health)
_JSON = b"application/json"
_CORS_METHODS = "GET, POST, OPTIONS"
_CORS_EXPOSE = "x-request-id, retry-after, request-id, openai-processing-ms"
_HOST_CACHE_SIZE = 64
LINGER_SECONDS = 2.0
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


class BodyTooLarge(Exception):
    """Raised by the counting ``receive`` when a chunked body passes the limit."""


class HostGuard:
    """Which ``Host`` header values are ours: loopback names and addresses (any port), the bind address,
    ``security.allowed_hosts``; with a wildcard bind also any IP literal (an IP cannot be rebound).

    Values seen to pass are cached (bounded), so the common case is one set lookup."""

    def __init__(self, bind_host: str, allowed: Sequence[str]) -> None:
        self.any = "*" in allowed
        names = {"localhost", bind_host.strip("[]").lower()}
        names.update(a.lower().lstrip("*").lstrip(".") for a in allowed)  # '.example.com' covers the apex
        self.wildcard_bind = bind_host in _WILDCARD_BINDS
        if self.wildcard_bind:
            names.add(socket.gethostname().lower())  # no getfqdn(): a DNS lookup at start-up
        self.suffixes = tuple(a.lower().lstrip("*") for a in allowed if a.startswith((".", "*.")))
        self.names = frozenset(names)
        self.seen: set[bytes] = set()

    def allows(self, raw: bytes) -> bool:
        if raw in self.seen or self.any:
            return True
        ok = self._check(raw)
        if ok and len(self.seen) < _HOST_CACHE_SIZE:
            self.seen.add(raw)
        return ok

    def _check(self, raw: bytes) -> bool:
        try:
            value = raw.decode("ascii").lower()
        except UnicodeDecodeError:
            return False
        if value.startswith("["):  # [v6]:port
            name, bracket, rest = value[1:].partition("]")
            if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
                return False
        else:
            name, colon, port = value.partition(":")
            if colon and not port.isdigit():
                return False
        name = name.rstrip(".")
        if name in self.names or name.endswith(".localhost"):
            return True
        if self.suffixes and name.endswith(self.suffixes):
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.wildcard_bind


_NO_REASON: dict[str, str] = {}


class CoreMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        auth_token: str | None,
        access_log: bool = True,
        security: SecuritySettings | None = None,
        limits: LimitsSettings | None = None,
        bind_host: str = "127.0.0.1",
        loopback_open: frozenset[str] = frozenset(),
        keys: KeyGate | None = None,
        dashboard: DashboardGate | None = None,
    ) -> None:
        security = security if security is not None else SecuritySettings()  # type: ignore[call-arg]
        limits = limits if limits is not None else LimitsSettings()  # type: ignore[call-arg]
        self.app = app
        self.auth_token = auth_token.encode() if auth_token else None
        self.loopback_open = loopback_open  # paths loopback clients may use without the token
        self.keys = keys  # client keys (ccproxy.keys): with any, a request needs a key or the auth token
        self.dashboard = dashboard  # the dashboard's own admission (session cookie, loopback-only)
        self.access_log = access_log
        self.memory = IdleTrimmer()
        self.hosts = HostGuard(bind_host, security.allowed_hosts)
        self.cors_origins = frozenset(o.rstrip("/").lower().encode() for o in security.allowed_origins)
        self.max_body = limits.max_body_bytes
        self.max_in_flight = limits.max_requests_in_flight
        self.retry_after = str(limits.retry_after_seconds)
        self.in_flight = 0

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
        raw: dict[bytes, bytes] = dict(scope["headers"])
        if scope["type"] != "http":  # websocket: the same guard; refusing before accept is an HTTP 403
            if self._refusal(raw) is not None or not self._ws_authorized(scope, raw):
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        mock = path.startswith(MOCK_PREFIX)
        started = time.perf_counter()
        request_id = (raw.get(b"x-request-id") or b"").decode("latin-1")
        if not request_id or not _VALID_REQUEST_ID.match(request_id):
            request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode())]
        cors = b"origin" in raw and raw[b"origin"] in self.cors_origins
        if cors:
            extra += _cors_headers(raw[b"origin"])
        status = 0
        reason = ""  # a failed request's error message, for its access-log line

        async def send_with_id(message: Message) -> None:
            nonlocal status, reason
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            elif status >= 400 and not reason:
                reason = failure_reason(status, message.get("body", b""))
            await send(message)

        counted = False
        admitted = False  # let in by the dashboard's gate: no token or key check after it
        try:
            if self.dashboard is not None and path.startswith("/dashboard"):
                refused = self._refusal(raw) or self.dashboard.admit(
                    scope, raw, self.auth_token is not None and self._authorized(raw)
                )
                if refused is not None:
                    await _answer(scope, receive, send_with_id, raw, request_id, refused, {})
                    return
                admitted = True
                path = scope["path"]  # an /dashboard/api/ alias now names its endpoint
            if cors and _is_preflight(scope, raw) and self._refusal(raw) is None:
                await send_with_id({"type": "http.response.start", "status": 204, "headers": []})
                await send_with_id({"type": "http.response.body", "body": b""})
                return
            problem = self._admission(scope, raw, path, mock, admitted)
            if problem is not None:
                await _answer(scope, receive, send_with_id, raw, request_id, *problem)
                return
            refusal = None if admitted else self._key_refusal(scope, raw, path, mock, request_id)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            if not mock:
                self.in_flight += 1
                counted = True
            counting = self._counting(receive) if b"transfer-encoding" in raw else receive
            await self.app(scope, counting, send_with_id)
        except BodyTooLarge:
            if status == 0:
                info = ErrorInfo(413, "request_too_large", self._too_large())
                await _answer(scope, receive, send_with_id, raw, request_id, info, {"connection": "close"})
        except Exception:
            log.exception("unhandled error", request_id=request_id, path=path)
            if status == 0:  # nothing sent yet: answer in the caller's format
                info = ErrorInfo(500, "api_error", "internal proxy error; see the server log")
                await _answer(scope, receive, send_with_id, raw, request_id, info, {})
        finally:
            if counted:
                self.in_flight -= 1
            if self.access_log and not mock:
                log.info(
                    "request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                    request_id=request_id,
                    **({"reason": reason} if reason else _NO_REASON),
                    # the upstream account that served it, by name (only with several accounts)
                    **({"account": account} if (account := scope["state"].get("account")) else _NO_REASON),
                )

    def _admission(
        self, scope: Scope, raw: Mapping[bytes, bytes], path: str, mock: bool, admitted: bool = False
    ) -> tuple[ErrorInfo, dict[str, str]] | None:
        """Why this HTTP request is refused (and the headers to answer with), or None to serve it.

        The common request (a Host seen before, no Origin, a JSON body with a length) is a few lookups."""
        host = raw.get(b"host")
        if (host is not None and host not in self.hosts.seen) or b"origin" in raw:
            info = self._refusal(raw)
            if info is not None:
                return info, {}
        length = raw.get(b"content-length")
        if length != b"0" and (length is not None or b"transfer-encoding" in raw):
            ctype = raw.get(b"content-type")
            if ctype != _JSON and (ctype is None or ctype.split(b";", 1)[0].strip().lower() != _JSON):
                shown = "none" if ctype is None else repr(ctype.decode("latin-1"))
                message = f"request bodies must be sent as content-type application/json (got {shown})"
                return ErrorInfo(415, "invalid_request_error", message), {}
            if length is not None and (
                len(length) > 18 or not length.isdigit() or int(length) > self.max_body
            ):
                return ErrorInfo(413, "request_too_large", self._too_large()), {"connection": "close"}
        if path in OPEN_PATHS:  # open without the token; only a trusted caller sees credential details
            trusted = admitted or self.auth_token is None or self._authorized(raw)
            scope["state"][TRUSTED] = trusted and is_loopback_client(scope)
            return None
        if (
            not admitted
            and self.keys is None
            and self.auth_token is not None
            and not self._authorized(raw)
            and not self._open_locally(scope)
        ):
            info = ErrorInfo(401, "authentication_error", "missing or invalid ccproxy auth token")
            return info, {"www-authenticate": "Bearer"}
        if self.in_flight >= self.max_in_flight and not mock:
            message = f"ccproxy is at its limit of {self.max_in_flight} requests in flight; retry shortly"
            return ErrorInfo(503, "overloaded_error", message), {"retry-after": self.retry_after}
        return None

    def _refusal(self, raw: Mapping[bytes, bytes]) -> ErrorInfo | None:
        """The Host and Origin checks every route and protocol gets."""
        host = raw.get(b"host")
        if host is not None and not self.hosts.allows(host):
            return ErrorInfo(
                403,
                "permission_error",
                f"host {host.decode('latin-1')!r} is not allowed; add it to security.allowed_hosts "
                "if you reach ccproxy by that name",
            )
        origin = raw.get(b"origin")
        if origin is not None and origin not in self.cors_origins and origin != b"http://" + (host or b""):
            return ErrorInfo(
                403,
                "permission_error",
                f"requests from origin {origin.decode('latin-1')!r} are not allowed; "
                "add it to security.allowed_origins to let that web page call ccproxy",
            )
        return None

    def _too_large(self) -> str:
        return f"request body larger than the {self.max_body}-byte limit (limits.max_body_bytes)"

    def _counting(self, receive: Receive) -> Receive:
        """A ``receive`` that stops a chunked body (no content-length to check up front) at the limit."""
        remaining = self.max_body

        async def counted() -> Message:
            nonlocal remaining
            message = await receive()
            remaining -= len(message.get("body", b""))
            if remaining < 0:
                raise BodyTooLarge
            return message

        return counted

    def _open_locally(self, scope: Scope) -> bool:
        return scope["path"] in self.loopback_open and is_loopback_client(scope)

    def _key_refusal(
        self, scope: Scope, raw: Mapping[bytes, bytes], path: str, mock: bool, request_id: str
    ) -> ASGIApp | None:
        """With client keys configured: the refusal for a request with neither a good key nor the token."""
        if self.keys is None or path in OPEN_PATHS or mock or self._open_locally(scope):
            return None
        if self.auth_token is not None and self._authorized(raw):
            return None
        return self.keys.admit(scope, raw, request_id)

    def _ws_authorized(self, scope: Scope, raw: Mapping[bytes, bytes]) -> bool:
        if self.auth_token is None and self.keys is None:
            return True
        if self.auth_token is not None and self._authorized(raw):
            return True
        return self.keys is not None and self.keys.admit(scope, raw, "") is None

    def _authorized(self, raw: Mapping[bytes, bytes]) -> bool:
        assert self.auth_token is not None
        token = self.auth_token
        # compare every candidate so timing does not reveal which header matched
        matches = [hmac.compare_digest(p, token) for p in presented(raw)]
        return any(matches)


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    raw: Mapping[bytes, bytes],
    request_id: str,
    info: ErrorInfo,
    headers: Mapping[str, str],
) -> None:
    """An error of the middleware's own, in the caller's format.

    Refusing a body the client is still sending (413) lingers like nginx: the answer goes out, the rest of
    the body is read and dropped for up to ``LINGER_SECONDS``, then the connection closes. Closing at once
    with unread data makes the kernel send a reset, which can destroy the answer before the client reads it.
    """
    response = error_response(format_for(scope["path"], decoded(raw)), info, request_id, headers)
    if info.status != 413:
        await response(scope, receive, send)
        return

    async def held(message: Message) -> None:
        await send({**message, "more_body": True} if message["type"] == "http.response.body" else message)

    await response(scope, receive, held)
    with anyio.move_on_after(LINGER_SECONDS):
        while (await receive()).get("more_body"):
            pass
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _cors_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"vary", b"origin"),
        (b"access-control-allow-methods", _CORS_METHODS.encode()),
        (b"access-control-allow-headers", b"*, authorization"),
        (b"access-control-expose-headers", _CORS_EXPOSE.encode()),
        (b"access-control-max-age", b"600"),
    ]


def _is_preflight(scope: Scope, raw: Mapping[bytes, bytes]) -> bool:
    """A browser's CORS preflight: answered before the auth token (browsers never send it on one)."""
    return scope["method"] == "OPTIONS" and b"access-control-request-method" in raw


def is_loopback_client(scope: Scope) -> bool:
    """The TCP peer is a loopback address."""
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def decoded(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw.items()}


def presented(raw: Mapping[bytes, bytes]) -> list[bytes]:
    """The credentials a caller presents: ``x-api-key`` and a Bearer ``authorization``, non-empty ones."""
    found = [raw.get(b"x-api-key", b"")]
    auth = raw.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        found.append(auth[7:].strip())
    return [p for p in found if p]
