"""What `ccproxy serve` writes on stderr, as a user starts it (issue 11 item 2).

One pipeline (uvicorn's records are JSON lines like ours), a warning with the login command for a provider
without credentials, "ready" only once the socket is bound, a port in use as one line and a non-zero exit,
per-request debug lines at ``LOGGING__LEVEL=debug``, and a failed request's reason on its access-log line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccproxy.testing import RunningFakes

from .helpers import free_port, start_proxy_process

pytestmark = pytest.mark.e2e


def records(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a line that is not JSON on stderr: {line!r}") from None
    return parsed


def test_no_credentials_warns_at_start_and_the_401_reason_is_logged(
    fakes: RunningFakes, tmp_path: Path
) -> None:
    proc = start_proxy_process(
        tmp_path, {"LOGGING__FORMAT": "json", "PLUGINS__CLAUDE_API__BASE_URL": fakes.url}
    )
    try:
        resp = httpx.post(
            proc.url + "/api/v1/messages", json={"model": "sonnet", "max_tokens": 5, "messages": []}
        )
        assert resp.status_code == 401
    finally:
        proc.stop()
    logged = records(proc.log_text())
    events = [r["event"] for r in logged]
    warning = next(r for r in logged if r["level"] == "warning" and "claude_api" in r["event"])
    assert "ccproxy auth login" in warning["event"]
    assert events.index(warning["event"]) < events.index("ccproxy ready")
    assert any(r.get("logger") == "uvicorn.error" for r in logged)  # uvicorn's own lines, rendered alike
    access = next(r for r in logged if r["event"] == "request" and r["path"] == "/api/v1/messages")
    assert access["status"] == 401 and "ccproxy auth login" in access["reason"]


def test_debug_level_gives_per_request_lines(fakes: RunningFakes, tmp_path: Path) -> None:
    proc = start_proxy_process(
        tmp_path,
        {
            "LOGGING__LEVEL": "debug",
            "LOGGING__FORMAT": "json",
            "PLUGINS__CLAUDE_API__BASE_URL": fakes.url,
            "PLUGINS__CLAUDE_API__ACCESS_TOKEN": "sk-ant-oat01-debug-test-token",
        },
    )
    try:
        body = {"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        resp = httpx.post(proc.url + "/api/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        request_id = resp.headers["x-request-id"]
    finally:
        proc.stop()
    text = proc.log_text()
    assert "debug-test-token" not in text
    mine = [r for r in records(text) if r.get("request_id") == request_id]
    sending = next(r for r in mine if r["event"] == "upstream request")
    assert sending["level"] == "debug" and sending["provider"] == "claude_api"
    assert sending["url"] == fakes.url + "/v1/messages"  # no query string
    assert sending["model"] == "sonnet" and sending["upstream_model"].startswith("claude-sonnet-4-5")
    answered = next(r for r in mine if r["event"] == "upstream answered")
    assert answered["status"] == 200 and answered["headers_ms"] >= 0
    access = next(r for r in mine if r["event"] == "request")
    assert access["status"] == 200 and "reason" not in access and access["ms"] > 0


def test_port_in_use_is_one_line_and_a_failing_exit(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        run = subprocess.run(
            [sys.executable, "-m", "ccproxy", "serve", "--port", str(port)],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "LOGGING__FORMAT": "json"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in lines[0]
    assert "ccproxy ready" not in run.stderr and "startup" not in run.stderr.lower()
