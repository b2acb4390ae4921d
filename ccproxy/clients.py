"""``ccproxy env`` and ``ccproxy run``: point Claude Code, the Codex CLI and the SDKs at ccproxy.

``env`` prints what to paste (shell exports, or the Codex TOML snippet). ``run`` starts the real CLI with
the same settings in its environment (Codex: as ``-c`` flags on its command line; nothing is written to the
user's own files), against the ccproxy already running on the configured address, or a ``ccproxy serve``
it starts for the child's lifetime. The exit code is the child's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ccproxy.config import ConfigError, LoadedConfig

Client = Literal["claude", "codex", "openai", "anthropic"]
Provider = Literal["claude", "codex"]
CLIENTS: tuple[Client, ...] = ("claude", "codex", "openai", "anthropic")
RUNNABLE = ("claude", "codex")
# The key clients send when the proxy has no auth token: any value works, clients just need one.
DUMMY_KEY = "ccproxy"
KEY_VARIABLE = "CCPROXY_API_KEY"  # the variable the Codex provider snippet reads its key from
# A model of Codex's bundled catalog with plain function tools (its default, a code-mode model, sends
# tools as JavaScript); used unless the user picks one (-m, -c model=..., or their config.toml).
CODEX_MODEL = "gpt-5.5"
DEFAULT_PROVIDER: dict[Client, Provider] = {
    "claude": "claude",
    "anthropic": "claude",
    "openai": "claude",
    "codex": "codex",
}


@dataclass
class ClientSettings:
    env: dict[str, str]  # variables to export
    args: list[str] = field(default_factory=list)  # flags before the user's own (Codex's -c overrides)
    toml: str = ""  # the Codex config.toml snippet


def proxy_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def client_key(config: LoadedConfig) -> str:
    token = config.settings.security.auth_token
    return token.get_secret_value() if token is not None and token.get_secret_value() else DUMMY_KEY


def settings_for(client: Client, url: str, key: str, provider: Provider | None = None) -> ClientSettings:
    """What ``client`` needs to talk to ccproxy at ``url`` through ``provider``'s subscription."""
    chosen = provider or DEFAULT_PROVIDER[client]
    api = f"{url}/api/codex" if chosen == "codex" else f"{url}/api"
    if client == "claude":
        return ClientSettings(
            {
                "ANTHROPIC_BASE_URL": api,
                "ANTHROPIC_AUTH_TOKEN": key,
                # Claude Code's telemetry and update checks would go through the proxy too; keep them off.
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            }
        )
    if client == "anthropic":
        return ClientSettings({"ANTHROPIC_BASE_URL": api, "ANTHROPIC_API_KEY": key})
    if client == "openai":
        return ClientSettings({"OPENAI_BASE_URL": f"{api}/v1", "OPENAI_API_KEY": key})
    provider_table = {
        "name": "ccproxy",
        "base_url": f"{api}/v1",
        "wire_api": "responses",
        "env_key": KEY_VARIABLE,
    }
    args = ["-c", 'model_provider="ccproxy"']
    for name, value in provider_table.items():
        args += ["-c", f"model_providers.ccproxy.{name}={json.dumps(value)}"]
    toml = 'model_provider = "ccproxy"\n\n[model_providers.ccproxy]\n' + "".join(
        f"{name} = {json.dumps(value)}\n" for name, value in provider_table.items()
    )
    return ClientSettings({KEY_VARIABLE: key}, args, toml)


def render(client: Client, settings: ClientSettings) -> str:
    """``ccproxy env``'s output: exports to paste into a shell (and for Codex the config.toml snippet)."""
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in settings.env.items())
    if not settings.toml:
        return exports
    codex_home = "$CODEX_HOME" if os.environ.get("CODEX_HOME") else "~/.codex"
    return (
        f"# Add to {codex_home}/config.toml (model_provider at the top, before any [table]):\n"
        f"{settings.toml}\n"
        f"# and in your shell (any value works unless the proxy has an auth token):\n{exports}"
    )


# ------------------------------------------------------------------------------------------ ccproxy run


def find_binary(client: str, explicit: str | None = None) -> str:
    if explicit:
        path = shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
        if path is None:
            raise ConfigError(f"--bin {explicit}: not an executable")
        return path
    found = shutil.which(client)
    if found is None:
        package = "@anthropic-ai/claude-code" if client == "claude" else "@openai/codex"
        raise ConfigError(
            f"'{client}' is not on PATH; install it (npm install -g {package}) or pass --bin PATH"
        )
    return found


