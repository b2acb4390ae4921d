"""The client-library compatibility suite (issue 12 item 6): litellm, langchain, pydantic-ai,
openai-agents, instructor and llm through ccproxy, against the project's fakes.

Their pins conflict with the main environment's and with each other (instructor holds back ``openai`` and
``jiter``), so they live in venvs of their own: ``.venv-compat`` for all but instructor,
``.venv-compat-instructor`` for instructor (``make compat-venvs``; built here once when missing or when
their requirements file changed, from PyPI only). Each library's scenarios run in one subprocess of
that venv per provider (``scenarios/run_<library>.py``) against an
in-process proxy aimed at in-process fakes; the results are cached for the session and asserted one test
per scenario. Offline: no telemetry, litellm's local cost map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import (
    Conversation,
    FakeUpstream,
    RecordedRequest,
    Reply,
    StreamErrorReply,
    create_fake_upstreams,
    serve_app,
)
from ccproxy.testing.fake_oauth import make_unsigned_jwt
from ccproxy.testing.scripting import Rule

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
# venv name → requirements file; a library runs in the venv named after it, else in the default one
VENVS = {"compat": HERE / "requirements.txt", "compat-instructor": HERE / "requirements-instructor.txt"}
SCENARIOS = Path(__file__).parent / "scenarios"
CODEX_TOKEN = make_unsigned_jwt(
    {
        "exp": 4102444800,
        "https://api.openai.com/auth": {"chatgpt_account_id": "acct-compat", "chatgpt_plan_type": "pro"},
    }
)


def compat_python(name: str) -> Path:
    """The interpreter of venv ``.venv-<name>``, built once from its requirements (stamped by their text)."""
    venv = ROOT / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = VENVS[name].read_text()
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(VENVS[name])], check=True, timeout=1800
        )
        stamp.write_text(wanted)
    return python


@dataclass
class Compat:
    url: str
    anthropic: FakeUpstream
    codex: FakeUpstream
    home: Path
    results: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    requests: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def run(self, library: str, provider: str) -> dict[str, str]:
        """Every scenario of ``library`` on ``provider`` (``claude`` or ``codex``), run once per session."""
        key = (library, provider)
        if key not in self.results:
            self.anthropic.reset()
            self.codex.reset()
            # "FAIL: overloaded" in a prompt: each upstream fails mid-stream with its own overload error.
            self.anthropic.add_rule(_overloaded("overloaded_error"))
            self.codex.add_rule(_overloaded("server_is_overloaded"))
            env = {
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(self.home),
                "LLM_USER_PATH": str(self.home / f"llm-{provider}"),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY": "False",
                "OPENAI_AGENTS_DISABLE_TRACING": "1",
                "LANGCHAIN_TRACING_V2": "false",
                "DO_NOT_TRACK": "1",
                "NO_PROXY": "*",
                "OPENAI_API_KEY": "sk-compat-unused",
                "ANTHROPIC_API_KEY": "sk-ant-compat-unused",
                "PYTHONPATH": str(SCENARIOS),
            }
            venv = f"compat-{library}" if f"compat-{library}" in VENVS else "compat"
            done = subprocess.run(
                [str(compat_python(venv)), str(SCENARIOS / f"run_{library}.py"), self.url, provider],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                cwd=self.home,
            )
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            if done.returncode != 0 or not lines:
                raise AssertionError(
                    f"{library} on {provider} crashed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
                )
            self.results[key] = json.loads(lines[-1])
            fake = self.anthropic if provider == "claude" else self.codex
            self.requests[key] = [r.json for r in fake.requests]
        return self.results[key]

    def check(self, library: str, provider: str, scenario: str) -> None:
        result = self.run(library, provider).get(scenario, "scenario did not run")
        assert result == "ok", f"{library} / {provider} / {scenario}:\n{result}"

    def chain_reached_upstream(self, library: str, provider: str, first: str, second: str) -> None:
        """The second turn of a previous_response_id chain reached the upstream with the first turn in it."""
        self.run(library, provider)
        bodies = [json.dumps(b) for b in self.requests[(library, provider)] if b is not None]
        assert any(second in b and first in b and b.index(first) < b.index(second) for b in bodies), bodies[
            -2:
        ]


def _overloaded(error_type: str) -> Rule:
    def rule(request: RecordedRequest, conversation: Conversation) -> Reply | None:
        if "FAIL: overloaded" not in conversation.prompt:
            return None
        return StreamErrorReply(message="Overloaded", error_type=error_type, text_before="partial ")

    return rule


@pytest.fixture(scope="session")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    anthropic, codex = FakeUpstream("anthropic"), FakeUpstream("codex")
    home = tmp_path_factory.mktemp("compat-home")
    with serve_app(create_fake_upstreams(anthropic, codex)) as fakes_url:
        config = load_config(
            env={"XDG_CONFIG_HOME": str(home), "HOME": str(home)},
            cli={
                "plugins.claude_api.base_url": fakes_url,
                "plugins.claude_api.access_token": "sk-ant-oat01-compat",
                "plugins.codex.enabled": True,
                "plugins.codex.base_url": fakes_url + "/backend-api/codex",
                "plugins.codex.access_token": CODEX_TOKEN,
            },
        )
        with serve_app(create_app(config)) as url:
            yield Compat(url, anthropic, codex, home)
