"""Plan usage for the CLIs (issue 15 item 4): the real Codex CLI in ChatGPT-login mode pointed at ccproxy.

In that mode Codex sends its account calls to ``chatgpt_base_url`` (here ``…/api/codex/backend-api/``): the
TUI asks ``/wham/accounts/check`` at start (and shows "selected workspace missing from routing discovery"
when the workspace it is logged in to is not in the answer) and ``/wham/usage`` for its status line and
``/status``; ccproxy answers both from its own account. Model calls go to ``openai_base_url``. Codex
insists on an HTTPS origin, so this proxy serves TLS with a test CA. The CLI's own ChatGPT token is a
throwaway: upstream must only ever see the proxy's token.

Claude Code is not driven here: measured with 2.1.331, it sends ``/api/oauth/usage`` to api.anthropic.com
itself (not to ``ANTHROPIC_BASE_URL``) and only with a claude.ai login, so the request never reaches a proxy
(docs/plan-usage.md); the route is tested in tests/providers/test_plan_usage.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest
import trustme

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import RunningFakes, serve_app

from .helpers import (
    CODEX_ACCOUNT,
    CODEX_MODEL,
    CODEX_TOKEN,
    base_env,
    codex_jwt,
    proxy_cli,
    reap_strays,
    run_client,
)

pytestmark = pytest.mark.e2e

CLIENT_ACCOUNT = "acct-the-clis-own-login"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA file, leaf certificate chain, leaf key): rustls wants a leaf signed by a separate CA."""
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, chain, key = root / "ca.pem", root / "chain.pem", root / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return ca_file, chain, key


@pytest.fixture(scope="module")
def https_proxy(fakes: RunningFakes, tls: tuple[Path, Path, Path]) -> Iterator[str]:
    _, chain, key = tls
    config = load_config(env={}, cli=proxy_cli(fakes))
    with serve_app(create_app(config), ssl_certfile=str(chain), ssl_keyfile=str(key)) as url:
        yield url.replace("http://", "https://", 1)


def chatgpt_codex(home: Path, proxy: str, account: str) -> tuple[dict[str, str], str]:
    """A CODEX_HOME logged in with ChatGPT to ``account`` (a throwaway token), aimed at the proxy: its env
    and the CLI's own token."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (home / "work").mkdir()
    auth_claims = {"chatgpt_account_id": account, "chatgpt_plan_type": "pro"}
    # Codex reads auth.json only with a non-empty signature part (it never checks it)
    token = codex_jwt(email="cli@example.invalid", **{"https://api.openai.com/auth": auth_claims}) + "c2ln"
    tokens = {
        "id_token": token,
        "access_token": token,
        "refresh_token": "rt-throwaway",
        "account_id": account,
    }
    last_refresh = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    auth = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": tokens, "last_refresh": last_refresh}
    (codex_home / "auth.json").write_text(json.dumps(auth))
    (codex_home / "config.toml").write_text(
        f"""model = "{CODEX_MODEL}"
approval_policy = "never"
sandbox_mode = "danger-full-access"
openai_base_url = "{proxy}/api/codex"
chatgpt_base_url = "{proxy}/api/codex/backend-api/"

[features]
plugins = false

[analytics]
enabled = false

[notice.model_migrations]
"{CODEX_MODEL}" = "gpt-6-sol"