# Loopback probes go direct, whatever HTTP_PROXY says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_ccproxy(url: str, timeout: float = 1.0) -> bool | None:
    """True: a ccproxy answers /health at ``url``; False: something else does; None: nothing listens."""
    try:
        with _DIRECT.open(f"{url}/health", timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:  # 503: a ccproxy whose checks fail is still a ccproxy
        body = exc.read()
    except (urllib.error.URLError, OSError):
        return None
    try:
        return bool(json.loads(body).get("serviceId") == "ccproxy")
    except (ValueError, AttributeError):
        return False


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None = None  # None: a server that was already running
    log_path: Path | None = None


@contextlib.contextmanager
def ensure_server(
    config: LoadedConfig,
    *,
    host: str | None,
    port: int | None,
    mock: bool,
    serve_args: Sequence[str] = (),
    note: Any = print,
) -> Iterator[Server]:
    """The running ccproxy at the configured address, or a ``ccproxy serve`` for the block's lifetime.

    ``mock`` never reuses a server (it could be spending a real subscription): it starts an offline one,
    on a free port unless ``port`` is given."""
    bind = host or config.settings.server.host
    if port is None:
        port = free_port(bind) if mock else config.settings.server.port
    url = proxy_url(bind, port)
    if not mock:
        found = is_ccproxy(url)
        if found:
            note(f"ccproxy: using the server running at {url}")
            yield Server(url)
            return
        if found is False:
            raise ConfigError(f"{url} answers but is not ccproxy; pass --port to use another port")
    fd, log_name = tempfile.mkstemp(prefix="ccproxy-run-", suffix=".log")
    log_path = Path(log_name)
    argv = [sys.executable, "-m", "ccproxy", "serve", "--host", bind, "--port", str(port), *serve_args]
    if mock:
        argv.append("--mock")
    with os.fdopen(fd, "wb") as log_file:
        # Its own session: the Ctrl-C a user types into the CLI's terminal is not meant for the server.
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(url, process, log_path)
    try:
        _wait_ready(server)
        note(f"ccproxy: started {'an offline (--mock) ' if mock else 'a '}server at {url} (log: {log_path})")
        yield server
    finally:
        _stop(process)
        if process.returncode in (0, -signal.SIGINT, -signal.SIGTERM):
            log_path.unlink(missing_ok=True)


def _wait_ready(server: Server, timeout: float = 30.0) -> None:
    assert server.process is not None and server.log_path is not None
    deadline = time.monotonic() + timeout
    while not is_ccproxy(server.url, timeout=0.5):
        if server.process.poll() is not None or time.monotonic() > deadline:
            tail = server.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(f"ccproxy serve did not start ({tail[0]}); log: {server.log_path}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # graceful: streams in flight finish
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def codex_model_chosen(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Did the user pick a Codex model (flag, -c override, or their config.toml)?"""
    for index, arg in enumerate(args):
        if arg in ("-m", "--model") or arg.startswith(("--model=", "-m=")):
            return True
        if arg in ("-c", "--config") and index + 1 < len(args) and args[index + 1].split("=")[0] == "model":
            return True
    home = Path(environ.get("CODEX_HOME") or Path(environ.get("HOME", "~")).expanduser() / ".codex")
    try:
        return "model" in tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False


def child_command(
    client: str, binary: str, args: Sequence[str], settings: ClientSettings, environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of the CLI: the user's environment with ccproxy's settings on top."""
    env = dict(environ)
    env.update(settings.env)
    extra = list(settings.args)
    if client == "claude":
        env.pop("ANTHROPIC_API_KEY", None)  # it would win over the token ccproxy expects
        env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    elif not codex_model_chosen(args, environ):
        extra += ["-c", f"model={json.dumps(CODEX_MODEL)}"]
    return [binary, *extra, *args], env


def run(
    config: LoadedConfig,
    client: Client,
    args: Sequence[str],
    *,
    host: str | None = None,
    port: int | None = None,
    mock: bool = False,
    provider: Provider | None = None,
    binary: str | None = None,
    serve_args: Sequence[str] = (),
) -> int:
    """``ccproxy run``: the CLI's exit code (128 + N when it died of signal N)."""
    path = find_binary(client, binary)
    chosen = provider or DEFAULT_PROVIDER[client]
    if chosen == "codex":
        serve_args = [*serve_args, "--enable-plugin", "codex"]
    with ensure_server(config, host=host, port=port, mock=mock, serve_args=serve_args, note=_note) as server:
        settings = settings_for(client, server.url, client_key(config), chosen)
        argv, env = child_command(client, path, args, settings, os.environ)
        return _run_child(argv, env)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_child(argv: list[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        raise ConfigError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    # The child shares the terminal: Ctrl-C reaches it directly, so this process only waits. A TERM or HUP
    # sent to ccproxy is passed on, and the server is stopped when the child ends.
    passed_on = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s]
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *passed_on)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in passed_on:
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
