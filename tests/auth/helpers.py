"""Helpers shared by the auth tests (files in the CLIs' shapes, a simulated browser)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp


def simulated_browser(session: aiohttp.ClientSession) -> Callable[[str], Awaitable[str]]:
    """What the user's browser does: follow the authorize redirect to the local callback page."""

    async def open_browser(url: str) -> str:
        async with session.get(url, allow_redirects=True) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.text()

    return open_browser


def write_claude_file(path: Path, tokens: dict[str, Any], *, expires_at: float, **top: Any) -> None:
    """A Claude Code ``.credentials.json`` holding ``tokens`` (from ``FakeProvider.issue_tokens``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "claudeAiOauth": {
            "accessToken": tokens["access_token"],
            "refreshToken": tokens["refresh_token"],
            "expiresAt": int(expires_at * 1000),
            "scopes": ["user:inference", "user:profile"],
            "subscriptionType": "max",
            "rateLimitTier": "default_claude_max_20x",
            "clientId": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        },
        **top,
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def write_codex_file(path: Path, tokens: dict[str, Any], **top: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": tokens["id_token"],
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "account_id": "acct-codex-0001",
        },
        "last_refresh": "2026-01-01T00:00:00Z",
        **top,
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def soon() -> float:
    """An expiry inside the default 120 s grace period: the manager must refresh."""
    return time.time() + 30
