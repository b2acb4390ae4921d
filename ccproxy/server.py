"""Running the app under uvicorn (uvloop + httptools), with the safety checks on the bind address."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ccproxy.config import LoadedConfig


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: LoadedConfig) -> None:
    settings = config.settings
    if is_loopback(settings.server.host) or settings.security.auth_token is not None:
        return
    if settings.security.allow_unauthenticated:
        return
    raise ValueError(
        f"refusing to bind {settings.server.host} without an auth token: anyone on the network could use "
        "your subscription. Set --auth-token (or security.auth_token), or pass --allow-unauthenticated."
    )


@contextlib.contextmanager
def _metrics_dir(workers: bool) -> Iterator[None]:
    """Several workers share their metrics through a fresh directory (``ccproxy.observe.metrics``)."""
    if not workers:
        yield
        return
    path = tempfile.mkdtemp(prefix="ccproxy-metrics-")
    os.environ["CCPROXY_METRICS_DIR"] = path
    try:
        yield
    finally:
        del os.environ["CCPROXY_METRICS_DIR"]
        shutil.rmtree(path, ignore_errors=True)


def run(config: LoadedConfig, *, cli: dict[str, Any], mock: bool, config_file: Path | None) -> None:
    import uvicorn

    from ccproxy.app import CLI_ENV, create_app, mock_base_url
    from ccproxy.logs import configure
    from ccproxy.plugins import load_plugins

    check_bind(config)
    # Plugin settings are checked here, before any worker starts: a config error is one line, exit 2.
    plugins = load_plugins(config, mock=mock, fake_base_url=mock_base_url(config))
    settings = config.settings
    configure(settings.logging.level, settings.logging.format)
    common: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "log_level": settings.logging.level,
        "timeout_graceful_shutdown": settings.server.graceful_shutdown_seconds,
        "server_header": False,
        "proxy_headers": False,  # we never trust X-Forwarded-*; and it is a layer per request
    }
    if settings.server.workers > 1 or settings.server.reload:
        gc.enable()  # this process only supervises; the workers are fresh interpreters
        # Worker processes build their own app from the same layers.
        layer = {**cli, "_mock": mock, "_config_file": str(config_file) if config_file else None}
        os.environ[CLI_ENV] = orjson.dumps(layer, default=str).decode()
        with _metrics_dir(settings.server.workers > 1):
            uvicorn.run(
                "ccproxy.app:create_app_from_env",
                factory=True,
                workers=None if settings.server.reload else settings.server.workers,
                reload=settings.server.reload,
                **common,
            )
        return
    uvicorn.run(create_app(config, mock=mock, plugins=plugins), **common)
