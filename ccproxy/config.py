"""Layered settings: CLI flags > environment > TOML file > defaults.

Each layer is read into a nested dict; the layers are merged while remembering where every value came
from (for ``ccproxy config show``), then validated by pydantic. Plugin sections (``plugins.<name>``) are
validated by each plugin's own model once the plugins are known (see ``ccproxy.plugins``).
"""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

Source = Literal["default", "file", "env", "cli"]
SECTIONS = ("server", "logging", "security", "limits", "permissions", "ledger", "billing", "plugins")
# Variables users already know from earlier releases, mapped onto the nested keys.
ENV_ALIASES = {
    "CCPROXY_VERBOSE_API": ("logging", "verbose_api"),
    "CCPROXY_REQUEST_LOG_DIR": ("plugins", "raw_http_logger", "log_dir"),
    "CCPROXY_AUTH_TOKEN": ("security", "auth_token"),
}
# Plugin section names users bring from elsewhere (the seed's settings-class spelling, e.g.
# PLUGINS__RAWHTTPLOGGERCONFIG__ENABLED), mapped onto today's plugin names in every layer. Keys are
# lowercase. Add a row when a plugin's old name should keep working.
PLUGIN_ALIASES: dict[str, str] = {
    "rawhttploggerconfig": "raw_http_logger",
}
# Earlier spellings of whole keys, in any layer (file, environment, command line).
KEY_ALIASES = {
    ("logging", "request_log_dir"): ("plugins", "raw_http_logger", "log_dir"),
}


