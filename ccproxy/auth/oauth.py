"""OAuth client for both providers: settings, authorize URL, code exchange, refresh.

The two providers differ only in constants and encodings (Claude: JSON exchange with a non-standard
``state``; Codex: form-encoded exchange, JSON refresh), which ``OAuthSettings`` carries. Token endpoint
answers are parsed defensively and every failure becomes a ``CredentialError`` whose message never
contains a token (the server's own description is scrubbed of the secrets we sent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from ccproxy.auth.credential import CredentialError
from ccproxy.network import NetworkConfigError, ProxyConfig, ssl_context

if TYPE_CHECKING:  # aiohttp is imported on first use: the proxy's start-up never pays for it
    import aiohttp
from ccproxy.auth.pkce import PKCE

# Codes after which the same refresh token will never work again: a new login is needed.
# (Codex: refresh_token_expired / _reused / _invalidated; generic OAuth: invalid_grant and client errors.)
PERMANENT_ERROR_CODES = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "refresh_token_expired",
        "refresh_token_reused",
        "refresh_token_invalidated",
    }
)


class OAuthSettings(BaseModel):
    """Everything provider-specific about the OAuth flow. All URLs are overridable (tests, host moves)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["claude", "codex"]
    client_id: str
    authorize_url: str
    token_url: str
    redirect_uri: str
    scopes: list[str]
    # Extra authorize query parameters, in order (Claude: code=true; Codex: the simplified-flow flags).
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)
    # Encoding of the authorization-code exchange and of the refresh request.
    token_encoding: Literal["json", "form"] = "json"
    refresh_encoding: Literal["json", "form"] = "json"
    # Claude requires the (non-standard) state in the exchange body.
    send_state_in_exchange: bool = False
    # Scopes to send with a refresh; None omits the parameter (server keeps the granted scopes).
    refresh_scopes: list[str] | None = None
    # Where a browser-less login sends the user (Claude shows `code#state` there); None: redirect_uri.
    manual_redirect_uri: str | None = None
    timeout_seconds: float = 30.0
    user_agent: str | None = None
    # CA file or directory for the token endpoint (set from the provider's ca_bundle); None: the default.
    ca_bundle: str | None = None

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)


def claude_oauth_settings(**overrides: Any) -> OAuthSettings:
    """Claude.ai subscription login, as Claude Code 2.1.331 does it (upstreams.md §1).

    Authorize: ``claude.com/cai/oauth/authorize`` is what the current CLI uses for subscription logins
    (``claude.ai/oauth/authorize`` is the older integrations' URL). Token: ``platform.claude.com`` is the
    current CLI's host; ``console.anthropic.com`` answers non-browser clients with a Cloudflare challenge
    (§1.5). Both remain overridable.
    """
    values: dict[str, Any] = {
        "provider": "claude",
        "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        "authorize_url": "https://claude.com/cai/oauth/authorize",
        "token_url": "https://platform.claude.com/v1/oauth/token",
        "redirect_uri": "http://localhost:54545/callback",
        "manual_redirect_uri": "https://platform.claude.com/oauth/code/callback",
        "scopes": [
            "org:create_api_key",
            "user:profile",
            "user:inference",
            "user:sessions:claude_code",
            "user:mcp_servers",
            "user:file_upload",
            "user:plugins",
            "user:privacy_consents:write",
        ],
        "extra_authorize_params": {"code": "true"},
        "token_encoding": "json",
        "refresh_encoding": "json",
        "send_state_in_exchange": True,
    }
    values.update(overrides)
    return OAuthSettings(**values)


def codex_oauth_settings(**overrides: Any) -> OAuthSettings:
    """ChatGPT login as the Codex CLI does it (upstreams.md §4): form exchange, JSON refresh."""
    values: dict[str, Any] = {
        "provider": "codex",
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
        "authorize_url": "https://auth.openai.com/oauth/authorize",
        "token_url": "https://auth.openai.com/oauth/token",
        "redirect_uri": "http://localhost:1455/auth/callback",
        "scopes": [
            "openid",
            "profile",
            "email",
            "offline_access",
            "api.connectors.read",
            "api.connectors.invoke",
        ],
        "extra_authorize_params": {
            "id_token_add_organizations": "true",
            "codex_cli_simplified_flow": "true",
            "originator": "codex_cli_rs",
        },
        "token_encoding": "form",
        "refresh_encoding": "json",
    }
    values.update(overrides)
    return OAuthSettings(**values)


def default_settings(provider: Literal["claude", "codex"]) -> OAuthSettings:
    return claude_oauth_settings() if provider == "claude" else codex_oauth_settings()


def build_authorize_url(
    settings: OAuthSettings, pkce: PKCE, state: str, *, redirect_uri: str | None = None
) -> str:
    params: dict[str, str] = {}
    # Claude Code puts `code=true` first; order is cosmetic but keeps URLs comparable with the CLI's.
    if "code" in settings.extra_authorize_params:
        params["code"] = settings.extra_authorize_params["code"]
    params.update(
        {
            "client_id": settings.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri or settings.redirect_uri,
            "scope": settings.scope,
            "code_challenge": pkce.challenge,
            "code_challenge_method": pkce.method,
        }
    )
    for key, value in settings.extra_authorize_params.items():
        params.setdefault(key, value)
    params["state"] = state
    sep = "&" if "?" in settings.authorize_url else "?"
    return f"{settings.authorize_url}{sep}{urlencode(params)}"