[tui]
screen_reader_detection_done = true
"""
    )
    return {"CODEX_HOME": str(codex_home)}, token


def test_codex_exec_in_chatgpt_mode_runs_on_the_proxys_account(
    fakes: RunningFakes, https_proxy: str, codex_bin: str, tls: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    home = tmp_path / "codex-exec"
    codex_env, cli_token = chatgpt_codex(home, https_proxy, CLIENT_ACCOUNT)
    env = {**base_env(home), **codex_env, "CODEX_CA_CERTIFICATE": str(tls[0])}
    try:
        run = run_client([codex_bin, "exec", "--skip-git-repo-check", "say hello"], env, home / "work")
    finally:
        reap_strays(home)
    assert run.returncode == 0, run.describe()
    assert "Fake reply" in run.stdout, run.describe()
    # the workspace check and the model call (over the WebSocket) both on the proxy's account, although the
    # CLI is logged in to another one
    calls = fakes.codex.requests
    paths = [(r.method, r.path) for r in calls]
    assert set(paths) == {
        ("GET", "/backend-api/wham/accounts/check"),
        ("POST", "/backend-api/codex/responses"),
    }
    assert paths.count(("POST", "/backend-api/codex/responses")) == 1, paths
    for call in calls:
        assert call.headers["authorization"] == f"Bearer {CODEX_TOKEN}"
        assert call.headers["chatgpt-account-id"] == CODEX_ACCOUNT
        assert cli_token not in json.dumps(call.headers) and CLIENT_ACCOUNT not in json.dumps(call.headers)


# What the TUI asks its terminal at start, and what a terminal answers (cursor position, colours, keyboard
# protocol, device attributes); unanswered, it waits.
TERMINAL_ANSWERS = {
    b"\x1b[6n": b"\x1b[1;1R",
    b"\x1b]10;?": b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\",
    b"\x1b]11;?": b"\x1b]11;rgb:0000/0000/0000\x1b\\",
    b"\x1b[?u": b"\x1b[?0u",
    b"\x1b[c": b"\x1b[?62;22c",
}


class Terminal:
    """A program on a pseudo-terminal, its screen read through a VT emulator (pyte)."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, rows: int = 40, cols: int = 120
    ) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display if line.strip())

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        """Pump output (answering the terminal queries) until every needle is on screen."""
        deadline = time.monotonic() + timeout
        while not all(n in self.text for n in needles):
            if time.monotonic() > deadline:
                pytest.fail(f"not on screen after {timeout:g} s: {needles}\n{self.text}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the program exited
                pytest.fail(f"the program exited waiting for {needles}\n{self.text}")
            self.stream.feed(chunk)
            for query, answer in TERMINAL_ANSWERS.items():
                if query in chunk:
                    os.write(self.master, answer)
        return self.text

    def settle(self, seconds: float) -> None:
        with contextlib.suppress(pytest.fail.Exception):
            self.wait_for("\x00never on screen\x00", timeout=seconds)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        os.close(self.master)


def test_codex_tui_shows_the_accounts_plan_usage(
    fakes: RunningFakes, https_proxy: str, codex_bin: str, tls: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    fakes.codex.plan_usage.primary_percent = 37
    fakes.codex.plan_usage.secondary_percent = 81
    home = tmp_path / "codex-tui"
    # logged in to the proxy's workspace (as when both read ~/.codex/auth.json), with a token of its own
    codex_env, cli_token = chatgpt_codex(home, https_proxy, CODEX_ACCOUNT)
    terminal = Terminal(
        [codex_bin], {**base_env(home), **codex_env, "CODEX_CA_CERTIFICATE": str(tls[0])}, home / "work"
    )
    try:
        # the status line shows the weekly window from the start
        terminal.wait_for("Ask Codex to do anything", "weekly limit: 19% left")
        terminal.type("/status")
        terminal.wait_for("› /status")
        terminal.settle(1.0)  # the command popup takes the Enter only once it has opened
        terminal.type("\r")
        screen = terminal.wait_for("5h limit:", "Weekly limit:")
    finally:
        terminal.close()
        reap_strays(home)
    lines = {line.split(":", 1)[0].strip(): line for line in screen.splitlines() if ":" in line}
    assert "63% left" in lines["5h limit"], screen
    assert "19% left" in lines["Weekly limit"], screen
    assert f"ChatGPT workspace:   {CODEX_ACCOUNT}" in screen, screen

    account_calls = [(r.method, r.path) for r in fakes.codex.requests]
    assert ("GET", "/backend-api/wham/accounts/check") in account_calls
    assert ("GET", "/backend-api/wham/usage") in account_calls
    for call in fakes.codex.requests:
        assert call.headers["authorization"] == f"Bearer {CODEX_TOKEN}"
        assert call.headers["chatgpt-account-id"] == CODEX_ACCOUNT
        assert cli_token not in json.dumps(call.headers)
