"""Shared fixtures: isolated home directories, throwaway plugin distributions, a served proxy."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccproxy.app import create_app
from ccproxy.config import LoadedConfig, load_config
from ccproxy.testing import serve_app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME/XDG dirs, so nothing reads or writes the developer's real files."""
    home = tmp_path_factory.mktemp("home")
    for name, value in {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "CLAUDE_CONFIG_DIR": home / ".claude",
        "CODEX_HOME": home / ".codex",
    }.items():
        monkeypatch.setenv(name, str(value))
    for name in (
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CCPROXY_CONFIG",
        "CCPROXY_VERBOSE_API",
        "CCPROXY_REQUEST_LOG_DIR",
        # the developer's own network settings must not steer tests that only talk to 127.0.0.1
        *(
            f"{v}{p}"
            for p in ("_PROXY", "_proxy")
            for v in ("HTTP", "HTTPS", "ALL", "NO", "http", "https", "all", "no")
        ),
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def install_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Register entry points in the ``ccproxy.plugins`` group, as an installed distribution would."""

    def install(entry_points: dict[str, str]) -> None:
        dist = tmp_path / "site" / "ccproxy_test_plugins-1.0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ccproxy-test-plugins\nVersion: 1.0\n")
        lines = ["[ccproxy.plugins]", *(f"{k} = {v}" for k, v in entry_points.items())]
        (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.syspath_prepend(str(REPO / "examples"))

    return install


def config_for(cli: dict[str, Any] | None = None, **kwargs: Any) -> LoadedConfig:
    """Config from command-line-style dotted keys only (the environment is not consulted)."""
    return load_config(env={}, cli=cli or {}, **kwargs)


@pytest.fixture
def served() -> Iterator[Callable[..., str]]:
    """``served(config, mock=False)`` → base URL of a running proxy; all are stopped after the test."""
    stack: list[Any] = []

    def start(config: LoadedConfig, *, mock: bool = False) -> str:
        cm = serve_app(create_app(config, mock=mock))
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 15) -> None:
    """Until ``ccproxy serve`` (a subprocess) answers ``/health``; its stderr if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        try:
            if httpx.get(url + "/health", timeout=0.5).status_code in (200, 503):
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("server did not become healthy")


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pytest_report_header(config: pytest.Config) -> str:
    return f"python {sys.version.split()[0]}; ccproxy at {REPO}"
