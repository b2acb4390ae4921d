"""The credential value, its error type, and the source protocol both providers implement.

Tokens never appear in ``repr``/``str`` of anything here, nor in any ``CredentialError`` message: these
objects end up in logs, tracebacks and ``/health`` output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class CredentialError(Exception):
    """Anything wrong with a credential: missing, unreadable, expired, rejected by the token endpoint.

    ``permanent`` means retrying with the same refresh token cannot help (a new login is needed);
    ``code`` is the OAuth error code when the token endpoint gave one (``invalid_grant``,
    ``refresh_token_reused``...). Messages are written for the user and never contain a token.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Credential:
    """One provider login. ``expires_at`` is epoch seconds (None: unknown / does not expire).

    ``plan`` is the subscription (Claude ``subscriptionType`` such as ``max``/``pro``, ChatGPT
    ``chatgpt_plan_type`` such as ``plus``/``pro``). ``source`` names where it was read from.
    """

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    id_token: str | None = field(default=None, repr=False)
    account_id: str | None = None
    email: str | None = None
    plan: str | None = None
    scopes: tuple[str, ...] = ()
    source: str = ""
    organization_id: str | None = None
    refresh_expires_at: float | None = None  # Claude's refreshTokenExpiresAt, epoch seconds

    def __repr__(self) -> str:
        # Written out by hand (not the dataclass default) so that adding a field can never leak a token.
        return (
            f"Credential(source={self.source!r}, account_id={self.account_id!r}, email={self.email!r}, "
            f"plan={self.plan!r}, expires_at={self.expires_at!r}, scopes={self.scopes!r}, "
            f"refreshable={self.refresh_token is not None})"
        )

    __str__ = __repr__

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        """True when the access token expires in less than ``seconds`` (never for unknown expiry)."""
        if self.expires_at is None:
            return False
        current = time.time() if now is None else now
        return self.expires_at - current < seconds

    def is_expired(self, now: float | None = None) -> bool:
        return self.expires_within(0, now)


def refreshed(
    previous: Credential | None,
    access_token: str,
    *,
    expires_at: float | None,
    refresh_expires_at: float | None = None,
    **kept: Any,
) -> Credential:
    """The credential after a token answer. The expiry times are the answer's own (unknown stays unknown);
    every other field is the answer's value when it gave one, else the previous credential's (every
    field of a refresh answer is optional, and the CLIs keep the old value too)."""
    if previous is not None:
        kept = {k: v or getattr(previous, k) for k, v in kept.items()}
        kept.setdefault("source", previous.source)
    return Credential(
        access_token=access_token, expires_at=expires_at, refresh_expires_at=refresh_expires_at, **kept
    )


class CredentialSource(Protocol):
    """A place a credential lives. File sources are read and written as a whole, under ``lock_path``.

    ``load`` returns None when there is no credential there (file absent, or a file with no login of
    this kind), and raises ``CredentialError`` when the file exists but cannot be used; it must not
    modify anything. ``save`` merges the credential into what is stored (keeping fields it does not
    own) and is only called with the lock held.
    """

    name: str
    path: Path | None
    writable: bool

    @property
    def lock_path(self) -> Path | None: ...

    def load(self) -> Credential | None: ...

    def save(self, credential: Credential) -> None: ...

    def delete(self) -> bool: ...
