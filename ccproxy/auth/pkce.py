"""PKCE (RFC 7636, S256) and OAuth ``state`` values, as both official CLIs generate them."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def challenge_for(verifier: str) -> str:
    """S256 code challenge: base64url(SHA-256(verifier)), no padding."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class PKCE:
    verifier: str = field(repr=False)
    challenge: str
    method: str = "S256"


def generate_pkce() -> PKCE:
    """A verifier from 32 random bytes (43 characters) and its S256 challenge."""
    verifier = b64url(secrets.token_bytes(32))
    return PKCE(verifier=verifier, challenge=challenge_for(verifier))


def generate_state() -> str:
    """32 random bytes, base64url (43 characters); shorter states are reported as rejected."""
    return b64url(secrets.token_bytes(32))
