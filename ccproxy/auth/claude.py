"""Claude credential sources and token mapping (upstreams.md §1, §2).

Read order: ccproxy's own store, Claude Code's ``.credentials.json``, ``CLAUDE_CODE_OAUTH_TOKEN``.
Both files use Claude Code's shape (``{"claudeAiOauth": {...}}``, ``expiresAt`` in milliseconds) so a
refresh written back to Claude Code's file leaves it exactly as the CLI expects, other keys untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ccproxy.auth import files
from ccproxy.auth.credential import Credential, CredentialError, CredentialSource, refreshed
from ccproxy.auth.files import JsonFileSource
from ccproxy.auth.manager import ProviderSpec
from ccproxy.auth.oauth import OAuthSettings, TokenResponse, claude_oauth_settings

ENV_TOKEN = "CLAUDE_CODE_OAUTH_TOKEN"
OAUTH_KEY = "claudeAiOauth"


def claude_config_dir() -> Path:
    return files.dir_from_env("CLAUDE_CONFIG_DIR", Path.home() / ".claude")


def claude_code_credentials_path() -> Path:
    # CLAUDE_SECURESTORAGE_CONFIG_DIR overrides only where Claude Code keeps credentials.
    base = files.dir_from_env("CLAUDE_SECURESTORAGE_CONFIG_DIR", claude_config_dir())
    return base / ".credentials.json"


def ccproxy_claude_path() -> Path:
    return files.ccproxy_data_dir() / "claude_credentials.json"


def _claude_global_state_path() -> Path:
    # with CLAUDE_CONFIG_DIR set, inside it; else beside ~/.claude, not in it
    return files.dir_from_env("CLAUDE_CONFIG_DIR", Path.home()) / ".claude.json"


class ClaudeFileSource(JsonFileSource):
    """A ``.credentials.json``-shaped file. ``own`` marks ccproxy's store, which also keeps the account."""

    def __init__(self, path: Path, name: str, *, own: bool) -> None:
        super().__init__(path, name)
        self.own = own

    def load(self) -> Credential | None:
        found = self._read(OAUTH_KEY)
        if found is None:
            return None  # no file, or no Claude.ai login in it (e.g. only mcpOAuth)
        data, oauth = found
        access = oauth.get("accessToken")
        if access in (None, ""):
            return None  # Claude Code blanks the tokens after a failed refresh: logged out
        if not isinstance(access, str):
            raise CredentialError(f"{self._path}: '{OAUTH_KEY}.accessToken' is not a string")
        refresh = oauth.get("refreshToken")
        if refresh is not None and not isinstance(refresh, str):
            raise CredentialError(f"{self._path}: '{OAUTH_KEY}.refreshToken' is not a string")
        scopes = oauth.get("scopes") or []
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise CredentialError(f"{self._path}: '{OAUTH_KEY}.scopes' is not a list of strings")
        account = data.get("account") if self.own else _claude_code_account()
        if not isinstance(account, dict):
            account = {}
        plan = oauth.get("subscriptionType")
        return Credential(
            access_token=access,
            refresh_token=refresh or None,
            expires_at=_ms_to_seconds(oauth.get("expiresAt"), self._path, "expiresAt"),
            refresh_expires_at=_ms_to_seconds(
                oauth.get("refreshTokenExpiresAt"), self._path, "refreshTokenExpiresAt"
            ),
            account_id=_opt_str(account.get("uuid")),
            email=_opt_str(account.get("email")),
            organization_id=_opt_str(account.get("organization_uuid")),
            plan=plan if isinstance(plan, str) and plan else None,
            scopes=tuple(scopes),
            source=self.name,
        )

    def save(self, credential: Credential) -> None:
        # Re-read and merge: only our token fields change; other keys (mcpOAuth, rateLimitTier, ...) stay.
        data = files.read_json(self._path) or {}
        oauth = data.get(OAUTH_KEY)
        if not isinstance(oauth, dict):
            oauth = {}
        oauth["accessToken"] = credential.access_token
        oauth["refreshToken"] = credential.refresh_token
        oauth["expiresAt"] = int(credential.expires_at * 1000) if credential.expires_at is not None else None
        if credential.scopes:
            oauth["scopes"] = list(credential.scopes)
        if credential.plan and (self.own or not oauth.get("subscriptionType")):
            oauth["subscriptionType"] = credential.plan
        if credential.refresh_expires_at is not None:
            oauth["refreshTokenExpiresAt"] = int(credential.refresh_expires_at * 1000)
        else:
            oauth.pop("refreshTokenExpiresAt", None)  # belonged to a refresh token that is gone now
        data[OAUTH_KEY] = oauth
        if self.own:
            data["account"] = {
                "uuid": credential.account_id,
                "email": credential.email,
                "organization_uuid": credential.organization_id,
            }
        files.write_json_atomic(self._path, data)

    def delete(self) -> bool:
        return files.delete_file(self._path)


