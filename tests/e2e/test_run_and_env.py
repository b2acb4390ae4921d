"""`ccproxy run claude|codex` and `ccproxy env ...` with the real CLIs and SDKs, against `--mock`.

No user configuration anywhere: a scratch HOME, the CLIs found on PATH (the pinned ones from
`.clients`), nothing but what ccproxy passes them. The fake upstream answers `RUN: <cmd>` by asking the
client to run that command, so a completed answer proves a whole tool round trip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from .helpers import CLIENT_BIN, base_env, free_port, reap_strays, require_client, run_client

pytestmark = pytest.mark.e2e
CCPROXY = [sys.executable, "-m", "ccproxy"]
CLAUDE_FLAGS = ("--output-format", "json", "--allowedTools", "Bash")
SANDBOX = os.environ.get("CCPROXY_E2E_CODEX_SANDBOX", "danger-full-access")  # see conftest.run_codex


def user_env(home: Path) -> dict[str, str]:
    """A new user's shell: a scratch HOME, the CLIs on PATH, nothing configured."""
    env = base_env(home)
    env["PATH"] = f"{CLIENT_BIN}:{env['PATH']}"
    return env


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    yield home
    reap_strays(home)


@pytest.fixture
def mock_server(home: Path) -> Iterator[str]:
    """`ccproxy serve --mock` as a user starts it in another terminal."""
    port = free_port()
    proc = subprocess.Popen(
        [*CCPROXY, "serve", "--mock", "--port", str(port)],
        cwd=home,
        env=user_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url + "/health", timeout=1)
            break
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline, "ccproxy serve --mock did not start"
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(15)


def test_run_claude_round_trip_with_its_own_mock_server(home: Path) -> None:
    require_client("claude")
    run = run_client(
        [*CCPROXY, "run", "--mock", "claude", "-p", "RUN: echo run-claude-ok", *CLAUDE_FLAGS],
        user_env(home),
        home / "work",
    )
    assert run.returncode == 0, run.describe()
    result = run.json()
    assert result["is_error"] is False and result["num_turns"] == 2, run.describe()
    assert "run-claude-ok" in result["result"]
    assert "started an offline (--mock) server" in run.stderr
    assert not (home / ".claude" / "settings.json").exists()  # nothing written into Claude Code's config


def test_run_codex_round_trip_with_its_own_mock_server(home: Path) -> None:
    require_client("codex")
    codex_home = home / ".codex"
    argv = [*CCPROXY, "run", "--mock", "codex", "exec", "--skip-git-repo-check", "-s", SANDBOX]
    run = run_client([*argv, "RUN: echo run-codex-ok"], user_env(home), home / "work")
    assert run.returncode == 0, run.describe()
    assert "run-codex-ok" in run.stdout, run.describe()
    assert not (codex_home / "config.toml").exists()  # the provider came as -c flags, not a config file


def test_run_uses_the_running_server_and_passes_the_exit_code(home: Path, mock_server: str) -> None:
    require_client("claude")
    port = mock_server.rsplit(":", 1)[1]
    ok = run_client(
        [*CCPROXY, "run", "--port", port, "claude", "-p", "RUN: echo reused-ok", *CLAUDE_FLAGS],
        user_env(home),
        home / "work",
    )
    assert ok.returncode == 0 and "reused-ok" in ok.json()["result"], ok.describe()
    assert f"using the server running at {mock_server}" in ok.stderr
    bad = run_client(
        [*CCPROXY, "run", "--port", port, "claude", "--no-such-flag"], user_env(home), home / "work"
    )
    direct = run_client([str(CLIENT_BIN / "claude"), "--no-such-flag"], user_env(home), home / "work")
    assert bad.returncode == direct.returncode != 0, bad.describe()


def _exports(text: str) -> dict[str, str]:
    """Run `ccproxy env`'s output in bash and read the variables back, as a user's shell would."""
    script = text + "\nenv -0"
    out = subprocess.run(["bash", "-c", script], capture_output=True, env={}, timeout=30, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def test_env_settings_work_for_the_sdks(home: Path, mock_server: str) -> None:
    port = mock_server.rsplit(":", 1)[1]

    def env_for(client: str, *extra: str) -> dict[str, str]:
        result = subprocess.run(
            [*CCPROXY, "env", client, "--port", port, *extra], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return _exports(result.stdout)

    claude = env_for("claude")
    assert claude["ANTHROPIC_BASE_URL"] == f"{mock_server}/api"
    sdk = env_for("anthropic")
    reply = anthropic.Anthropic(
        base_url=sdk["ANTHROPIC_BASE_URL"], api_key=sdk["ANTHROPIC_API_KEY"], max_retries=0
    ).messages.create(model="sonnet", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].type == "text" and reply.content[0].text
    for extra, model in (((), "sonnet"), (("--provider", "codex"), "gpt-5.5")):
        oai = env_for("openai", *extra)
        client = openai.OpenAI(base_url=oai["OPENAI_BASE_URL"], api_key=oai["OPENAI_API_KEY"], max_retries=0)
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content


def test_env_codex_snippet_works_when_pasted(home: Path, mock_server: str) -> None:
    """The TOML snippet and the export, pasted as printed, drive the real Codex CLI through ccproxy."""
    require_client("codex")
    port = mock_server.rsplit(":", 1)[1]
    printed = subprocess.run(
        [*CCPROXY, "env", "codex", "--port", port], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    toml, _, shell = printed.partition("# and in your shell")
    codex_home = home / ".codex"
    codex_home.mkdir()
    hygiene = f'model = "gpt-5.5"\nsandbox_mode = "{SANDBOX}"\n'  # before the snippet's tables
    (codex_home / "config.toml").write_text(hygiene + toml + "\n[features]\nplugins = false\n")
    env = {**user_env(home), **_exports(shell.split("\n", 1)[1]), "CODEX_HOME": str(codex_home)}
    run = run_client(
        [str(CLIENT_BIN / "codex"), "exec", "--skip-git-repo-check", "RUN: echo pasted-ok"],
        env,
        home / "work",
    )
    assert run.returncode == 0 and "pasted-ok" in run.stdout, run.describe()
