"""Fake OAuth server for both providers (Claude PKCE, ChatGPT/Codex PKCE), deterministic and scriptable.

URL layout of ``create_app()`` (distinct per provider; safe to mount at the root next to the fake APIs):

==============================  ===================================================================
``GET  /oauth/authorize``        Claude authorize: validates the PKCE params and 302-redirects to
                                 ``redirect_uri?code=…&state=…`` (where the user's browser would end)
``GET  /oauth/code/callback``    Claude's manual-paste page: shows ``<code>#<state>`` as text/plain
``POST /v1/oauth/token``         Claude token endpoint, JSON body only: ``authorization_code`` (checks
                                 ``client_id``, ``redirect_uri``, PKCE verifier, and the non-standard
                                 ``state``) and ``refresh_token`` (rotating; a spent token → 400
                                 ``invalid_grant``)
``GET  /codex/oauth/authorize``  Codex authorize (records the extra params, then 302 like Claude's)
``POST /codex/oauth/token``      Codex token endpoint: form-encoded ``authorization_code``; refresh in
                                 JSON (the official CLI) or form; a spent refresh token → 401
                                 ``{"error": {"code": "refresh_token_reused"}}``
``GET  /fake-oauth/state``       counters and settings of both providers, for debugging
==============================  ===================================================================

Script it through ``app.state.oauth`` (a ``FakeOAuth``): ``.claude`` / ``.codex`` are ``FakeProvider``
objects with ``expires_in``, ``refresh_delay``, ``fail_refresh`` / ``fail_refresh_once`` (error modes
``invalid_grant``, ``refresh_token_reused``, ``refresh_token_expired``, ``server_error``, ``cloudflare``),
``fail_authorize`` (redirects with ``error=…``), account data, and the counters ``refresh_count``,
``exchange_count``, ``authorize_count``. ``access_token_valid(token)`` lets a fake upstream check a
bearer. Tokens are numbered (``sk-ant-oat01-fake-0001``, ``rt_fake_0001``...); Codex access and id
tokens are unsigned JWTs (``alg: none``) carrying the ``https://api.openai.com/auth`` claims.
``fake_claude_settings(base, redirect)`` / ``fake_codex_settings(...)`` give ``OAuthSettings`` aimed at
a running instance; ``serve(app)`` runs any ASGI app on a free loopback port inside the current loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ccproxy.auth.oauth import OAuthSettings, claude_oauth_settings, codex_oauth_settings
from ccproxy.auth.pkce import challenge_for

AUTH_CLAIM = "https://api.openai.com/auth"
CLAUDE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"


def make_unsigned_jwt(claims: dict[str, Any]) -> str:
    """``alg: none`` JWT (header.payload. with an empty signature), as Codex test fixtures use."""

    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    state: str
    scope: str


@dataclass
class FakeProvider:
    """One provider's scriptable behaviour and counters."""

    name: str
    client_id: str
    expires_in: int = 3600
    refresh_token_expires_in: int | None = None  # Claude: sent with each token set when not None
    refresh_delay: float = 0.0  # seconds the refresh grant takes (widens race windows in tests)
    fail_refresh: str | None = None  # every refresh fails with this mode until reset
    fail_refresh_once: str | None = None  # the next refresh fails with this mode
    fail_exchange: str | None = None  # the next code exchange fails with this mode
    fail_authorize: str | None = None  # authorize redirects with error=<this>
    account_id: str = "acct-fake-0001"
    user_id: str = "user-fake-0001"
    email: str = "user@example.com"
    plan: str = "max"
    organization_id: str = "org-fake-0001"
    clock: Callable[[], float] = time.time

    authorize_count: int = 0
    exchange_count: int = 0
    refresh_count: int = 0  # successful refreshes
    refresh_attempts: int = 0  # all refresh requests, including refused ones
    last_authorize_params: dict[str, str] = field(default_factory=dict)
    last_token_request: dict[str, Any] = field(default_factory=dict)
    last_token_content_type: str = ""

    _seq: int = 0
    _codes: dict[str, _Grant] = field(default_factory=dict)
    _active_refresh: set[str] = field(default_factory=set)
    _spent_refresh: set[str] = field(default_factory=set)
    _access: dict[str, float] = field(default_factory=dict)  # token -> expires_at

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def access_token_valid(self, token: str) -> bool:
        """True for an access token this fake issued that has not expired or been revoked."""
        exp = self._access.get(token)
        return exp is not None and exp > self.clock()

    def expire_access_tokens(self) -> None:
        """Make every issued access token invalid (a fake upstream then answers 401)."""
        for token in self._access:
            self._access[token] = 0.0

    def revoke_refresh_tokens(self) -> None:
        self._spent_refresh |= self._active_refresh
        self._active_refresh.clear()

    def issue_tokens(self, *, expires_in: int | None = None, scope: str = "") -> dict[str, Any]:
        """A fresh token set (registered as valid), in the provider's token-endpoint shape."""
        n = self._next()
        lifetime = self.expires_in if expires_in is None else expires_in
        now = self.clock()
        if self.name == "claude":
            access = f"sk-ant-oat01-fake-{n:04d}"
            refresh = f"sk-ant-ort01-fake-{n:04d}"
            body: dict[str, Any] = {
                "token_type": "Bearer",
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": lifetime,
                "scope": scope or "user:inference user:profile",
                "account": {"uuid": self.account_id, "email_address": self.email},
                "organization": {"uuid": self.organization_id},
            }
            if self.refresh_token_expires_in is not None:
                body["refresh_token_expires_in"] = self.refresh_token_expires_in
        else:
            auth = {
                "chatgpt_account_id": self.account_id,
                "chatgpt_plan_type": self.plan,
                "chatgpt_user_id": self.user_id,
            }
            access = make_unsigned_jwt(
                {
                    "iss": "https://auth.openai.com",
                    "aud": ["https://api.openai.com/v1"],
                    "sub": self.user_id,
                    "iat": int(now),
                    "exp": int(now) + lifetime,
                    "jti": f"fake-{n:04d}",
                    AUTH_CLAIM: auth,
                }
            )
            id_token = make_unsigned_jwt(
                {
                    "iss": "https://auth.openai.com",
                    "aud": self.client_id,
                    "sub": self.user_id,
                    "email": self.email,
                    "iat": int(now),
                    "exp": int(now) + 3600,
                    AUTH_CLAIM: auth,
                }
            )
            refresh = f"rt_fake_{n:04d}"
            body = {
                "id_token": id_token,
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": lifetime,
            }
        self._access[access] = now + lifetime
        self._active_refresh.add(refresh)
        return body

    def snapshot(self) -> dict[str, Any]:
        return {
            "authorize_count": self.authorize_count,
            "exchange_count": self.exchange_count,
            "refresh_count": self.refresh_count,
            "refresh_attempts": self.refresh_attempts,
            "expires_in": self.expires_in,
            "fail_refresh": self.fail_refresh,
            "last_authorize_params": self.last_authorize_params,
        }

    # ---------------------------------------------------------------------------------- handlers

    async def authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_count += 1
        self.last_authorize_params = q
        problems = []
        if q.get("client_id") != self.client_id:
            problems.append("unknown client_id")
        if q.get("response_type") != "code":
            problems.append("response_type must be code")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problems.append("S256 code_challenge required")
        if not q.get("redirect_uri"):
            problems.append("redirect_uri required")
        if not q.get("state"):
            problems.append("state required")
        if problems:
            return PlainTextResponse("; ".join(problems), status_code=400)
        redirect_uri, state = q["redirect_uri"], q["state"]
        sep = "&" if "?" in redirect_uri else "?"
        if self.fail_authorize:
            params = {
                "error": self.fail_authorize,
                "error_description": "The user denied access",
                "state": state,
            }
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode(params)}", status_code=302)
        code = f"code-{self.name}-{self._next():04d}"
        self._codes[code] = _Grant(
            self.client_id, redirect_uri, q["code_challenge"], state, q.get("scope", "")
        )
        return RedirectResponse(
            f"{redirect_uri}{sep}{urlencode({'code': code, 'state': state})}", status_code=302
        )

    async def manual_callback(self, request: Request) -> Response:
        code = request.query_params.get("code", "")
        state = request.query_params.get("state", "")
        return PlainTextResponse(f"{code}#{state}")

    async def token(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        self.last_token_content_type = ctype
        body: dict[str, Any]
        if ctype == "application/json":
            try:
                parsed = json.loads(await request.body())
            except ValueError:
                return self._oauth_error(400, "invalid_request", "body is not JSON")
            if not isinstance(parsed, dict):
                return self._oauth_error(400, "invalid_request", "body is not a JSON object")
            body = parsed
        elif ctype == "application/x-www-form-urlencoded":
            # parse_qsl, not request.form(): that needs python-multipart, which is not a dependency
            body = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        else:
            return self._oauth_error(400, "invalid_request", f"unsupported content type {ctype!r}")
        self.last_token_request = body
        grant = body.get("grant_type")
        if grant == "authorization_code":
            return self._exchange(body, ctype)
        if grant == "refresh_token":
            return await self._refresh(body)
        return self._oauth_error(400, "unsupported_grant_type", f"grant_type {grant!r}")

    def _exchange(self, body: dict[str, Any], ctype: str) -> Response:
        # Claude's endpoint takes JSON only; Codex's exchange is form-encoded (upstreams.md §1.3, §4.3).
        wanted = "application/json" if self.name == "claude" else "application/x-www-form-urlencoded"
        if ctype != wanted:
            return self._oauth_error(400, "invalid_request", f"code exchange must be {wanted}")
        if self.fail_exchange:
            mode, self.fail_exchange = self.fail_exchange, None
            return self._failure(mode)
        if body.get("client_id") != self.client_id:
            return self._oauth_error(401, "invalid_client", "unknown client_id")
        grant = self._codes.pop(str(body.get("code")), None)
        if grant is None:
            return self._oauth_error(400, "invalid_grant", "Invalid authorization code")
        if body.get("redirect_uri") != grant.redirect_uri:
            return self._oauth_error(
                400, "invalid_grant", "redirect_uri does not match the authorize request"
            )
        verifier = body.get("code_verifier")
        if not isinstance(verifier, str) or challenge_for(verifier) != grant.challenge:
            return self._oauth_error(400, "invalid_grant", "code_verifier does not match the code_challenge")
        if self.name == "claude" and body.get("state") != grant.state:
            return self._oauth_error(400, "invalid_request", "state is missing or does not match")
        self.exchange_count += 1
        expires_in = body.get("expires_in")
        lifetime = int(expires_in) if isinstance(expires_in, int | float) else None
        return JSONResponse(self.issue_tokens(expires_in=lifetime, scope=grant.scope))

    async def _refresh(self, body: dict[str, Any]) -> Response:
        self.refresh_attempts += 1
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        if self.fail_refresh_once:
            mode, self.fail_refresh_once = self.fail_refresh_once, None
            return self._failure(mode)
        if self.fail_refresh:
            return self._failure(self.fail_refresh)
        if body.get("client_id") != self.client_id:
            return self._oauth_error(401, "invalid_client", "unknown client_id")
        token = str(body.get("refresh_token"))
        if token in self._spent_refresh:
            return self._failure("refresh_token_reused" if self.name == "codex" else "invalid_grant")
        if token not in self._active_refresh:
            return self._failure("refresh_token_invalidated" if self.name == "codex" else "invalid_grant")
        # Rotation: the presented refresh token is spent from now on.
        self._active_refresh.discard(token)
        self._spent_refresh.add(token)
        self.refresh_count += 1
        return JSONResponse(self.issue_tokens())

    def _failure(self, mode: str) -> Response:
        if mode == "server_error":
            return JSONResponse(
                {"error": "server_error", "error_description": "temporarily unavailable"}, 500
            )
        if mode == "cloudflare":
            return Response("<html>Just a moment...</html>", status_code=403, media_type="text/html")
        if self.name == "codex" and mode.startswith("refresh_token_"):
            message = {
                "refresh_token_reused": "Your refresh token has already been used to generate a new access "
                "token. Please try signing in again.",
                "refresh_token_expired": "Your refresh token has expired. Please try signing in again.",
            }.get(mode, "Your refresh token was invalidated. Please try signing in again.")
            err = {"message": message, "type": "invalid_request_error", "param": None, "code": mode}
            return JSONResponse({"error": err}, status_code=401)
        return self._oauth_error(400, mode, "Refresh token not found or invalid")

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> Response:
        return JSONResponse({"error": error, "error_description": description}, status_code=status)


@dataclass
class FakeOAuth:
    claude: FakeProvider = field(default_factory=lambda: FakeProvider("claude", CLAUDE_CLIENT_ID))
    codex: FakeProvider = field(
        default_factory=lambda: FakeProvider(
            "codex", CODEX_CLIENT_ID, plan="plus", account_id="acct-codex-0001"
        )
    )

    def provider(self, name: str) -> FakeProvider:
        return self.claude if name == "claude" else self.codex


def create_app(oauth: FakeOAuth | None = None) -> Starlette:
    state = oauth or FakeOAuth()

    async def snapshot(request: Request) -> Response:
        return JSONResponse({"claude": state.claude.snapshot(), "codex": state.codex.snapshot()})

    # Handlers are bound to `state` (not looked up via request.app) so mounting inside another app works.
    routes = [
        Route("/oauth/authorize", state.claude.authorize, methods=["GET"]),
        Route("/oauth/code/callback", state.claude.manual_callback, methods=["GET"]),
        Route("/v1/oauth/token", state.claude.token, methods=["POST"]),
        Route("/codex/oauth/authorize", state.codex.authorize, methods=["GET"]),
        Route("/codex/oauth/token", state.codex.token, methods=["POST"]),
        Route("/fake-oauth/state", snapshot, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.oauth = state
    return app


def fake_claude_settings(base_url: str, redirect_uri: str | None = None, **overrides: Any) -> OAuthSettings:
    """Claude ``OAuthSettings`` aimed at a running fake (manual paste page included)."""
    base = base_url.rstrip("/")
    paths = {
        "authorize_url": f"{base}/oauth/authorize",
        "token_url": f"{base}/v1/oauth/token",
        "manual_redirect_uri": f"{base}/oauth/code/callback",
    }
    return claude_oauth_settings(**_fake_values(paths, redirect_uri, overrides))


def fake_codex_settings(base_url: str, redirect_uri: str | None = None, **overrides: Any) -> OAuthSettings:
    base = base_url.rstrip("/")
    paths = {"authorize_url": f"{base}/codex/oauth/authorize", "token_url": f"{base}/codex/oauth/token"}
    return codex_oauth_settings(**_fake_values(paths, redirect_uri, overrides))


def _fake_values(
    paths: dict[str, str], redirect_uri: str | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    values: dict[str, Any] = {**paths, "timeout_seconds": 10.0}
    if redirect_uri:
        values["redirect_uri"] = redirect_uri
    return {**values, **overrides}


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # in-loop test servers must not take over the test runner's SIGINT handling


@contextlib.asynccontextmanager
async def serve(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in the running loop; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = _QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