class ConfigError(Exception):
    """A bad config file, variable or flag; the message is one line meant for the user."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerSettings(StrictModel):
    host: str = Field("127.0.0.1", description="Address to bind; non-loopback requires an auth token")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on")
    workers: int = Field(1, ge=1, le=64, description="Worker processes")
    reload: bool = Field(False, description="Restart on code changes (development)")
    graceful_shutdown_seconds: float = Field(
        10.0, ge=0, description="How long streams in flight may finish on shutdown"
    )


class LoggingSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: console on a terminal, JSON otherwise"
    )
    verbose_api: bool = Field(False, description="Log request and response bodies (secrets redacted)")


class SecuritySettings(StrictModel):
    auth_token: SecretStr | None = Field(
        None, description="When set, every route but /health requires this token"
    )
    allow_unauthenticated: bool = Field(
        False, description="Allow binding a non-loopback address without an auth token"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted besides loopback and the bind address ('.example.com' for a "
        "domain and its subdomains, '*' for any); others get 403 (DNS-rebinding protection)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (e.g. 'http://localhost:3000') allowed to call ccproxy, with CORS; "
        "requests from any other origin get 403",
    )


class LimitsSettings(StrictModel):
    """Sizes, timeouts and load shedding (issue 10); every limit answers with a clear error."""

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond)")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line plus headers, in bytes (431 beyond)"
    )
    max_headers: int = Field(128, ge=8, description="Most header fields in one request (431 beyond)")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Time a client has to send a request's headers (408 and close beyond)"
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest pause in sending a request body (408 and close beyond)"
    )
    keep_alive_seconds: float = Field(
        5.0, gt=0, description="Idle time before a kept-alive connection closes"
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections past which new requests get 503 (health checks excepted)"
    )
    max_requests_in_flight: int = Field(
        # as many as connections: 1,000 concurrent streams (the benchmark's burst) must be served as shipped
        1000,
        ge=1,
        description="Requests in progress past which new ones get 503 (health checks excepted)",
    )
    retry_after_seconds: int = Field(1, ge=0, description="The retry-after value sent with a 503")


class PermissionsSettings(StrictModel):
    """The tool-use permission service of SDK mode (issue 13): who may let the agent run a tool."""

    timeout_seconds: float = Field(
        120.0, gt=0, description="An unanswered permission request is denied after this long"
    )
    allow: list[str] = Field(
        default_factory=lambda: ["Read", "Grep", "Glob", "LS"],
        description="Tools always allowed without asking (exact tool names)",
    )
    deny: list[str] = Field(default_factory=list, description="Tools always denied without asking")
    recent_size: int = Field(
        50, ge=0, le=10000, description="How many recent decisions GET /permissions keeps"
    )
    keepalive_seconds: float = Field(
        15.0, gt=0, description="Keep-alive comment interval on GET /permissions/stream"
    )


def user_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/ccproxy`` (default ``~/.local/share/ccproxy``): the ledger, fetched price tables."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return Path(base) / "ccproxy"


class LedgerSettings(StrictModel):
    """The persistent usage ledger: one row per proxied request."""

    enabled: bool = Field(True, description="Record every proxied request in the ledger")
    url: str = Field(
        "",
        description="sqlite:///PATH or postgresql://USER@HOST/DB; empty: sqlite in the user's data directory",
    )
    retention_days: int = Field(
        0, ge=0, description="Delete rows older than this many days (0: keep everything)"
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Rows written per transaction at most")
    flush_seconds: float = Field(
        1.0, gt=0, le=60, description="Longest time a row waits in memory (lost on kill -9)"
    )
    queue_limit: int = Field(
        100_000, ge=1, description="Rows held in memory while the database is slow; beyond it, dropped"
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    def resolved_url(self) -> str:
        return self.url or f"sqlite:///{user_data_dir() / 'usage.sqlite3'}"


class BillingSettings(StrictModel):
    """The billing guard (issue 15)."""

    allow_overage: bool = Field(
        False,
        description="Let requests through once an account's rate-limit headers say they are billed as "
        "overage (Claude's extra usage); false parks such an account until its window resets",
    )


class Settings(StrictModel):
    server: ServerSettings = ServerSettings()  # type: ignore[call-arg]
    logging: LoggingSettings = LoggingSettings()  # type: ignore[call-arg]
    security: SecuritySettings = SecuritySettings()  # type: ignore[call-arg]
    limits: LimitsSettings = LimitsSettings()  # type: ignore[call-arg]
    permissions: PermissionsSettings = PermissionsSettings()  # type: ignore[call-arg]
    ledger: LedgerSettings = LedgerSettings()  # type: ignore[call-arg]
    billing: BillingSettings = BillingSettings()  # type: ignore[call-arg]
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)


class LoadedConfig:
    """Validated core settings plus the raw plugin sections and where each value came from."""

    def __init__(
        self,
        settings: Settings,
        sources: dict[str, Source],
        origins: dict[str, str],
        file: Path | None,
        plugin_stages: list[tuple[dict[str, Any], dict[str, str]]] | None = None,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.origins = origins  # dotted key -> human description of where it was set
        self.file = file
        # The plugin sections as merged up to each lower layer (file, then file+env), with the origins
        # known then: a bad value there is an error even when a higher layer overrides it.
        self.plugin_stages = plugin_stages or []

    def source_of(self, dotted: str) -> Source:
        return self.sources.get(dotted, "default")


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if env.get("CCPROXY_CONFIG"):
        path = Path(env["CCPROXY_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from CCPROXY_CONFIG)")
        return path
    for candidate in (Path(".ccproxy.toml"), Path("ccproxy.toml"), user_config_path(env)):
        if candidate.is_file():
            return candidate
    return None


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "ccproxy" / "config.toml"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested values from ``SECTION__KEY__SUB=value`` variables, and the variable behind each key."""
    layer: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in env.items():
        if name in ENV_ALIASES:
            path: tuple[str, ...] = ENV_ALIASES[name]
        else:
            parts = name.lower().split("__")
            if len(parts) < 2 or parts[0] not in SECTIONS or not all(parts):
                continue
            if parts[0] == "plugins":
                parts[1] = PLUGIN_ALIASES.get(parts[1], parts[1])
            path = _unalias(tuple(parts))
        _set(layer, path, _env_value(raw))
        origin[".".join(path)] = name
    return layer, origin


