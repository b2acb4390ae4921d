"""Upstream failures as the real clients see them through ccproxy (no client retries, no proxy retries).

- An HTTP error reaches Claude Code with its status (it reports ``api_error_status``), after one request.
- A failure in the middle of a stream (Anthropic ``event: error``; Codex ``response.failed``) makes Claude
  Code retry the turn without streaming: the proxy must serve non-streaming Messages on both upstreams
  (on the Codex backend, which only streams, by collecting the stream).
- ``codex exec`` with retries off fails at once and shows the upstream's message.
"""

from __future__ import annotations

import pytest

from ccproxy.testing import RunningFakes

from .helpers import ClientRun, RunClaude, RunCodex

pytestmark = pytest.mark.e2e

PROMPT = "hello from the error tests"


def claude_result(run: ClientRun) -> dict[str, object]:
    assert run.returncode in (0, 1), run.describe()
    result: dict[str, object] = run.json()
    return result


def test_claude_code_sees_an_overloaded_claude_upstream(
    fakes: RunningFakes, proxy_url: str, run_claude: RunClaude
) -> None:
    fakes.anthropic.reply_error(529, "Overloaded")
    result = claude_result(run_claude(proxy_url + "/api", PROMPT))
    assert result["is_error"] is True
    assert result["api_error_status"] == 529
    assert "Overloaded" in str(result["result"])
    assert len(fakes.anthropic.requests) == 1


def test_claude_code_sees_a_rate_limited_chatgpt_upstream(
    fakes: RunningFakes, proxy_url: str, run_claude: RunClaude
) -> None:
    fakes.codex.reply_error(429, "Rate limit reached", error_type="rate_limit_exceeded")
    result = claude_result(run_claude(proxy_url + "/api/codex", PROMPT))
    assert result["is_error"] is True
    assert result["api_error_status"] == 429
    assert "Rate limit reached" in str(result["result"])
    assert len(fakes.codex.requests) == 1


@pytest.mark.parametrize("route", ["/api", "/api/codex"])
def test_claude_code_retries_a_broken_stream_without_streaming(
    fakes: RunningFakes, proxy_url: str, run_claude: RunClaude, route: str
) -> None:
    upstream = fakes.anthropic if route == "/api" else fakes.codex
    upstream.reply_stream_error("connection reset by the model", text_before="partial ")
    run = run_claude(proxy_url + route, PROMPT)
    result = claude_result(run)
    assert result["is_error"] is False, run.describe()
    # the answer is the retry's (the fake's default text), not the broken stream's partial text
    assert str(result["result"]).startswith("Fake reply "), run.describe()
    assert "partial" not in str(result["result"])
    calls = upstream.requests
    assert len(calls) == 2, run.describe()
    if route == "/api":
        # Claude Code's own retry: the second request does not stream, and is served as JSON
        assert calls[0].json["stream"] is True and calls[1].json.get("stream") is False
    else:
        # the backend always streams; the proxy collected the second answer for the non-streaming client
        assert calls[0].json["stream"] is True and calls[1].json["stream"] is True


def test_codex_exec_fails_fast_on_a_failed_response(
    fakes: RunningFakes, proxy_url: str, run_codex: RunCodex
) -> None:
    fakes.codex.reply_stream_error("the model failed", codex_mode="failed")
    run = run_codex(proxy_url + "/api/codex/v1", PROMPT)
    assert run.returncode != 0, run.describe()
    assert "the model failed" in run.stderr, run.describe()
    assert len(fakes.codex.requests) == 1  # stream_max_retries = 0, and the proxy does not retry either


def test_codex_exec_shows_an_upstream_400(fakes: RunningFakes, proxy_url: str, run_codex: RunCodex) -> None:
    fakes.codex.reply_error(400, "Unsupported parameter: frobnicate")
    run = run_codex(proxy_url + "/api/codex/v1", PROMPT)
    assert run.returncode != 0, run.describe()
    # the backend's FastAPI {"detail": ...} is re-rendered as an OpenAI error envelope
    assert '"message":"Unsupported parameter: frobnicate"' in run.stderr, run.describe()
    assert len(fakes.codex.requests) == 1
