"""What ``ccproxy auth ...`` and ``ccproxy config codex`` do; imported only when those commands run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ccproxy.auth.credential import CredentialError
from ccproxy.auth.manager import ProviderName
from ccproxy.auth.oauth import OAuthSettings
from ccproxy.config import ConfigError, LoadedConfig, find_config_file, user_config_path

PLUGIN_OF: dict[ProviderName, str] = {"claude": "claude_api", "codex": "codex"}


def provider_name(value: str) -> ProviderName:
    aliases: dict[str, ProviderName] = {
        "claude": "claude",
        "claude_api": "claude",
        "anthropic": "claude",
        "codex": "codex",
        "openai": "codex",
        "chatgpt": "codex",
    }
    try:
        return aliases[value.lower()]
    except KeyError:
        raise ConfigError(f"unknown provider '{value}'; expected 'claude' or 'codex'") from None


def oauth_settings(config: LoadedConfig, provider: ProviderName) -> OAuthSettings:
    """The provider's OAuth settings with the user's overrides (plugins.<name>.oauth.*) applied."""
    from ccproxy.plugins import load_plugins

    entry = load_plugins(config).get(PLUGIN_OF[provider])
    if entry is None or entry.ctx is None:
        from ccproxy.auth.oauth import default_settings

        return default_settings(provider)
    settings: OAuthSettings = entry.ctx.settings.oauth
    return settings


def plugin_settings(config: LoadedConfig, provider: ProviderName) -> Any:
    """The provider plugin's validated settings (None when the plugin cannot be loaded)."""
    from ccproxy.plugins import load_plugins

    entry = load_plugins(config).get(PLUGIN_OF[provider])
    return entry.ctx.settings if entry is not None and entry.ctx is not None else None


def account_name(name: str) -> str:
    """A valid name for ``--account``: letters, digits, ``_.-``; not one the usual logins go by."""
    from ccproxy.accounts import NAME_PATTERN, RESERVED_NAMES

    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"account name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (starting with a letter or "
            "digit)"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"account name {name!r} is taken by a built-in login source; choose another")
    return name


def run_login(
    config: LoadedConfig, provider: ProviderName, *, no_browser: bool, account: str | None = None
) -> None:
    from ccproxy.accounts import account_store
    from ccproxy.auth.login import login

    store = account_store(provider, account_name(account)) if account is not None else None
    asyncio.run(login(provider, oauth_settings(config, provider), no_browser=no_browser, store=store))


def run_refresh(config: LoadedConfig, provider: ProviderName) -> str:
    from ccproxy.auth.login import refresh

    credential = asyncio.run(refresh(provider, oauth_settings(config, provider)))
    expiry = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(credential.expires_at or 0))
    return f"refreshed {provider} credentials ({credential.source}); valid until {expiry}"


def run_logout(provider: ProviderName, account: str | None = None) -> list[Path]:
    from ccproxy.accounts import account_store
    from ccproxy.auth.login import logout

    if account is None:
        return logout(provider)
    store = account_store(provider, account_name(account))
    return [store.path] if store.delete() and store.path is not None else []


def status(config: LoadedConfig) -> dict[str, dict[str, Any]]:
    from ccproxy.accounts import registry_snapshot
    from ccproxy.auth.login import status_all

    settings: dict[str, OAuthSettings] = {p: oauth_settings(config, p) for p in PLUGIN_OF}
    result = asyncio.run(status_all(settings))
    for provider in PLUGIN_OF:
        plugin = plugin_settings(config, provider)
        accounts = plugin.accounts if plugin is not None else None
        result[provider].update(asyncio.run(registry_snapshot(provider, settings[provider], accounts)))
    return result


# `ccproxy auth status` exit codes, for scripts (README, docs/authentication.md).
STATUS_OK = 0  # at least one provider has usable credentials (valid, or expired with a refresh token)
STATUS_NONE_USABLE = 3  # no provider has usable credentials: log in first


def usable(info: Mapping[str, Any]) -> bool:
    if info["state"] == "valid" or (info["state"] == "expired" and bool(info.get("refreshable"))):
        return True
    return any(a["state"] != "login-needed" for a in info.get("accounts", ()))  # a named account


def print_status(config: LoadedConfig, *, as_json: bool) -> int:
    """Print every provider's credential status; returns the exit code (see STATUS_*)."""
    from ccproxy.config_cli import print_table

    result = status(config)
    code = STATUS_OK if any(usable(info) for info in result.values()) else STATUS_NONE_USABLE
    if as_json:
        print(json.dumps(result, indent=2))
        return code
    rows = []
    for name, info in result.items():
        expires = info.get("expires_at")
        shown = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires)) if expires else "-"
        account = info.get("email") or info.get("account_id") or "-"
        rows.append((name, info["state"], info.get("source") or "-", account, info.get("plan") or "-", shown))
    print_table("ccproxy credentials", ("provider", "state", "source", "account", "plan", "expires"), rows)
    for name, info in result.items():
        if info.get("error"):
            print(f"{name}: {info['error']}")
    account_rows = [
        (name, a["name"], a["state"], a["source"], a["plan"] or "-", _local(a["expires_at"]), _windows(a))
        for name, info in result.items()
        for a in info["accounts"]
    ]
    if len(account_rows) > len(result) or any(row[-1] != "-" for row in account_rows):
        columns = ("provider", "account", "state", "source", "plan", "expires", "windows (last seen)")
        print_table("accounts", columns, account_rows)
    if code == STATUS_NONE_USABLE:
        print(
            "no provider has usable credentials: run `ccproxy auth login` (Claude) or "
            "`ccproxy auth login codex` (ChatGPT)",
            file=sys.stderr,
        )
    return code


def _local(iso: str | None) -> str:
    if iso is None:
        return "-"
    from datetime import datetime

    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def _windows(account: Mapping[str, Any]) -> str:
    parts = []
    for w in account["windows"]:
        used = f"{round(w['utilization'] * 100)}%" if w["utilization"] is not None else w["status"]
        parts.append(
            f"{w['name']} {used}" + (f" (resets {_local(w['resets_at'])})" if w["resets_at"] else "")
        )
    return ", ".join(parts) or "-"


def set_plugin_enabled(plugin: str, enabled: bool, path: Path | None = None) -> Path:
    """Flip ``plugins.<plugin>.enabled`` in the user's config file, keeping its comments and layout."""
    import tomlkit

    target = path or find_config_file(None, os.environ) or user_config_path()
    if target.exists():
        try:
            doc = tomlkit.parse(target.read_text(encoding="utf-8"))
        except tomlkit.exceptions.ParseError as exc:
            raise ConfigError(f"{target}: invalid TOML: {exc}") from None
    else:
        doc = tomlkit.document()
        doc.add(tomlkit.comment("ccproxy configuration (see `ccproxy config init` for every setting)"))
    plugins = doc.get("plugins")
    if plugins is None:
        plugins = tomlkit.table(is_super_table=True)
        doc["plugins"] = plugins
    section = plugins.get(plugin)
    if section is None:
        section = tomlkit.table()
        plugins[plugin] = section
    section["enabled"] = enabled
    _write_atomic(target, tomlkit.dumps(doc))
    return target


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["CredentialError", "print_status", "run_login", "run_logout", "run_refresh", "set_plugin_enabled"]
