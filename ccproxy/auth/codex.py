"""Codex / ChatGPT credential sources and token mapping (upstreams.md §4, §5).

Read order: ``$CODEX_HOME/auth.json`` (the Codex CLI's login), then ccproxy's own store, which uses the
same shape. A refresh merges into the file it came from, keeping ``auth_mode``, ``OPENAI_API_KEY`` and
any other keys, and updates ``last_refresh`` so the CLI keeps working with the rotated tokens.
Account, plan and email come from the id token's claims; expiry from the access token's ``exp``.
JWTs are decoded without verifying signatures: we only read our own tokens' claims, never trust them.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccproxy.auth import files
from ccproxy.auth.credential import Credential, CredentialError, CredentialSource, refreshed
from ccproxy.auth.files import JsonFileSource
from ccproxy.auth.manager import ProviderSpec
from ccproxy.auth.oauth import OAuthSettings, TokenResponse, codex_oauth_settings

AUTH_CLAIM = "https://api.openai.com/auth"
PROFILE_CLAIM = "https://api.openai.com/profile"


def codex_home() -> Path:
    return files.dir_from_env("CODEX_HOME", Path.home() / ".codex")


def codex_auth_path() -> Path:
    return codex_home() / "auth.json"


def ccproxy_codex_path() -> Path:
    return files.ccproxy_data_dir() / "codex_auth.json"


def decode_jwt_claims(token: str | None) -> dict[str, Any]:
    """The payload of a JWT (no signature check); {} for anything that is not a JWT."""
    if not token:
        return {}
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    payload = parts[1]
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(decoded)
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class CodexClaims:
    """What we need from ChatGPT JWT claims (id token first, access token as fallback)."""

    def __init__(self, id_token: str | None, access_token: str | None) -> None:
        self.id = decode_jwt_claims(id_token)
        self.access = decode_jwt_claims(access_token)

    def _auth(self, claims: dict[str, Any]) -> dict[str, Any]:
        auth = claims.get(AUTH_CLAIM)
        return auth if isinstance(auth, dict) else {}

    def _pick(self, key: str) -> str | None:
        for claims in (self.id, self.access):
            value = self._auth(claims).get(key)
            if isinstance(value, str) and value:
                return value
        return None

    @property
    def account_id(self) -> str | None:
        return self._pick("chatgpt_account_id")

    @property
    def plan(self) -> str | None:
        return self._pick("chatgpt_plan_type")

    @property
    def email(self) -> str | None:
        for claims in (self.id, self.access):
            email = claims.get("email")
            if isinstance(email, str) and email:
                return email
            profile = claims.get(PROFILE_CLAIM)
            if isinstance(profile, dict) and isinstance(profile.get("email"), str):
                return str(profile["email"])
        return None

    @property
    def access_exp(self) -> float | None:
        exp = self.access.get("exp")
        return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class CodexAuthFileSource(JsonFileSource):
    """An ``auth.json``-shaped file (the Codex CLI's, or ccproxy's own copy of the same shape)."""

    def load(self) -> Credential | None:
        found = self._read("tokens")
        if found is None:
            return None  # no file, or API-key mode (`codex login --with-api-key`): no ChatGPT login here
        tokens = found[1]
        access = tokens.get("access_token")
        if not isinstance(access, str) or not access:
            raise CredentialError(f"{self._path}: 'tokens.access_token' is missing or not a string")
        refresh = tokens.get("refresh_token")
        if refresh is not None and not isinstance(refresh, str):
            raise CredentialError(f"{self._path}: 'tokens.refresh_token' is not a string")
        id_token = tokens.get("id_token")
        if id_token is not None and not isinstance(id_token, str):
            raise CredentialError(f"{self._path}: 'tokens.id_token' is not a string")
        claims = CodexClaims(id_token, access)
        stored_account = tokens.get("account_id")
        return Credential(
            access_token=access,
            refresh_token=refresh or None,
            id_token=id_token or None,
            expires_at=claims.access_exp,
            account_id=(stored_account if isinstance(stored_account, str) and stored_account else None)
            or claims.account_id,
            email=claims.email,
            plan=claims.plan,
            source=self.name,
        )

    def save(self, credential: Credential) -> None:
        existing = files.read_json(self._path)
        # A new file gets the CLI's full shape; an existing one keeps auth_mode, OPENAI_API_KEY, etc.
        data: dict[str, Any] = existing if existing is not None else {}
        if existing is None:
            data = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None}
        tokens = data.get("tokens")
        if not isinstance(tokens, dict):
            tokens = {}
        if credential.id_token:
            tokens["id_token"] = credential.id_token
        tokens["access_token"] = credential.access_token
        tokens["refresh_token"] = credential.refresh_token
        account = credential.account_id or tokens.get("account_id")
        tokens["account_id"] = account
        data["tokens"] = tokens
        data["last_refresh"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        files.write_json_atomic(self._path, data)

    def delete(self) -> bool:
        return files.delete_file(self._path)


def codex_own_store() -> CredentialSource:
    return CodexAuthFileSource(ccproxy_codex_path(), "ccproxy")


def codex_sources() -> list[CredentialSource]:
    return [CodexAuthFileSource(codex_auth_path(), "codex-cli"), codex_own_store()]


def codex_credential_from_tokens(
    tokens: TokenResponse, previous: Credential | None, now: float
) -> Credential:
    # Every field of a refresh answer is optional: keep the old value when absent (as the CLI does).
    id_token = tokens.id_token or (previous.id_token if previous else None)
    claims = CodexClaims(id_token, tokens.access_token)
    expires_at = claims.access_exp
    if expires_at is None and tokens.expires_in is not None:
        expires_at = now + tokens.expires_in
    return refreshed(
        previous,
        tokens.access_token,
        refresh_token=tokens.refresh_token,
        id_token=id_token,
        expires_at=expires_at,
        account_id=claims.account_id,
        email=claims.email,
        plan=claims.plan,
        scopes=tuple(tokens.scope.split()) if tokens.scope else (),
    )


LOGIN_HINT = "run `ccproxy auth login codex` (or `codex login`)"


def codex_provider(settings: OAuthSettings | None = None) -> ProviderSpec:
    settings = settings or codex_oauth_settings()
    return ProviderSpec(
        "codex", settings, codex_sources, codex_own_store, codex_credential_from_tokens, LOGIN_HINT
    )
