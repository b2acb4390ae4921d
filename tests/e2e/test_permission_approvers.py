"""The other ways to answer a permission request: ``/mcp`` used by a separate Claude Code process (as the
README shows), and ``ccproxy permissions watch`` driven in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import BackgroundServer, running_fake_upstreams, serve_app, tool_output_text

from .helpers import claude_env, find_client, run_client
from .test_claude_sdk import answer_text, sdk_cli, wait_pending

pytestmark = pytest.mark.e2e


def claude_binary() -> str:
    found = find_client("claude")
    if found:
        return found
    try:
        import claude_agent_sdk
    except ImportError:
        pytest.skip("no claude CLI: run `make clients` or install claude-agent-sdk")
    return str(Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude")


def test_mcp_permission_tool_answers_a_separate_claude_code(tmp_path: Path) -> None:
    claude = claude_binary()
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    marker = work / "mcp-approved.txt"
    with running_fake_upstreams() as fakes:
        config = load_config(env={}, cli={"permissions.timeout_seconds": 60})
        with serve_app(create_app(config)) as url:
            mcp_config = json.dumps({"mcpServers": {"ccproxy": {"type": "http", "url": f"{url}/mcp"}}})
            argv = [
                claude,
                "-p",
                f"RUN: touch {marker}",
                "--output-format",
                "json",
                "--permission-prompt-tool",
                "mcp__ccproxy__check_permission",
                "--mcp-config",
                mcp_config,
            ]
            result: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda: result.update(run=run_client(argv, claude_env(home, fakes.url), work))
            )
            thread.start()
            pending = wait_pending(url, timeout=60)
            assert pending["source"] == "mcp" and pending["tool_name"] == "Bash"
            assert not marker.exists()
            import httpx

            assert httpx.post(f"{url}/permissions/{pending['id']}/respond", json={"allowed": True}).is_success
            thread.join(120)
    run = result["run"]
    assert run.returncode == 0, run.describe()
    assert marker.exists()
    assert run.json()["result"].startswith(tool_output_text("").strip())
    assert run.json()["permission_denials"] == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Terminal:
    """A process on a pseudo-terminal: read what it prints, type answers."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.output = ""

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed; got:\n{self.output}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        self.process.kill()
        self.process.wait(5)
        os.close(self.master)


def test_terminal_approver_in_a_pty_reconnects_and_approves(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = work / "watch-approved.txt"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CCPROXY_AUTH_TOKEN": "watch-token-123"}
    term = Terminal([sys.executable, "-m", "ccproxy", "permissions", "watch", "--url", url], env)
    try:
        term.expect("reconnecting")  # no server yet: it waits for one
        with running_fake_upstreams() as fakes:
            cli = sdk_cli(fakes.url, work, **{"security.auth_token": "watch-token-123"})
            with BackgroundServer(create_app(load_config(env={}, cli=cli)), port=port):
                term.expect("watching")
                out: dict[str, Any] = {}

                def ask() -> None:
                    import anthropic

                    client = anthropic.Anthropic(
                        base_url=url + "/claude", api_key="watch-token-123", max_retries=0
                    )
                    out["message"] = client.messages.create(
                        model="claude-opus-5-5",
                        max_tokens=50,
                        messages=[{"role": "user", "content": f"RUN: touch {marker}"}],
                    )

                thread = threading.Thread(target=ask)
                thread.start()
                term.expect("Allow? [y/n]")
                assert "Bash: touch" in term.output and str(marker) in term.output
                term.type("y\n")
                term.expect("allowed")
                thread.join(60)
        assert marker.exists()
        assert "[tool call] Bash" in answer_text(out["message"])
    finally:
        term.close()
