"""Codex CLI (the real ``codex exec``) on a Claude subscription: ``/api/v1/responses`` on Anthropic.

Codex uses a custom provider with ``base_url = <proxy>/api/v1`` and ``wire_api = "responses"``. What it sends
depends on the model slug: ``gpt-5.5`` (in its bundled catalog) brings ``apply_patch`` as a ``custom``
(freeform) tool plus ``tool_search`` and ``web_search``; an unknown slug such as ``claude-sonnet-4-5`` gets
fallback metadata: no ``apply_patch``, a ``namespace`` of sub-agent tools and ``web_search``. Both run here:
``gpt-5.5`` through a proxy alias to a Claude model, the Claude name directly.

The fake Anthropic's default rules answer ``RUN: <command>`` with an ``exec_command`` call and the tool
output with "The tool returned: …"; the patch test scripts an ``apply_patch`` call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import RunningFakes, serve_app

from .helpers import CLAUDE_TOKEN, CODEX_CLIENT_KEY, RunCodex, proxy_cli

pytestmark = pytest.mark.e2e

CLAUDE_MODEL = "claude-sonnet-4-5"
COMMAND_OUTPUT = "hello-codex-on-claude"
FREEFORM_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The complete free-form input of the tool."}},
    "required": ["input"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def claude_proxy_url(fakes: RunningFakes) -> Iterator[str]:
    """The proxy with an alias from Codex's own slug to a Claude model (what a user would configure)."""
    cli: dict[str, Any] = {
        **proxy_cli(fakes),
        "plugins.claude_api.aliases": [{"match": "gpt-5.5", "target": CLAUDE_MODEL}],
    }
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        yield url


def _tools_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in body.get("tools") or []}


def _blocks(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        block
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == kind
    ]


def _check_common(fakes: RunningFakes, run_text: str) -> list[dict[str, Any]]:
    assert fakes.codex.requests == []
    calls = fakes.anthropic.requests
    assert [(r.method, r.path) for r in calls] == [("POST", "/v1/messages")] * 2, run_text
    for call in calls:
        assert call.headers["authorization"] == f"Bearer {CLAUDE_TOKEN}"
        assert all(CODEX_CLIENT_KEY not in value for value in call.headers.values())
        body = call.json
        assert body["model"] == CLAUDE_MODEL and body["stream"] is True
        tools = _tools_by_name(body)
        assert "tool_search" not in tools  # dropped: deferred tools are offered up front
        assert tools["web_search"] == {"type": "web_search_20250305", "name": "web_search"}
    return [call.json for call in calls]


@pytest.mark.parametrize("model", ["gpt-5.5", CLAUDE_MODEL])
def test_codex_on_claude_runs_a_command(
    fakes: RunningFakes, claude_proxy_url: str, run_codex: RunCodex, model: str
) -> None:
    run = run_codex(claude_proxy_url + "/api/v1", f"RUN: echo {COMMAND_OUTPUT}", "-m", model)
    assert run.returncode == 0, run.describe()
    assert run.stdout.lstrip().startswith("The tool returned:"), run.describe()
    assert COMMAND_OUTPUT in run.stdout, run.describe()
    assert "ERROR" not in run.stderr, run.describe()

    first, second = _check_common(fakes, run.describe())
    tools = _tools_by_name(first)
    assert "cmd" in tools["exec_command"]["input_schema"]["properties"]
    if model == "gpt-5.5":
        patch_tool = tools["apply_patch"]
        assert patch_tool["input_schema"] == FREEFORM_SCHEMA
        assert "FREEFORM" in patch_tool["description"] and "lark grammar" in patch_tool["description"]
        assert "*** Begin Patch" in patch_tool["description"]
    else:
        # fallback metadata: sub-agent tools in a namespace, flattened to <namespace>__<name>
        assert any(name.startswith("multi_agent_v1__") for name in tools), sorted(tools)

    (use,) = _blocks(second, "tool_use")
    assert use["name"] == "exec_command" and use["input"] == {"cmd": f"echo {COMMAND_OUTPUT}"}
    (result,) = _blocks(second, "tool_result")
    assert result["tool_use_id"] == use["id"]
    assert COMMAND_OUTPUT in str(result.get("content"))


PATCH = """*** Begin Patch
*** Add File: notes/hello.txt
+hello from a freeform apply_patch
+second line
*** End Patch
"""


def test_codex_on_claude_applies_a_freeform_patch(
    fakes: RunningFakes, claude_proxy_url: str, run_codex: RunCodex, tmp_path: Path
) -> None:
    fakes.anthropic.reply_tool_call("apply_patch", {"input": PATCH}, call_id="toolu_patch_1")
    run = run_codex(claude_proxy_url + "/api/v1", "Add a notes file, please.")
    assert run.returncode == 0, run.describe()
    assert "ERROR" not in run.stderr, run.describe()

    (written,) = tmp_path.glob("codex-home-*/work/notes/hello.txt")
    assert written.read_text() == "hello from a freeform apply_patch\nsecond line\n"

    first, second = _check_common(fakes, run.describe())
    assert _tools_by_name(first)["apply_patch"]["input_schema"] == FREEFORM_SCHEMA
    # Codex echoed the custom_tool_call and its custom_tool_call_output: a tool_use and its tool_result
    (use,) = _blocks(second, "tool_use")
    assert use == {
        "type": "tool_use",
        "id": "toolu_patch_1",
        "name": "apply_patch",
        "input": {"input": PATCH},
    }
    (result,) = _blocks(second, "tool_result")
    assert result["tool_use_id"] == "toolu_patch_1"
    assert "notes/hello.txt" in str(result.get("content")), result
    assert run.stdout.lstrip().startswith("The tool returned:"), run.describe()