def _env_value(raw: str) -> Any:
    # Lists and tables can be given as JSON (e.g. scopes); everything else stays a string for pydantic.
    if raw[:1] in "[{":
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def load_config(
    *,
    config_file: str | os.PathLike[str] | None = None,
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Read, merge and validate every layer. ``cli`` maps dotted keys to values given as flags."""
    env = os.environ if env is None else env
    path = find_config_file(config_file, env)
    file_data: dict[str, Any] = {}
    for dotted, value in _flatten(_plugin_aliases(read_toml(path)) if path else {}):
        _set(file_data, _unalias(tuple(dotted.split("."))), value)
    env_data, env_origin = env_layer(env)
    cli_data: dict[str, Any] = {}
    for dotted, value in (cli or {}).items():
        if value is not None:
            _set(cli_data, _unalias(tuple(dotted.split("."))), value)

    merged: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    origins: dict[str, str] = {}
    stages: list[tuple[dict[str, Any], dict[str, str]]] = []
    layers: list[tuple[Source, dict[str, Any]]] = [("file", file_data), ("env", env_data), ("cli", cli_data)]
    for source, data in layers:
        if not data:
            continue
        for dotted, value in _flatten(data):
            _set(merged, tuple(dotted.split(".")), value)
            sources[dotted] = source
            if source == "file":
                origins[dotted] = str(path)
            elif source == "env":
                origins[dotted] = f"environment variable {env_origin.get(dotted, '?')}"
            else:
                origins[dotted] = "command line"
        stages.append((copy.deepcopy(merged), dict(origins)))
    # Every layer is checked as merged so far, so a bad value is reported where it was written even when
    # a higher layer overrides it (it would bite the day the override goes away).
    settings = Settings()
    for data, known in stages or [({}, {})]:
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, Settings, known)) from None
    plugin_stages = [(dict(data.get("plugins") or {}), known) for data, known in stages[:-1]]
    return LoadedConfig(settings, sources, origins, path, plugin_stages)


def _plugin_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """``[plugins.<old name>]`` tables renamed by PLUGIN_ALIASES (a table under both names is merged)."""
    plugins = data.get("plugins")
    if not isinstance(plugins, dict) or not any(k.lower() in PLUGIN_ALIASES for k in plugins):
        return data
    renamed: dict[str, Any] = {}
    for key, value in plugins.items():
        name = PLUGIN_ALIASES.get(str(key).lower()) or str(key)
        current = renamed.get(name)
        renamed[name] = (
            {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
        )
    return {**data, "plugins": renamed}


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel], origins: Mapping[str, str], prefix: str = ""
) -> str:
    """One line naming the key, where it came from, and what was expected (with a 'did you mean')."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join([prefix, *loc] if prefix else loc)
    where = _origin_for(dotted, origins)
    if err["type"] == "extra_forbidden":
        hint = _did_you_mean(model, loc, prefix)
        return f"unknown setting '{dotted}'{where}{hint}"
    value = err.get("input")
    shown = "***" if _looks_secret(dotted) else _short(repr(value))
    return f"invalid value {shown} for '{dotted}'{where}: {err['msg'].lower()}"


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())  # the message stays one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _origin_for(dotted: str, origins: Mapping[str, str]) -> str:
    key = dotted
    while key:
        if key in origins:
            return f" (in {origins[key]})"
        key = key.rpartition(".")[0]
    for known, where in origins.items():
        if known.startswith(dotted + "."):
            return f" (in {where})"
    return ""


def _did_you_mean(model: type[BaseModel], loc: list[str], prefix: str = "") -> str:
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return ""
        current = field.annotation
    names = list(getattr(current, "model_fields", {}))
    close = difflib.get_close_matches(loc[-1], names, n=1)
    head = [prefix] if prefix else []
    return f"; did you mean '{'.'.join([*head, *loc[:-1], close[0]])}'?" if close else ""


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    if not close:  # compare spellings without case, underscores and a trailing "config"/"plugin"
        folded = {_fold(choice): choice for choice in choices}
        match = difflib.get_close_matches(_fold(name), list(folded), n=1)
        close = [folded[match[0]]] if match else []
    return f"; did you mean '{close[0]}'?" if close else ""


def _fold(name: str) -> str:
    folded = name.lower().replace("_", "").replace("-", "")
    for suffix in ("config", "settings", "plugin"):
        folded = folded.removesuffix(suffix)
    return folded


def _looks_secret(dotted: str) -> bool:
    leaf = dotted.rsplit(".", 1)[-1].lower()
    return any(word in leaf for word in ("token", "secret", "password", "key"))


def _unalias(path: tuple[str, ...]) -> tuple[str, ...]:
    for old, new in KEY_ALIASES.items():
        if path[: len(old)] == old:
            return new + path[len(old) :]
    return path


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, dotted))
        else:
            items.append((dotted, value))
    return items