@dataclass(frozen=True)
class TokenResponse:
    """A successful token endpoint answer. ``raw`` keeps the non-secret extras (account, scope...)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    expires_in: float | None = None
    refresh_token_expires_in: float | None = None
    scope: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (
            f"TokenResponse(expires_in={self.expires_in!r}, scope={self.scope!r}, "
            f"has_refresh_token={self.refresh_token is not None}, has_id_token={self.id_token is not None})"
        )


async def exchange_code(
    session: aiohttp.ClientSession,
    settings: OAuthSettings,
    *,
    code: str,
    verifier: str,
    state: str | None,
    redirect_uri: str | None = None,
) -> TokenResponse:
    """Authorization-code grant. ``redirect_uri`` must equal the one used in the authorize URL."""
    body: dict[str, str] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or settings.redirect_uri,
        "client_id": settings.client_id,
        "code_verifier": verifier,
    }
    if settings.send_state_in_exchange and state is not None:
        body["state"] = state
    return await _token_request(
        session, settings, body, settings.token_encoding, secrets=(code, verifier), what="code exchange"
    )


async def refresh_access_token(
    session: aiohttp.ClientSession, settings: OAuthSettings, refresh_token: str
) -> TokenResponse:
    body: dict[str, str] = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": settings.client_id,
    }
    if settings.refresh_scopes is not None:
        body["scope"] = " ".join(settings.refresh_scopes)
    return await _token_request(
        session, settings, body, settings.refresh_encoding, secrets=(refresh_token,), what="token refresh"
    )


async def _token_request(
    session: aiohttp.ClientSession,
    settings: OAuthSettings,
    body: dict[str, str],
    encoding: Literal["json", "form"],
    *,
    secrets: tuple[str, ...],
    what: str,
) -> TokenResponse:
    import aiohttp

    label = f"{settings.provider} {what}"
    headers = {"Accept": "application/json"}
    if settings.user_agent:
        headers["User-Agent"] = settings.user_agent
    kwargs: dict[str, Any] = {"json": body} if encoding == "json" else {"data": body}
    # The same proxy and CA choice as the hot path (ccproxy.network), whatever session we were given.
    try:
        proxy = ProxyConfig.from_env().for_url(settings.token_url)
        if settings.token_url.startswith("https:"):
            kwargs["ssl"] = ssl_context(settings.ca_bundle)
    except NetworkConfigError as exc:
        raise CredentialError(f"{label} failed: {exc}") from None
    if proxy is not None:
        kwargs["proxy"] = proxy.url
        if proxy.authorization:
            kwargs["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
    try:
        async with session.post(
            settings.token_url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=settings.timeout_seconds),
            allow_redirects=False,  # a redirect here is a misconfigured URL, not something to follow
            **kwargs,
        ) as resp:
            status = resp.status
            raw = await resp.read()
    except TimeoutError:
        raise CredentialError(
            f"{label} timed out after {settings.timeout_seconds:.0f}s ({settings.token_url})"
        ) from None
    except aiohttp.ClientError as exc:
        reason = type(exc).__name__
        raise CredentialError(f"{label} failed: cannot reach {settings.token_url} ({reason})") from None

    data: Any
    try:
        data = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None

    if not 200 <= status < 300:
        raise _error_from_response(label, status, data, secrets)
    if not isinstance(data, dict):
        raise CredentialError(f"{label}: token endpoint answered HTTP {status} without a JSON object")
    return _parse_token_response(label, data)


def _error_from_response(label: str, status: int, data: Any, secrets: tuple[str, ...]) -> CredentialError:
    code: str | None = None
    description: str | None = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):  # Codex: {"error": {"code": ..., "message": ...}}
            code = _str(err.get("code")) or _str(err.get("type"))
            description = _str(err.get("message"))
        elif isinstance(err, str):  # RFC 6749: {"error": ..., "error_description": ...}
            code = err
        code = code or _str(data.get("code"))
        description = description or _str(data.get("error_description")) or _str(data.get("message"))
        if description is None and isinstance(data.get("detail"), str):
            description = data["detail"]
    permanent = status == 401 or (code in PERMANENT_ERROR_CODES)
    parts = [f"{label} failed: HTTP {status}"]
    if code:
        parts.append(code)
    if description:
        parts.append(_scrub(description, secrets).rstrip("."))
    elif data is None and status == 403:
        parts.append("non-JSON answer (a Cloudflare challenge? try another token_url)")
    message = ": ".join(parts)
    if permanent:
        message += "; log in again"
    return CredentialError(message, permanent=permanent, code=code, status=status)


def _parse_token_response(label: str, data: dict[str, Any]) -> TokenResponse:
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise CredentialError(f"{label}: token endpoint answer has no access_token")
    return TokenResponse(
        access_token=access,
        refresh_token=_str(data.get("refresh_token")),
        id_token=_str(data.get("id_token")),
        expires_in=_number(data.get("expires_in")),
        refresh_token_expires_in=_number(data.get("refresh_token_expires_in")),
        scope=_str(data.get("scope")),
        raw={k: v for k, v in data.items() if k not in {"access_token", "refresh_token", "id_token"}},
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if parsed >= 0 else None
    return None


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Cut the server's message down and drop anything we sent that must stay secret."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text[:300]
