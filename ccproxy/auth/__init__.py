"""Credentials for the Claude and ChatGPT (Codex) subscriptions: sources, refresh, login.

Providers hold one ``TokenManager`` each (``token_manager("claude", session=...)``) and call
``await manager.get()`` per request and ``await manager.refresh_after_unauthorized(token)`` on an
upstream 401. The CLI calls ``login``, ``status_all``, ``logout`` and ``refresh``.
"""

from ccproxy.auth.credential import Credential, CredentialError, CredentialSource
from ccproxy.auth.login import (
    PROVIDERS,
    get_provider,
    login,
    logout,
    parse_pasted,
    refresh,
    status_all,
    token_manager,
)
from ccproxy.auth.manager import ProviderName, ProviderSpec, TokenManager
from ccproxy.auth.oauth import OAuthSettings, claude_oauth_settings, codex_oauth_settings, default_settings

__all__ = [
    "PROVIDERS",
    "Credential",
    "CredentialError",
    "CredentialSource",
    "OAuthSettings",
    "ProviderName",
    "ProviderSpec",
    "TokenManager",
    "claude_oauth_settings",
    "codex_oauth_settings",
    "default_settings",
    "get_provider",
    "login",
    "logout",
    "parse_pasted",
    "refresh",
    "status_all",
    "token_manager",
]
