"""No credential leaks into what the proxy writes, with every logging knob turned up.

``ccproxy serve`` runs as a subprocess (the production logging path: structlog JSON on stderr, debug level,
``logging.verbose_api`` on, ``logging.request_log_dir`` set) in front of the in-process fakes. Claude Code
(``/api`` and ``/api/codex``) and ``codex exec`` (custom provider over HTTP, built-in provider over the
WebSocket) each complete a tool round trip through it; then its stderr
and every file under its HOME and request-log directory are searched for the upstream access tokens and the
clients' own keys.
"""

from __future__ import annotations

import json
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccproxy.testing import RunningFakes

from .helpers import (
    CLAUDE_CLIENT_KEY,
    CODEX_CLIENT_KEY,
    ProxyProcess,
    RunClaude,
    RunCodex,
    codex_jwt,
    start_proxy_process,
)

pytestmark = pytest.mark.e2e

# Realistically shaped and unique, so a hit can only come from this run.
CLAUDE_TOKEN = f"sk-ant-oat01-{secrets.token_urlsafe(24)}"
CODEX_NONCE = secrets.token_hex(12)
CODEX_TOKEN = codex_jwt(nonce=CODEX_NONCE)
CODEX_PAYLOAD = CODEX_TOKEN.split(".")[1]
UPSTREAM_SECRETS = {
    "claude access token": CLAUDE_TOKEN,
    "codex access token": CODEX_TOKEN,
    "codex token payload": CODEX_PAYLOAD,
    "codex token nonce": CODEX_NONCE,
}
CLIENT_SECRETS = {"claude code's api key": CLAUDE_CLIENT_KEY, "codex cli's api key": CODEX_CLIENT_KEY}


def proxy_settings(fakes: RunningFakes, request_dir: Path) -> dict[str, str]:
    return {
        "PLUGINS__CLAUDE_API__BASE_URL": fakes.url,
        "PLUGINS__CLAUDE_API__ACCESS_TOKEN": CLAUDE_TOKEN,
        "PLUGINS__CODEX__ENABLED": "true",
        "PLUGINS__CODEX__BASE_URL": fakes.codex_url,
        "PLUGINS__CODEX__ACCESS_TOKEN": CODEX_TOKEN,
        "LOGGING__LEVEL": "debug",
        "LOGGING__FORMAT": "json",
        "LOGGING__VERBOSE_API": "true",
        "LOGGING__REQUEST_LOG_DIR": str(request_dir),
    }


@pytest.fixture
def logged_proxy(fakes: RunningFakes, tmp_path: Path) -> Iterator[tuple[ProxyProcess, Path]]:
    request_dir = tmp_path / "request-log"
    proc = start_proxy_process(tmp_path, proxy_settings(fakes, request_dir))
    try:
        yield proc, request_dir
    finally:
        proc.stop()


