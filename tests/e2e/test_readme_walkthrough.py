"""The README's "First steps", run line by line as a new user would, in a fresh HOME.

Each line of the README block is run with bash exactly as written (`&` lines in the background, `kill %1`
stops the background server). The environment only says where things are: PATH with ccproxy and the
pinned CLIs, a free port as `SERVER__PORT` (so every line talks to the same server), and the built-in fakes
as the Claude upstream and its OAuth server (`PLUGINS__CLAUDE_API__*`). The install line is the one line
not run: the test environment is that install (the same package, with its `ccproxy` command).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ccproxy.testing import RunningFakes, running_fake_upstreams

from .helpers import CLIENT_BIN, REPO, base_env, free_port, reap_strays, require_client

pytestmark = pytest.mark.e2e

EXPECTED = [
    "pip install ccproxy-api",
    "ccproxy serve --mock &",
    'ccproxy run claude -p "RUN: echo hello"',
    "kill %1",
    "ccproxy auth login",
    "ccproxy auth status",
    "ccproxy serve &",
    'ccproxy run claude -p "RUN: echo hello again"',
]


def readme_steps() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## First steps", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README: no sh block under 'First steps'"
    lines = block.group(1).splitlines()
    return [re.split(r"\s+#\s", line, maxsplit=1)[0].strip() for line in lines if line.strip()]


def test_readme_lists_the_walkthrough_this_test_runs() -> None:
    assert readme_steps() == EXPECTED


@pytest.fixture
def fakes() -> Iterator[RunningFakes]:
    with running_fake_upstreams() as running:
        yield running


class Shell:
    """Runs README lines with bash in one environment; remembers background jobs like a shell."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.jobs: list[subprocess.Popen[bytes]] = []

    def run(self, line: str, *, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line],
            cwd=self.home,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def background(self, line: str) -> None:
        log = (self.home / f"job{len(self.jobs) + 1}.log").open("wb")
        job = subprocess.Popen(
            ["bash", "-c", f"exec {line.removesuffix('&').strip()}"],
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.jobs.append(job)
        url = f"http://127.0.0.1:{self.env['SERVER__PORT']}/health"
        deadline = time.monotonic() + 30
        while True:  # a user waits for the server to come up before the next line
            try:
                httpx.get(url, timeout=1)
                return
            except httpx.HTTPError:
                assert job.poll() is None, (self.home / f"job{len(self.jobs)}.log").read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.05)

    def kill(self, number: int) -> None:
        job = self.jobs[number - 1]
        job.send_signal(signal.SIGTERM)
        assert job.wait(20) is not None

    def close(self) -> None:
        for job in self.jobs:
            if job.poll() is None:
                job.send_signal(signal.SIGINT)
                try:
                    job.wait(15)
                except subprocess.TimeoutExpired:
                    job.kill()


def test_readme_walkthrough(tmp_path: Path, fakes: RunningFakes) -> None:
    require_client("claude")
    if not sys.platform.startswith("linux"):
        pytest.skip("the login step relies on Linux's no-display detection to paste instead of a browser")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **base_env(home),
        "PATH": f"{Path(sys.executable).parent}:{CLIENT_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SERVER__PORT": str(free_port()),
        "PLUGINS__CLAUDE_API__BASE_URL": fakes.url,
        "PLUGINS__CLAUDE_API__OAUTH__TOKEN_URL": f"{fakes.url}/v1/oauth/token",
        "PLUGINS__CLAUDE_API__OAUTH__AUTHORIZE_URL": f"{fakes.url}/oauth/authorize",
    }
    shell = Shell(home, env)
    steps = readme_steps()
    try:
        # 1. install: this environment is the install; its `ccproxy` is the one on PATH
        assert steps[0] == "pip install ccproxy-api"
        version = shell.run("ccproxy --version")
        assert version.returncode == 0 and version.stdout.startswith("ccproxy "), version.stderr

        # 2-4. offline: serve --mock, Claude Code through it with a tool round trip, stop
        shell.background(steps[1])
        hello = shell.run(steps[2])
        assert hello.returncode == 0, hello.stdout + hello.stderr
        assert "hello" in hello.stdout and "using the server running at" in hello.stderr
        assert fakes.anthropic.requests == []  # --mock never reaches the configured upstream
        shell.kill(1)

        # 5. log in: no display here, so it asks for the code; the user signs in and pastes it
        login = subprocess.Popen(
            ["bash", "-c", steps[4]],
            cwd=home,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert login.stdout is not None and login.stdin is not None
        url = ""
        seen = ""
        while not url:
            line = login.stdout.readline()
            assert line, seen + (login.stderr.read() if login.stderr else "")
            seen += line
            url = line.strip() if line.startswith("http") else ""
        assert "No browser available" in seen
        redirect = httpx.get(url, follow_redirects=False)  # the user's browser, signing in
        query = parse_qs(urlsplit(redirect.headers["location"]).query)
        out, err = login.communicate(f"{query['code'][0]}#{query['state'][0]}\n", timeout=60)
        assert login.returncode == 0 and "Logged in" in out, out + err

        # 6. status: exit 0 now that Claude has a login
        status = shell.run(steps[5] + " --json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["claude"]["state"] == "valid"
        assert shell.run(steps[5]).returncode == 0

        # 7-8. the real server, on the stored login, and Claude Code through it
        shell.background(steps[6])
        again = shell.run(steps[7])
        assert again.returncode == 0, again.stdout + again.stderr
        assert "hello again" in again.stdout
        stored = json.loads((home / ".local/share/ccproxy/claude_credentials.json").read_text())
        token = stored["claudeAiOauth"]["accessToken"]
        assert fakes.anthropic.requests[-1].headers["authorization"] == f"Bearer {token}"  # the login's token
    finally:
        shell.close()
        reap_strays(home)
