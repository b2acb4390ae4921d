"""Who may use the dashboard, checked by the core middleware before anything else about a request.

Without ``security.auth_token`` the dashboard answers loopback clients only. With a token the page asks
for it once (``POST /dashboard/login``) and the server keeps a session: a random id in an HttpOnly,
SameSite=Strict cookie scoped to ``/dashboard`` (never the token itself), expiring. The cookie is only
accepted under ``/dashboard/``; the JSON endpoints the page reads (``/usage``, ``/health``,
``/permissions``, ``/accounts``) are reached through the alias ``/dashboard/api/<endpoint>``, which the
gate rewrites to the real path once the caller is admitted. A state-changing call (any method but GET and
HEAD) with a session also needs a same-origin ``Origin`` and the session's CSRF token in ``x-csrf-token``.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import Scope

from ccproxy.formats.errors import ErrorInfo
from ccproxy.middleware import is_loopback_client

PREFIX = "/dashboard"
API_PREFIX = "/dashboard/api"
COOKIE = "ccproxy_dashboard"
CSRF_HEADER = b"x-csrf-token"
# Endpoints the page may reach through /dashboard/api/...; nothing else (no proxied model calls).
API_TARGETS = ("/usage", "/health", "/permissions", "/accounts")
_OPEN = frozenset({PREFIX, PREFIX + "/", PREFIX + "/login"})
_STATIC = PREFIX + "/static/"
_SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_SESSIONS = 64


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float


class DashboardGate:
    """The session store and the admission rule for ``/dashboard`` paths (one per app)."""

    def __init__(
        self, auth_token: str | None, session_seconds: float, clock: object = time.monotonic
    ) -> None:
        self.token = auth_token.encode() if auth_token else None
        self.session_seconds = session_seconds
        self.sessions: dict[str, Session] = {}
        self._clock = clock

    def now(self) -> float:
        return self._clock()  # type: ignore[operator, no-any-return]

    def login(self, presented: str) -> tuple[str, Session] | None:
        """A new session for the right token, else None."""
        if self.token is None or not hmac.compare_digest(presented.encode(), self.token):
            return None
        now = self.now()
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:  # bounded: the oldest session goes
            del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(32)
        session = self.sessions[sid] = Session(secrets.token_urlsafe(32), now + self.session_seconds)
        return sid, session

    def logout(self, raw: Mapping[bytes, bytes]) -> None:
        sid = _cookie(raw)
        if sid is not None:
            self.sessions.pop(sid, None)

    def session(self, raw: Mapping[bytes, bytes]) -> Session | None:
        sid = _cookie(raw)
        session = self.sessions.get(sid) if sid is not None else None
        if session is None:
            return None
        if session.expires <= self.now():
            del self.sessions[sid]  # type: ignore[arg-type]
            return None
        return session

    def admit(self, scope: Scope, raw: Mapping[bytes, bytes], has_token: bool) -> ErrorInfo | None:
        """None admits the request (and rewrites an ``/dashboard/api/`` alias); an error refuses it.

        ``has_token``: the request carries the auth token itself (scripts and tests may use that)."""
        path: str = scope["path"]
        if self.token is None:
            if not is_loopback_client(scope):
                return ErrorInfo(
                    403,
                    "permission_error",
                    "the dashboard answers loopback clients only; set security.auth_token to use it "
                    "from another machine",
                )
        elif path not in _OPEN and not path.startswith(_STATIC) and not has_token:
            session = self.session(raw)
            if session is None:
                return ErrorInfo(401, "authentication_error", "log in to the dashboard at /dashboard")
            if scope["method"] not in _SAFE_METHODS:
                csrf = raw.get(CSRF_HEADER, b"")
                if b"origin" not in raw or not hmac.compare_digest(csrf, session.csrf.encode()):
                    return ErrorInfo(403, "permission_error", "missing or invalid CSRF token")
        if path.startswith(API_PREFIX + "/"):
            target = path[len(API_PREFIX) :]
            if not target.startswith(API_TARGETS):
                return ErrorInfo(404, "not_found_error", f"the dashboard has no API {target!r}")
            scope["path"] = target
            scope["raw_path"] = target.encode()
        return None


def _cookie(raw: Mapping[bytes, bytes]) -> str | None:
    header = raw.get(b"cookie")
    if not header:
        return None
    for part in header.decode("latin-1").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name == COOKIE:
            return value
    return None


def set_cookie(sid: str, max_age: float) -> str:
    return f"{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path={PREFIX}; Max-Age={int(max_age)}"


def clear_cookie() -> str:
    return f"{COOKIE}=; HttpOnly; SameSite=Strict; Path={PREFIX}; Max-Age=0"
