"""Codex CLI (the real ``codex exec``) through ccproxy's ``/api/codex`` on a ChatGPT subscription.

Codex uses a custom provider (``wire_api = "responses"``), which POSTs ``{base_url}/responses`` over HTTP +
SSE; both base URLs users write (``…/api/codex/v1`` and ``…/api/codex``) are served. The fake's default rules
answer ``RUN: <command>`` with an ``exec_command`` call and the tool output with "The tool returned: …".

Codex's built-in provider (``-c openai_base_url=…``) is not tested here: it first tries a WebSocket upgrade
of ``GET …/responses``, which ccproxy refuses, and only falls back to HTTP after ≈6 s of reconnects.
"""

from __future__ import annotations

import json

import pytest

from ccproxy.testing import RunningFakes

from .helpers import CODEX_ACCOUNT, CODEX_CLIENT_KEY, CODEX_MODEL, CODEX_TOKEN, RunCodex

pytestmark = pytest.mark.e2e

COMMAND_OUTPUT = "hello-codex-e2e"
PROMPT = f"RUN: echo {COMMAND_OUTPUT}"


@pytest.mark.parametrize("base_path", ["/api/codex/v1", "/api/codex"])
def test_codex_exec_runs_a_command(
    fakes: RunningFakes, proxy_url: str, run_codex: RunCodex, base_path: str
) -> None:
    run = run_codex(proxy_url + base_path, PROMPT)
    assert run.returncode == 0, run.describe()
    # the final agent message is what `codex exec` prints on stdout
    assert run.stdout.lstrip().startswith("The tool returned:"), run.describe()
    assert COMMAND_OUTPUT in run.stdout, run.describe()
    assert "ERROR" not in run.stderr and "Reconnecting" not in run.stderr, run.describe()

    assert fakes.anthropic.requests == []
    calls = fakes.codex.requests
    assert [(r.method, r.path) for r in calls] == [("POST", "/backend-api/codex/responses")] * 2, (
        run.describe()
    )

    for call in calls:
        h, body = call.headers, call.json
        assert h["authorization"] == f"Bearer {CODEX_TOKEN}"
        assert h["chatgpt-account-id"] == CODEX_ACCOUNT
        assert all(CODEX_CLIENT_KEY not in value for value in h.values())
        assert h.get("originator") and h.get("version")
        assert h.get("accept") == "text/event-stream"
        assert body["model"] == CODEX_MODEL
        assert body["stream"] is True and body["store"] is False
        assert not [i for i in body["input"] if i.get("role") == "system"]
    first, second = (call.json for call in calls)

    # Codex's own conversation id is kept: one session and one prompt cache key for both turns
    assert first["prompt_cache_key"] == second["prompt_cache_key"]
    assert calls[0].headers["session_id"] == calls[1].headers["session_id"] == first["prompt_cache_key"]

    assert "exec_command" in [t.get("name") for t in first["tools"]]
    prompt_texts = [
        part.get("text", "")
        for item in first["input"]
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item.get("content", [])
    ]
    assert PROMPT in prompt_texts

    # the command Codex ran came back as the function_call_output of the second request
    items = second["input"]
    call_item = next(i for i in items if i.get("type") == "function_call")
    assert call_item["name"] == "exec_command"
    assert json.loads(call_item["arguments"]) == {"cmd": f"echo {COMMAND_OUTPUT}"}
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert len(outputs) == 1
    assert outputs[0]["call_id"] == call_item["call_id"]
    assert items.index(outputs[0]) > items.index(call_item)
    output = outputs[0]["output"]
    text = output if isinstance(output, str) else "".join(p.get("text", "") for p in output)
    assert f"Output:\n{COMMAND_OUTPUT}" in text and "exited with code 0" in text
