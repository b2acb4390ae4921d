"""End-to-end fixtures: the real Claude Code and Codex CLIs, driven through ccproxy to the fake upstreams.

Self-contained on purpose (nothing from ``tests/conftest.py`` is needed). When a client binary is missing
(no ``make clients``), the tests that need it are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import RunningFakes, running_fake_upstreams, serve_app

from .helpers import (
    CLAUDE_CLIENT_KEY,
    CODEX_CLIENT_KEY,
    ClientRun,
    RunClaude,
    RunCodex,
    base_env,
    claude_env,
    codex_config,
    proxy_cli,
    reap_strays,
    require_client,
    run_client,
)


@pytest.fixture(scope="session")
def claude_bin() -> str:
    return require_client("claude")


@pytest.fixture(scope="session")
def codex_bin() -> str:
    return require_client("codex")


@pytest.fixture(scope="module")
def fakes() -> Iterator[RunningFakes]:
    with running_fake_upstreams() as running:
        yield running


@pytest.fixture(scope="module")
def proxy_url(fakes: RunningFakes) -> Iterator[str]:
    """An in-process proxy in front of the fakes (``env={}``: the developer's environment stays out)."""
    config = load_config(env={}, cli=proxy_cli(fakes))
    with serve_app(create_app(config)) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    if "fakes" in request.fixturenames:
        running: RunningFakes = request.getfixturevalue("fakes")
        running.reset()


@pytest.fixture
def run_claude(claude_bin: str, tmp_path: Path) -> RunClaude:
    """``run_claude(base_url, prompt, *extra_args)`` → ``ClientRun`` of ``claude -p … --output-format json``
    with a scratch HOME and Bash allowed."""

    def run(base_url: str, prompt: str, *extra: str, api_key: str = CLAUDE_CLIENT_KEY) -> ClientRun:
        home = tmp_path / f"claude-home-{uuid.uuid4().hex[:8]}"
        work = home / "work"
        work.mkdir(parents=True)
        argv = [claude_bin, "-p", prompt, "--output-format", "json", "--allowedTools", "Bash", *extra]
        return run_client(argv, claude_env(home, base_url, api_key=api_key), work)

    return run


@pytest.fixture
def run_codex(codex_bin: str, tmp_path: Path) -> Iterator[RunCodex]:
    """``run_codex(base_url, prompt, *extra_args, builtin=False)`` → ``ClientRun`` of ``codex exec`` with a
    custom Responses provider at ``base_url`` (``builtin``: Codex's own provider, WebSocket first).

    The sandbox defaults to ``danger-full-access``: these tests are about the proxy, and the bundled
    bubblewrap needs user namespaces that containers often lack (CCPROXY_E2E_CODEX_SANDBOX=workspace-write
    tries the real sandbox)."""
    homes: list[Path] = []
    sandbox = os.environ.get("CCPROXY_E2E_CODEX_SANDBOX", "danger-full-access")

    def run(
        base_url: str, prompt: str, *extra: str, api_key: str = CODEX_CLIENT_KEY, builtin: bool = False
    ) -> ClientRun:
        home = tmp_path / f"codex-home-{uuid.uuid4().hex[:8]}"
        codex_home = home / ".codex"
        work = home / "work"
        codex_home.mkdir(parents=True)
        work.mkdir()
        homes.append(home)
        (codex_home / "config.toml").write_text(codex_config(base_url, sandbox=sandbox, builtin=builtin))
        key_variable = "CODEX_API_KEY" if builtin else "CCPROXY_E2E_KEY"
        env = {**base_env(home), "CODEX_HOME": str(codex_home), key_variable: api_key}
        argv = [codex_bin, "exec", "--skip-git-repo-check", *extra, prompt]
        return run_client(argv, env, work)

    yield run
    for home in homes:
        reap_strays(home)
