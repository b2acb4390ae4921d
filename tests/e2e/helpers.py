"""Helpers for the end-to-end tests: where the client binaries are, how to run them and a proxy process.

The client binaries come from ``make clients`` (``.clients/npm/node_modules/.bin``). Every client runs with a
scratch HOME/CODEX_HOME and a hand-built environment (nothing of the developer's leaks in: no real
credentials, no real network), no retries, ``stdin`` closed, a timeout, and in its own process group, which
is killed afterwards; ``reap_strays`` stops anything that escaped it (Codex's app-server daemon).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccproxy.testing import RunningFakes
from ccproxy.testing.fake_oauth import make_unsigned_jwt

REPO = Path(__file__).resolve().parents[2]
CLIENT_BIN = REPO / ".clients" / "npm" / "node_modules" / ".bin"
CLIENT_TIMEOUT = 120.0

CLAUDE_TOKEN = "sk-ant-oat01-test"
CODEX_ACCOUNT = "acct-test"


def codex_jwt(**claims: Any) -> str:
    return make_unsigned_jwt(
        {"exp": 4102444800, "https://api.openai.com/auth": {"chatgpt_account_id": CODEX_ACCOUNT}, **claims}
    )


CODEX_TOKEN = codex_jwt()


def find_client(name: str) -> str | None:
    """The pinned binary from ``make clients``, else one on PATH."""
    pinned = CLIENT_BIN / name
    if pinned.exists() and os.access(pinned, os.X_OK):
        return str(pinned)
    return shutil.which(name)


def require_client(name: str) -> str:
    path = find_client(name)
    if path is None:
        pytest.skip(f"{name} CLI not installed (run `make clients` to install it into .clients/)")
    if name == "codex" and shutil.which("node") is None:
        pytest.skip("the codex CLI needs node on PATH")
    return path


# ------------------------------------------------------------------------------------------ the proxy


def proxy_cli(
    fakes: RunningFakes, *, claude_token: str = CLAUDE_TOKEN, codex_token: str = CODEX_TOKEN
) -> dict[str, Any]:
    return {
        "plugins.claude_api.base_url": fakes.url,
        "plugins.claude_api.access_token": claude_token,
        "plugins.codex.enabled": True,
        "plugins.codex.base_url": fakes.codex_url,
        "plugins.codex.access_token": codex_token,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ProxyProcess:
    """``ccproxy serve`` in a subprocess: the production logging path, stderr captured to a file."""

    url: str
    home: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_proxy_process(tmp: Path, settings: Mapping[str, str]) -> ProxyProcess:
    """Start ``ccproxy serve`` with ``settings`` as ``SECTION__KEY`` variables and wait for /health."""
    home = tmp / "proxy-home"
    home.mkdir()
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", **settings}
    log_path = tmp / "proxy.stderr"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", "from ccproxy.cli import app; app()", "serve", "--port", str(port)],
            cwd=home,  # no ./.ccproxy.toml of the developer's
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proc = ProxyProcess(f"http://127.0.0.1:{port}", home, log_path, process)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ccproxy serve exited with {process.returncode}:\n{proc.log_text()}")
        try:
            if httpx.get(proc.url + "/health", timeout=1).status_code in (200, 503):
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.stop()
            raise TimeoutError(f"ccproxy serve did not come up:\n{proc.log_text()}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ the clients


@dataclass
class ClientRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.2f} s\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"client output is not JSON\n{self.describe()}")


def run_client(
    argv: list[str], env: Mapping[str, str], cwd: Path, *, timeout: float = CLIENT_TIMEOUT
) -> ClientRun:
    """Run a client in its own process group; the whole group is killed afterwards."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        out, err = process.communicate()
        run = ClientRun(argv, -9, out.decode(errors="replace"), err.decode(errors="replace"), timeout)
        pytest.fail(f"client timed out\n{run.describe()}")
    finally:
        _kill_group(process.pid)
    return ClientRun(
        argv,
        process.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.perf_counter() - started,
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def reap_strays(marker: Path) -> list[int]:
    """Kill processes that outlived their client: any whose executable or command line lies under
    ``marker`` (a per-test CODEX_HOME, e.g. Codex's app-server daemon copied into it). Returns their pids."""
    killed: list[int] = []
    needle = str(marker)
    own = os.getpid()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            exe = ""
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if exe.startswith(needle) or needle in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


# Egress guard: anything a client tries to reach besides loopback (Codex's plugin sync to github.com and
# its metrics to ab.chatgpt.com, Claude Code's update checks) goes to a closed local port instead of the
# network. Loopback, where the proxy listens, stays direct.
DEAD_PROXY = "http://127.0.0.1:9"
EGRESS_GUARD = {
    **{name: DEAD_PROXY for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy")},
    **{name: "127.0.0.1,localhost,::1" for name in ("NO_PROXY", "no_proxy")},
}


def base_env(home: Path) -> dict[str, str]:
    """What every client gets: PATH (node), a scratch HOME, a locale and the egress guard; nothing else."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        **EGRESS_GUARD,
    }


CLAUDE_CLIENT_KEY = "sk-e2e-client-key-for-claude-code"
CLAUDE_CLIENT_BETA = "e2e-client-beta-2099-01-01"


def claude_env(home: Path, base_url: str, *, api_key: str = CLAUDE_CLIENT_KEY) -> dict[str, str]:
    return {
        **base_env(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        # A beta of the client's own, to see that the proxy keeps what the client asked for.
        "ANTHROPIC_BETAS": CLAUDE_CLIENT_BETA,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
    }


CODEX_CLIENT_KEY = "sk-e2e-client-key-for-codex"
CODEX_MODEL = "gpt-5.5"  # a slug of Codex's bundled catalog with plain function tools (not code mode)


def codex_config(base_url: str, *, sandbox: str, builtin: bool = False) -> str:
    """``config.toml`` for a custom Responses provider at ``base_url`` (key from ``$CCPROXY_E2E_KEY``), or,
    with ``builtin``, for Codex's own OpenAI provider pointed there (key from ``$CODEX_API_KEY``; it speaks
    WebSocket first). Plugin sync and analytics are off: they would contact github.com and chatgpt.com."""
    top = f'''\
model = "{CODEX_MODEL}"
approval_policy = "never"
sandbox_mode = "{sandbox}"
'''
    hygiene = """
[features]
plugins = false

[analytics]
enabled = false
"""
    if builtin:
        return top + f'openai_base_url = "{base_url}"\n' + hygiene
    return (
        top
        + 'model_provider = "ccproxy"\n'
        + hygiene
        + f'''
[model_providers.ccproxy]
name = "ccproxy"
base_url = "{base_url}"
wire_api = "responses"
env_key = "CCPROXY_E2E_KEY"
request_max_retries = 0
stream_max_retries = 0
'''
    )


RunClaude = Callable[..., ClientRun]  # the run_claude fixture
RunCodex = Callable[..., ClientRun]  # the run_codex fixture