def test_no_token_in_logs_or_request_files(
    logged_proxy: tuple[ProxyProcess, Path],
    fakes: RunningFakes,
    run_claude: RunClaude,
    run_codex: RunCodex,
) -> None:
    proc, request_dir = logged_proxy
    runs = [
        run_claude(proc.url + "/api", "RUN: echo scan-claude-api"),
        run_claude(proc.url + "/api/codex", "RUN: echo scan-claude-codex"),
        run_codex(proc.url + "/api/codex/v1", "RUN: echo scan-codex-cli"),
        run_codex(proc.url + "/api/codex/v1", "RUN: echo scan-codex-ws", builtin=True),  # WebSocket
    ]
    for run in runs:
        assert run.returncode == 0, run.describe()
    for run, marker in zip(runs[:2], ("scan-claude-api", "scan-claude-codex"), strict=True):
        assert run.json()["result"] == f"The tool returned:\n{marker}", run.describe()
    assert "scan-codex-cli" in runs[2].stdout, runs[2].describe()
    assert "scan-codex-ws" in runs[3].stdout and "Reconnecting" not in runs[3].stderr, runs[3].describe()

    # the tokens really were used upstream, so finding none below means something
    auth = [r.headers.get("authorization") for r in (*fakes.anthropic.requests, *fakes.codex.requests)]
    assert auth == [f"Bearer {CLAUDE_TOKEN}"] * 2 + [f"Bearer {CODEX_TOKEN}"] * 6

    deadline = time.monotonic() + 5  # request files are written off the event loop
    while len(list(request_dir.glob("*-client.http"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stop()

    log = proc.log_text()
    files = sorted(p for root in (proc.home, request_dir) for p in root.rglob("*") if p.is_file())
    request_files = [p for p in files if p.parent == request_dir]
    # the raw HTTP logger: both legs of the six HTTP exchanges (and of the WebSocket turns)
    assert len([p for p in request_files if p.name.endswith("-client.http")]) >= 6, [
        p.name for p in request_files
    ]
    assert len([p for p in request_files if p.name.endswith("-upstream.http")]) >= 6
    assert log.count('"api exchange"') >= 6, log[-3000:]
    # bodies were recorded, including the tool output that came back through the proxy
    for marker in ("scan-claude-api", "scan-claude-codex", "scan-codex-cli"):
        assert marker in log
        assert any(marker in p.read_text(errors="replace") for p in request_files)

    secrets = {**UPSTREAM_SECRETS, **CLIENT_SECRETS}
    stderr = log
    leaks = [
        f"{what} in {where}"
        for where, text in [("stderr", stderr), *((str(p), p.read_text(errors="replace")) for p in files)]
        for what, value in secrets.items()
        if value in text
    ]
    assert leaks == []

    assert stat.S_IMODE(request_dir.stat().st_mode) == 0o700
    for path in request_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_debug_log_keeps_websocket_handshake_credentials_out(
    logged_proxy: tuple[ProxyProcess, Path], run_codex: RunCodex
) -> None:
    proc, _ = logged_proxy
    run = run_codex(proc.url + "/api/codex/v1", "RUN: echo scan-ws-handshake", builtin=True)
    assert run.returncode == 0, run.describe()
    proc.stop()
    log = proc.log_text()
    assert "WebSocket /api/codex/v1/responses" in log  # the handshake did happen, at debug level
    leaks = [what for what, value in {**UPSTREAM_SECRETS, **CLIENT_SECRETS}.items() if value in log]
    assert leaks == []


# Issue 10 item 4: credentials under any secret-bearing header name, and token-shaped values under an
# innocent one, stay out of the debug log (uvicorn's and websockets' handshake dumps included), the
# verbose API log and the request files.
HANDSHAKE_SECRETS = {
    "api-key": secrets.token_hex(16),
    "chatgpt-token": secrets.token_hex(16),
    "x-acme-session-credential": secrets.token_hex(16),
    "x-custom-auth": secrets.token_hex(16),
    "x-innocent-name": f"sk-ant-api03-{secrets.token_urlsafe(24)}",
}


def test_debug_log_redacts_custom_secret_headers(logged_proxy: tuple[ProxyProcess, Path]) -> None:
    import httpx
    from websockets.sync.client import connect

    proc, request_dir = logged_proxy
    url = proc.url.replace("http://", "ws://") + "/api/codex/v1/responses"
    frame = {"type": "response.create", "model": "gpt-5.5", "input": [{"role": "user", "content": "hi"}]}
    with connect(url, additional_headers=HANDSHAKE_SECRETS) as ws:
        ws.send(json.dumps(frame))
        while '"response.completed"' not in (event := str(ws.recv(timeout=10))):
            assert '"response.failed"' not in event, event
    body = {"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(proc.url + "/api/v1/messages", json=body, headers=HANDSHAKE_SECRETS)
    assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 5
    while len(list(request_dir.glob("*.http"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stop()
    log = proc.log_text()
    assert "< chatgpt-token: ***" in log  # the handshake's header dump happened at debug level, redacted
    texts = [("stderr", log), *((p.name, p.read_text()) for p in request_dir.glob("*.http"))]
    assert len(texts) >= 2
    leaks = [
        f"{name} in {where}"
        for where, text in texts
        for name, value in HANDSHAKE_SECRETS.items()
        if value in text
    ]
    assert leaks == []