class ClaudeEnvSource:
    """``CLAUDE_CODE_OAUTH_TOKEN`` (from ``claude setup-token``): long-lived, read-only, no refresh."""

    name = f"env:{ENV_TOKEN}"
    path: Path | None = None
    writable = False

    @property
    def lock_path(self) -> Path | None:
        return None

    def load(self) -> Credential | None:
        token = os.environ.get(ENV_TOKEN, "").strip()
        if not token:
            return None
        return Credential(access_token=token, scopes=("user:inference",), source=self.name)

    def save(self, credential: Credential) -> None:
        raise CredentialError(f"{ENV_TOKEN} is read-only; it cannot store refreshed tokens")

    def delete(self) -> bool:
        return False


def claude_own_store() -> CredentialSource:
    return ClaudeFileSource(ccproxy_claude_path(), "ccproxy", own=True)


def claude_sources() -> list[CredentialSource]:
    return [
        claude_own_store(),
        ClaudeFileSource(claude_code_credentials_path(), "claude-code", own=False),
        ClaudeEnvSource(),
    ]


def claude_credential_from_tokens(
    tokens: TokenResponse, previous: Credential | None, now: float
) -> Credential:
    raw = tokens.raw
    account: dict[str, Any] = raw["account"] if isinstance(raw.get("account"), dict) else {}
    org: dict[str, Any] = raw["organization"] if isinstance(raw.get("organization"), dict) else {}
    refresh_expires_at = None
    if tokens.refresh_token_expires_in is not None:
        refresh_expires_at = now + tokens.refresh_token_expires_in
    elif (
        previous is not None and tokens.refresh_token is None
    ):  # the old refresh token stays, with its expiry
        refresh_expires_at = previous.refresh_expires_at
    # Claude Code keeps the old refresh token (and the account fields) when the answer has none.
    return refreshed(
        previous,
        tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=now + tokens.expires_in if tokens.expires_in is not None else None,
        refresh_expires_at=refresh_expires_at,
        account_id=_opt_str(account.get("uuid")),
        email=_opt_str(account.get("email_address")),
        organization_id=_opt_str(org.get("uuid")),
        plan=_opt_str(raw.get("subscription_type")),
        scopes=tuple(tokens.scope.split()) if tokens.scope else (),
    )


LOGIN_HINT = "run `ccproxy auth login claude` (or log in with `claude`)"


def claude_provider(settings: OAuthSettings | None = None) -> ProviderSpec:
    settings = settings or claude_oauth_settings()
    return ProviderSpec(
        "claude", settings, claude_sources, claude_own_store, claude_credential_from_tokens, LOGIN_HINT
    )


def _claude_code_account() -> dict[str, Any]:
    """Best effort: Claude Code keeps the account (not the tokens) in ``~/.claude.json``."""
    try:
        data = files.read_json(_claude_global_state_path())
    except CredentialError:
        return {}
    acct = data.get("oauthAccount") if data else None
    if not isinstance(acct, dict):
        return {}
    return {
        "uuid": acct.get("accountUuid"),
        "email": acct.get("emailAddress"),
        "organization_uuid": acct.get("organizationUuid"),
    }


def _ms_to_seconds(value: Any, path: Path, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CredentialError(f"{path}: '{OAUTH_KEY}.{key}' is not a number (milliseconds since the epoch)")
    return float(value) / 1000.0


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
