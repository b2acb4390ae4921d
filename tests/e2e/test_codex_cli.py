"""Codex CLI (the real ``codex exec``) through ccproxy's ``/api/codex`` on a ChatGPT subscription.

Codex uses a custom provider (``wire_api = "responses"``), which POSTs ``{base_url}/responses`` over HTTP +
SSE; both base URLs users write (``…/api/codex/v1`` and ``…/api/codex``) are served. The fake's default rules
answer ``RUN: <command>`` with an ``exec_command`` call and the tool output with "The tool returned: …".

Codex's built-in provider (``openai_base_url``) speaks WebSocket first (``GET …/responses`` with an upgrade;
a prewarm frame, then ``previous_response_id`` plus only the new items). Were the upgrade refused, Codex
would reconnect 5 times and fall back to HTTP only after ≈6 s; the test makes sure that does not happen.
"""

from __future__ import annotations

import json

import pytest

from ccproxy.testing import RecordedRequest, RunningFakes

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


def assert_round_trip(calls: list[RecordedRequest]) -> None:
    """Two upstream calls; the second carries the exec_command call and its output."""
    assert [(r.method, r.path) for r in calls] == [("POST", "/backend-api/codex/responses")] * 2
    first, second = (call.json for call in calls)
    assert "exec_command" in [t.get("name") for t in first["tools"]]
    items = second["input"]
    call_item = next(i for i in items if i.get("type") == "function_call")
    assert json.loads(call_item["arguments"]) == {"cmd": f"echo {COMMAND_OUTPUT}"}
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [call_item["call_id"]]
    assert f"Output:\n{COMMAND_OUTPUT}" in str(outputs[0]["output"])


def test_codex_builtin_provider_over_websocket(
    fakes: RunningFakes, proxy_url: str, run_codex: RunCodex
) -> None:
    run = run_codex(proxy_url + "/api/codex/v1", PROMPT, builtin=True)
    assert run.returncode == 0, run.describe()
    assert run.stdout.lstrip().startswith("The tool returned:"), run.describe()
    assert COMMAND_OUTPUT in run.stdout, run.describe()
    # the WebSocket was accepted: no reconnect loop, no HTTP fallback
    assert "Reconnecting" not in run.stderr and "ERROR" not in run.stderr, run.describe()
    assert run.seconds < 5, run.describe()

    calls = fakes.codex.requests  # the prewarm frame is answered by the proxy, not sent upstream
    assert_round_trip(calls)
    for call in calls:
        assert call.headers["authorization"] == f"Bearer {CODEX_TOKEN}"
        assert call.headers["chatgpt-account-id"] == CODEX_ACCOUNT
        assert all(CODEX_CLIENT_KEY not in value for value in call.headers.values())
        assert call.json["stream"] is True and call.json["store"] is False
        assert "previous_response_id" not in call.json  # the history is sent in full instead
    first, second = (call.json for call in calls)
    assert first["prompt_cache_key"] == second["prompt_cache_key"]
    assert calls[0].headers["session_id"] == calls[1].headers["session_id"]
    # the second turn is the whole conversation: the first turn's input comes before the new items
    assert second["input"][: len(first["input"])] == first["input"]
