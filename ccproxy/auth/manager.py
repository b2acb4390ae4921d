"""One token manager for both providers: cached credential, proactive refresh, single-flight.

Refresh tokens rotate, and the credential files are shared with the official CLIs and with other ccproxy
processes, so a refresh is done by exactly one party at a time: an ``asyncio.Lock`` collapses concurrent
requests in this process, and an ``flock`` on the file's sibling lock file excludes other processes.
Under the file lock the file is re-read first; if someone else already rotated the tokens we adopt theirs
instead of spending the (now dead) refresh token we had cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from ccproxy.auth.credential import Credential, CredentialError, CredentialSource
from ccproxy.auth.files import file_lock
from ccproxy.auth.oauth import OAuthSettings, TokenResponse, refresh_access_token

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("ccproxy.auth")

ProviderName = Literal["claude", "codex"]
State = Literal["valid", "expired", "missing", "invalid"]
FromTokens = Callable[[TokenResponse, Credential | None, float], Credential]


@dataclass(frozen=True)
class ProviderSpec:
    """The provider-specific parts: OAuth constants, where credentials live, how tokens map to one.

    ``sources`` returns the read order (resolved from the environment when called); ``login_store`` is
    where a ccproxy login is written (ccproxy's own file, never the CLIs'); ``from_tokens`` builds a
    credential from a token response, carrying over what the response omits from ``previous``.
    """

    name: ProviderName
    settings: OAuthSettings
    sources: Callable[[], list[CredentialSource]]
    login_store: Callable[[], CredentialSource]
    from_tokens: FromTokens
    login_hint: str


class TokenManager:
    """``await get()`` → a fresh credential; ``refresh_after_unauthorized(token)`` after an upstream 401.

    The credential is cached in memory; files are read only on first use, under the refresh lock, and
    (throttled by ``reload_interval``) while there is no usable login.
    """

    def __init__(
        self,
        provider: ProviderSpec,
        *,
        session: aiohttp.ClientSession | None = None,
        grace_seconds: float = 120.0,
        reload_interval: float = 5.0,
        retry_interval: float = 10.0,
        lock_timeout: float = 30.0,
        sources: Sequence[CredentialSource] | None = None,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.on_refresh = on_refresh  # called with "ok", "reloaded", "rejected" or "failed"
        self.session = session
        self.grace_seconds = grace_seconds
        self.reload_interval = reload_interval
        self.retry_interval = retry_interval
        self.lock_timeout = lock_timeout
        self._clock = clock
        self._sources = list(sources) if sources is not None else provider.sources()
        self._lock = asyncio.Lock()
        self._cached: Credential | None = None
        self._active: CredentialSource | None = None
        self._error: CredentialError | None = None
        self._state: State = "missing"
        self._last_load: float | None = None  # monotonic time of the last failed source scan
        self._retry_after: float = 0.0  # monotonic; transient refresh failure backoff
        self._dead_refresh_token: str | None = None
        self._dead_error: CredentialError | None = None
        self.refresh_count = 0
        self.last_refresh_at: float | None = None

    @property
    def name(self) -> ProviderName:
        return self.provider.name

    @property
    def source(self) -> CredentialSource | None:
        return self._active

    def invalidate(self) -> None:
        """Forget the cached credential (after a login/logout in this process); next get() re-reads."""
        self._cached = None
        self._active = None
        self._error = None
        self._last_load = None
        self._state = "missing"

    # ----------------------------------------------------------------------------------- public API

    async def get(self) -> Credential:
        cred = self._cached
        if cred is not None and not self._needs_refresh(cred):
            return cred  # the hot path: no lock, no file access
        async with self._lock:
            cred = self._cached
            if cred is None:
                cred = await self._load_locked()
            if not self._needs_refresh(cred):
                return cred
            now = self._clock()
            if cred.refresh_token is None or not self._refreshable():
                if cred.is_expired(now):
                    raise self._set_error(
                        CredentialError(
                            f"{self.name} credential from {self._source_label()} has expired and cannot be "
                            f"refreshed; {self.provider.login_hint}",
                            permanent=True,
                        ),
                        "expired",
                    )
                return cred
            if time.monotonic() < self._retry_after and not cred.is_expired(now):
                return cred  # a refresh just failed transiently; keep serving the still-valid token
            try:
                return await self._refresh_locked(cred.access_token, force=False)
            except CredentialError as exc:
                if not exc.permanent and not cred.is_expired(self._clock()):
                    log.warning(
                        "%s token refresh failed, using the current token until expiry: %s",
                        self.name,
                        exc.message,
                    )
                    self._retry_after = time.monotonic() + self.retry_interval
                    return cred
                raise

    async def refresh_after_unauthorized(self, token: str) -> Credential:
        """The upstream answered 401 for ``token``: refresh once, unless someone already replaced it."""
        async with self._lock:
            cred = self._cached
            if cred is None:
                cred = await self._load_locked()
            if cred.access_token != token and not self._needs_refresh(cred):
                return cred
            if cred.refresh_token is None or not self._refreshable():
                raise self._set_error(
                    CredentialError(
                        f"{self.name} rejected the access token from {self._source_label()} and it cannot be "
                        f"refreshed; {self.provider.login_hint}",
                        permanent=True,
                        status=401,
                    ),
                    "invalid",
                )
            return await self._refresh_locked(token, force=False)

    async def force_refresh(self) -> Credential:
        """Refresh now, whatever the expiry (``ccproxy auth refresh``)."""
        async with self._lock:
            cred = self._cached or await self._load_locked()
            if cred.refresh_token is None or not self._refreshable():
                raise CredentialError(
                    f"{self.name} credential from {self._source_label()} cannot be refreshed "
                    f"(no refresh token or read-only source)"
                )
            return await self._refresh_locked(cred.access_token, force=True)

    async def status(self) -> dict[str, Any]:
        """JSON-safe summary for ``/health`` and ``ccproxy auth status``; never contains a token."""
        if self._cached is None:
            # Only a first load takes the lock; /health must not wait behind an in-flight refresh.
            async with self._lock:
                if self._cached is None:
                    with contextlib.suppress(CredentialError):  # the failure is reported in the dict
                        await self._load_locked()
        cred = self._cached
        now = self._clock()
        src = self._active
        state: State = self._state
        error = self._error.message if self._error is not None and cred is None else None
        if cred is not None:
            state = "expired" if cred.is_expired(now) else "valid"
            if state == "expired" and self._dead_error and cred.refresh_token == self._dead_refresh_token:
                state, error = "invalid", self._dead_error.message  # refresh token refused: new login needed
        return {
            "provider": self.name,
            "state": state,
            "source": src.name if src else None,
            "path": str(src.path) if src is not None and src.path is not None else None,
            "account_id": cred.account_id if cred else None,
            "email": cred.email if cred else None,
            "plan": cred.plan if cred else None,
            "organization_id": cred.organization_id if cred else None,
            "scopes": list(cred.scopes) if cred else [],
            "expires_at": int(cred.expires_at) if cred and cred.expires_at is not None else None,
            "expires_in": int(cred.expires_at - now) if cred and cred.expires_at is not None else None,
            "refreshable": bool(cred and cred.refresh_token and self._refreshable()),
            "last_refresh_at": int(self.last_refresh_at) if self.last_refresh_at else None,
            "error": error,
        }

    # ------------------------------------------------------------------------------------ internals

    def _needs_refresh(self, cred: Credential) -> bool:
        return cred.expires_within(self.grace_seconds, self._clock())

    def _refreshable(self) -> bool:
        src = self._active
        return src is not None and src.writable and src.lock_path is not None

    def _source_label(self) -> str:
        src = self._active
        if src is None:
            return "nowhere"
        return f"{src.name} ({src.path})" if src.path else src.name

    def _set_error(self, exc: CredentialError, state: State) -> CredentialError:
        self._error = exc
        self._state = state
        return exc

    async def _load_locked(self) -> Credential:
        """Scan the sources in order; the first that has a login wins. Throttled while failing."""
        recent = self._last_load is not None and time.monotonic() - self._last_load < self.reload_interval
        if self._error is not None and recent:
            raise _copy(self._error)
        self._last_load = time.monotonic()
        for src in self._sources:
            try:
                cred = await asyncio.to_thread(src.load)
            except CredentialError as exc:
                # A broken file is reported, not skipped: silently using another login would surprise.
                self._active = src
                raise _copy(self._set_error(exc, "invalid")) from None
            if cred is not None:
                self._active = src
                self._cached = cred
                self._error = None
                self._state = "valid"
                return cred
        self._active = None
        looked = ", ".join(s.name + (f" ({s.path})" if s.path else "") for s in self._sources)
        raise _copy(
            self._set_error(
                CredentialError(
                    f"no {self.name} login found (looked in {looked}); {self.provider.login_hint}"
                ),
                "missing",
            )
        )

    async def _refresh_locked(self, stale_token: str, *, force: bool) -> Credential:
        try:
            cred, outcome = await self._refresh_once(stale_token, force=force)
        except CredentialError as exc:
            self._report("rejected" if exc.permanent else "failed")
            raise
        self._report(outcome)
        return cred

    def _report(self, outcome: str) -> None:
        if self.on_refresh is not None:
            self.on_refresh(outcome)

    async def _refresh_once(self, stale_token: str, *, force: bool) -> tuple[Credential, str]:
        src = self._active
        if src is None or src.lock_path is None or not src.writable:
            raise CredentialError(f"{self.name} credential from {self._source_label()} is read-only")
        async with file_lock(src.lock_path, timeout=self.lock_timeout):
            try:
                on_disk = await asyncio.to_thread(src.load)
            except CredentialError as exc:
                self._cached = None
                raise _copy(self._set_error(exc, "invalid")) from None
            if on_disk is None:
                self._cached = None
                raise _copy(
                    self._set_error(
                        CredentialError(
                            f"{self._source_label()} no longer holds a {self.name} login (logged out?); "
                            f"{self.provider.login_hint}"
                        ),
                        "missing",
                    )
                )
            if not force and on_disk.access_token != stale_token and not self._needs_refresh(on_disk):
                # Another process (or the CLI) rotated the tokens while we waited: use theirs.
                log.info("%s tokens were refreshed by someone else; reloaded %s", self.name, src.name)
                self._cached = on_disk
                self._error = None
                return on_disk, "reloaded"
            if on_disk.refresh_token is None:
                raise self._set_error(
                    CredentialError(
                        f"{self._source_label()} has no refresh token; {self.provider.login_hint}",
                        permanent=True,
                    ),
                    "invalid",
                )
            if on_disk.refresh_token == self._dead_refresh_token and self._dead_error is not None:
                # Already refused by the server; do not hammer the token endpoint with it on every request.
                self._cached = on_disk
                raise _copy(self._dead_error)
            now = self._clock()
            try:
                tokens = await self._call_refresh(on_disk.refresh_token)
            except CredentialError as exc:
                if exc.permanent:
                    self._dead_refresh_token = on_disk.refresh_token
                    self._dead_error = exc
                    self._set_error(exc, "invalid")
                raise
            new = replace(self.provider.from_tokens(tokens, on_disk, now), source=src.name)
            try:
                await asyncio.to_thread(src.save, new)
            except (CredentialError, OSError) as exc:
                # The old refresh token is spent; keep the new one in memory so requests keep working.
                log.error("%s tokens refreshed but could not be saved to %s: %s", self.name, src.path, exc)
            self._cached = new
            self._error = None
            self._state = "valid"
            self._retry_after = 0.0
            self.refresh_count += 1
            self.last_refresh_at = now
            log.info("%s tokens refreshed (%s)", self.name, src.name)
            return new, "ok"

    async def _call_refresh(self, refresh_token: str) -> TokenResponse:
        if self.session is not None and not self.session.closed:
            return await refresh_access_token(self.session, self.provider.settings, refresh_token)
        import aiohttp

        async with aiohttp.ClientSession() as session:  # CLI use: refreshes are rare, no pool needed
            return await refresh_access_token(session, self.provider.settings, refresh_token)


def _copy(exc: CredentialError) -> CredentialError:
    """A fresh exception object, so re-raising a remembered error does not grow its traceback."""
    return CredentialError(exc.message, permanent=exc.permanent, code=exc.code, status=exc.status)
