"""Running the app under uvicorn (uvloop + httptools), with the safety checks on the bind address."""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import ipaddress
import os
import shutil
import socket
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


def check_network() -> None:
    """A SOCKS proxy, a malformed proxy variable or a missing CA file fails the start in one line."""
    import structlog

    from ccproxy.network import ProxyConfig, check_ca_bundle

    check_ca_bundle(None)
    proxies = ProxyConfig.from_env()
    if proxies.enabled:
        structlog.get_logger("ccproxy").info(
            "upstream proxy from the environment",
            https=proxies.https.url if proxies.https else None,
            http=proxies.http.url if proxies.http else None,
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
    from ccproxy.protocol import LimitedHttpProtocol

    check_bind(config)
    # Plugin settings are checked here, before any worker starts: a config error is one line, exit 2.
    plugins = load_plugins(config, mock=mock, fake_base_url=mock_base_url(config))
    settings = config.settings
    configure(settings.logging.level, settings.logging.format)
    check_network()
    common: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "loop": "uvloop",
        # httptools with the header/timeout/connection limits (a partial, so --workers can pickle it)
        "http": functools.partial(LimitedHttpProtocol, limits=settings.limits),
        "timeout_keep_alive": settings.limits.keep_alive_seconds,
        "ws": "websockets-sansio",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "log_level": settings.logging.level,
        "timeout_graceful_shutdown": settings.server.graceful_shutdown_seconds,
        "server_header": False,
        "proxy_headers": False,  # we never trust X-Forwarded-*; and it is a layer per request
    }
    # Bound before any startup work: a port in use is one clear error, and "ready" means listening.
    sock = listen(settings.server.host, settings.server.port)
    if settings.server.workers > 1 or settings.server.reload:
        sock.close()  # the supervisor binds its own, shared with the workers
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
    server = uvicorn.Server(uvicorn.Config(create_app(config, mock=mock, plugins=plugins), **common))
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)  # the application failed to start (logged); uvicorn's own exit code


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (connections wait in the backlog until the app is up)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            reason += " (another ccproxy or another program has it: stop that one or choose --port)"
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock
