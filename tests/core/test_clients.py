"""`ccproxy env` and `ccproxy run` without the real CLIs: what they print, what the child gets (a stand-in
executable that reports its argv and environment), exit codes, and the server's lifetime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ccproxy.clients import codex_model_chosen, proxy_url, settings_for

CCPROXY = [sys.executable, "-m", "ccproxy"]


def ccproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CCPROXY, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """An executable that writes its argv, environment and whether ccproxy answers, then exits 7."""
    script = tmp_path / "fake-cli"
    report = tmp_path / "report.json"
    script.write_text(
        f"""#!{sys.executable}
import json, os, sys, urllib.request
base = os.environ.get("ANTHROPIC_BASE_URL") or ""
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
health = json.load(opener.open(base.rsplit("/api", 1)[0] + "/health")) if base else None
json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "health": health}}, open({str(report)!r}, "w"))
sys.exit(7)
"""
    )
    script.chmod(0o755)
    return script


def _report(stand_in: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((stand_in.parent / "report.json").read_text())
    return data


def test_env_claude_prints_exports() -> None:
    result = ccproxy("env", "claude", env={"SERVER__PORT": "9123"})
    assert result.returncode == 0, result.stderr
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:9123/api\n" in result.stdout
    assert "export ANTHROPIC_AUTH_TOKEN=ccproxy\n" in result.stdout
    on_chatgpt = ccproxy("env", "claude", "--provider", "codex").stdout
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8000/api/codex\n" in on_chatgpt


def test_env_uses_the_proxys_auth_token() -> None:
    result = ccproxy("env", "openai", env={"CCPROXY_AUTH_TOKEN": "tok-for env"})
    assert "export OPENAI_API_KEY='tok-for env'\n" in result.stdout  # shell-quoted


def test_env_unknown_client_is_one_line() -> None:
    result = ccproxy("env", "cluade")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "did you mean 'claude'" in result.stderr


def test_settings_and_urls() -> None:
    assert proxy_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert proxy_url("::", 8000) == "http://[::1]:8000"
    codex = settings_for("codex", "http://127.0.0.1:1", "k")
    assert codex.env == {"CCPROXY_API_KEY": "k"}
    assert 'model_providers.ccproxy.base_url="http://127.0.0.1:1/api/codex/v1"' in codex.args
    assert 'base_url = "http://127.0.0.1:1/api/codex/v1"' in codex.toml
    on_claude = settings_for("codex", "http://127.0.0.1:1", "k", "claude")
    assert 'model_providers.ccproxy.base_url="http://127.0.0.1:1/api/v1"' in on_claude.args


def test_codex_model_choice(tmp_path: Path) -> None:
    empty = {"CODEX_HOME": str(tmp_path)}
    assert not codex_model_chosen(["exec", "hi"], empty)
    assert codex_model_chosen(["exec", "-m", "o3", "hi"], empty)
    assert codex_model_chosen(["-c", "model=o3", "exec"], empty)
    (tmp_path / "config.toml").write_text('model = "gpt-6-sol"\n')
    assert codex_model_chosen(["exec"], empty)


def test_run_starts_a_server_for_the_childs_lifetime_and_passes_its_exit_code(stand_in: Path) -> None:
    result = ccproxy(
        "run",
        "--mock",
        "--bin",
        str(stand_in),
        "claude",
        "-p",
        "hi",
        "--flag",
        env={"ANTHROPIC_API_KEY": "x"},
    )
    assert result.returncode == 7, result.stderr
    report = _report(stand_in)
    env = report["env"]
    assert isinstance(env, dict) and report["argv"] == ["-p", "hi", "--flag"]
    assert (
        env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:") and env["ANTHROPIC_AUTH_TOKEN"] == "ccproxy"
    )
    assert "ANTHROPIC_API_KEY" not in env  # it would win over the token
    assert report["health"]["serviceId"] == "ccproxy"  # type: ignore[index]
    with pytest.raises(httpx.TransportError):  # the server it started is gone with the child
        httpx.get(env["ANTHROPIC_BASE_URL"].rsplit("/api", 1)[0] + "/health", timeout=2)


def test_run_codex_passes_the_provider_as_flags(stand_in: Path, tmp_path: Path) -> None:
    result = ccproxy(
        "run", "--mock", "--bin", str(stand_in), "codex", "exec", "hi", env={"CODEX_HOME": str(tmp_path)}
    )
    assert result.returncode == 7, result.stderr
    argv = _report(stand_in)["argv"]
    assert isinstance(argv, list) and argv[-2:] == ["exec", "hi"]
    assert all(flag == "-c" for flag in argv[0:-2:2])
    values = argv[1:-2:2]
    assert 'model_provider="ccproxy"' in values and 'model="gpt-5.5"' in values
    assert any(v.startswith('model_providers.ccproxy.base_url="http://127.0.0.1:') for v in values)
    assert not (tmp_path / "config.toml").exists()


def test_run_missing_binary_is_one_line() -> None:
    result = ccproxy("run", "claude", env={"PATH": "/nonexistent"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not on PATH" in result.stderr and "--bin" in result.stderr


def test_run_refuses_a_port_that_is_not_ccproxy(stand_in: Path) -> None:
    from starlette.applications import Starlette

    from ccproxy.testing import serve_app

    with serve_app(Starlette()) as url:  # something else (404 on /health) holds the port
        port = url.rsplit(":", 1)[1]
        result = ccproxy("run", "--port", port, "--bin", str(stand_in), "claude")
    assert result.returncode == 2 and "is not ccproxy" in result.stderr
