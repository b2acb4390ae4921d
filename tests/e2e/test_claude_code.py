"""Claude Code (the real CLI, ``-p`` mode) through ccproxy: on a Claude subscription (``/api``) and on a
ChatGPT subscription (``/api/codex``, Anthropic Messages translated to the Codex backend's Responses).

The fake upstreams' default rules make the round trip deterministic: ``RUN: <command>`` with a Bash tool on
offer → a Bash call; Claude Code runs it and sends the tool result; the fake answers "The tool returned: …".
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccproxy.network import ACCEPT_ENCODING
from ccproxy.testing import RunningFakes, tool_output_text

from .helpers import (
    CLAUDE_CLIENT_BETA,
    CLAUDE_CLIENT_KEY,
    CLAUDE_TOKEN,
    CODEX_ACCOUNT,
    CODEX_TOKEN,
    ClientRun,
    RunClaude,
)

pytestmark = pytest.mark.e2e

COMMAND_OUTPUT = "hello-e2e"
PROMPT = f"RUN: echo {COMMAND_OUTPUT}"


def assert_success(run: ClientRun) -> dict[str, Any]:
    assert run.returncode == 0, run.describe()
    result: dict[str, Any] = run.json()
    assert result.get("is_error") is False, run.describe()
    assert result.get("subtype") == "success", run.describe()
    assert result.get("api_error_status") is None, run.describe()
    assert result.get("num_turns") == 2, run.describe()  # the Bash call, then the answer
    assert result.get("permission_denials") == [], run.describe()
    assert result.get("result") == tool_output_text(COMMAND_OUTPUT), run.describe()
    return result


def betas(headers: dict[str, str]) -> list[str]:
    return [t.strip() for t in headers.get("anthropic-beta", "").split(",") if t.strip()]


def test_claude_code_on_claude_subscription(
    fakes: RunningFakes, proxy_url: str, run_claude: RunClaude
) -> None:
    run = run_claude(proxy_url + "/api", PROMPT)
    result = assert_success(run)

    assert fakes.codex.requests == []
    model_calls = [r for r in fakes.anthropic.requests if r.path == "/v1/messages"]
    assert len(fakes.anthropic.requests) == len(model_calls) == 2, [r.path for r in fakes.anthropic.requests]

    for call in model_calls:
        h = call.headers
        assert call.method == "POST"
        assert call.query == {"beta": "true"}  # Claude Code's ?beta=true survives the proxy
        assert h["authorization"] == f"Bearer {CLAUDE_TOKEN}"
        assert "x-api-key" not in h
        assert all(CLAUDE_CLIENT_KEY not in value for value in h.values())
        tags = betas(h)
        assert len(tags) == len(set(tags)), tags
        assert "oauth-2025-04-20" in tags and "claude-code-20250219" in tags
        # the client's own betas are kept, and nothing the client did not ask for is added
        assert CLAUDE_CLIENT_BETA in tags and "interleaved-thinking-2025-05-14" in tags
        assert not [t for t in tags if t.startswith("context-1m")], tags
        assert h.get("anthropic-version") == "2023-06-01"
        assert h.get("user-agent", "").startswith("claude-cli/")
        assert h.get("x-app") == "cli"
        # only encodings the proxy can decode (Claude Code's own header is not passed on)
        assert h.get("accept-encoding") == ACCEPT_ENCODING
        assert call.json["stream"] is True
        assert h.get("x-claude-code-session-id") == result["session_id"]

    first, second = (call.json for call in model_calls)
    assert [t["name"] for t in first["tools"]].count("Bash") == 1
    # Claude Code's own system prompt (billing line first) is forwarded unchanged
    assert first["system"][0]["text"].startswith("x-anthropic-billing-header:")

    # the second turn carries the Bash call and its real output
    tool_use = second["messages"][-2]["content"][-1]
    assert second["messages"][-2]["role"] == "assistant"
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "Bash"
    assert tool_use["input"]["command"] == f"echo {COMMAND_OUTPUT}"
    last = second["messages"][-1]
    assert last["role"] == "user"
    results = [b for b in last["content"] if b.get("type") == "tool_result"]
    assert len(results) == 1
    assert results[0]["tool_use_id"] == tool_use["id"]
    assert results[0].get("is_error") is not True
    content = results[0]["content"]
    text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
    assert text.strip() == COMMAND_OUTPUT


def test_claude_code_on_chatgpt_subscription(
    fakes: RunningFakes, proxy_url: str, run_claude: RunClaude
) -> None:
    run = run_claude(proxy_url + "/api/codex", PROMPT)
    result = assert_success(run)

    assert fakes.anthropic.requests == []
    calls = fakes.codex.requests
    assert [(r.method, r.path) for r in calls] == [("POST", "/backend-api/codex/responses")] * 2

    for call in calls:
        h, body = call.headers, call.json
        assert h["authorization"] == f"Bearer {CODEX_TOKEN}"
        assert h["chatgpt-account-id"] == CODEX_ACCOUNT
        assert "x-api-key" not in h
        assert all(CLAUDE_CLIENT_KEY not in value for value in h.values())
        assert not [k for k in h if k.startswith("anthropic-")], h
        assert body["stream"] is True and body["store"] is False
        assert "max_output_tokens" not in body and "metadata" not in body
        assert not [i for i in body["input"] if i.get("role") == "system"]
        assert body.get("instructions")  # Claude Code's system prompt moved to instructions
    first, second = (call.json for call in calls)

    # one conversation, one session: stable prompt cache key and session header across the turns
    assert first["prompt_cache_key"] == second["prompt_cache_key"] == result["session_id"]
    assert calls[0].headers["session_id"] == calls[1].headers["session_id"] == result["session_id"]

    assert "Bash" in [t.get("name") for t in first["tools"]]
    assert all(t["type"] == "function" for t in first["tools"])

    # function_call → function_call_output with the command's real output
    items = second["input"]
    call_item = next(i for i in items if i.get("type") == "function_call")
    assert call_item["name"] == "Bash"
    assert json.loads(call_item["arguments"]) == {"command": f"echo {COMMAND_OUTPUT}"}
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert len(outputs) == 1
    assert outputs[0]["call_id"] == call_item["call_id"]
    output = outputs[0]["output"]
    text = output if isinstance(output, str) else "".join(p.get("text", "") for p in output)
    assert text.strip() == COMMAND_OUTPUT
    assert items[-1] is outputs[0] or items.index(outputs[0]) > items.index(call_item)
