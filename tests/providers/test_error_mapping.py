"""Issue 12 item 5: one error mapping. The same upstream failure reaches an OpenAI client with the same
status, ``type`` and ``code`` on every OpenAI-format route of both providers, streaming or not; Chat
streams end the same way after an in-band error (the error frame, then ``[DONE]``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from ccproxy.testing import FakeUpstream

from .conftest import Fakes

ROUTES = {
    ("claude", "chat"): ("/api/v1/chat/completions", "claude-sonnet-4-5"),
    ("claude", "responses"): ("/api/v1/responses", "claude-sonnet-4-5"),
    ("codex", "chat"): ("/api/codex/v1/chat/completions", "gpt-5.5"),
    ("codex", "responses"): ("/api/codex/v1/responses", "gpt-5.5"),
}
# Each provider's own words for one failure (Anthropic's error type; the Codex backend's error code).
FAILURES = {
    "overloaded": (
        {"claude": "overloaded_error", "codex": "server_is_overloaded"},
        503,
        "server_error",
        "server_is_overloaded",
    ),
    "overloaded-anthropic-spelling": (
        {"claude": "overloaded_error", "codex": "overloaded_error"},
        503,
        "server_error",
        "server_is_overloaded",
    ),
    "rate_limit": (
        {"claude": "rate_limit_error", "codex": "rate_limit_exceeded"},
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    ),
    "server": ({"claude": "api_error", "codex": "server_error"}, 500, "server_error", "server_error"),
}


def _body(route: str, model: str, stream: bool) -> dict[str, Any]:
    if route == "chat":
        return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return {"model": model, "input": "hi", "stream": stream}


def _fake(fakes: Fakes, provider: str) -> FakeUpstream:
    return fakes.anthropic if provider == "claude" else fakes.codex


def _frames(text: str) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize(("provider", "route"), list(ROUTES))
def test_mid_stream_failure_maps_the_same_everywhere(
    proxy: str, fakes: Fakes, provider: str, route: str, failure: str
) -> None:
    spelled, status, error_type, code = FAILURES[failure]
    path, model = ROUTES[(provider, route)]
    fake = _fake(fakes, provider)

    # Streaming: an in-band error after some text.
    fake.reply_stream_error("the model failed", error_type=spelled[provider], text_before="partial ")
    resp = httpx.post(proxy + path, json=_body(route, model, True), timeout=10)
    assert resp.status_code == 200
    frames = _frames(resp.text)
    if route == "chat":
        assert frames[-1] == "[DONE]"
        assert frames[-2] == {
            "error": {"message": "the model failed", "type": error_type, "param": None, "code": code}
        }
        assert sum(1 for f in frames if isinstance(f, dict) and "error" in f) == 1
    else:
        errors = [f for f in frames if f.get("type") == "error"]
        assert len(errors) == 1 and errors[0]["error"]["type"] == error_type and errors[0]["code"] == code
        assert frames[-1]["type"] == "response.failed"
        assert frames[-1]["response"]["error"]["code"] == code

    # Not streaming: the same failure is an HTTP error with the same type and code.
    fake.reply_stream_error("the model failed", error_type=spelled[provider])
    client = openai.OpenAI(
        base_url=proxy + path.rsplit("/", 2 if route == "chat" else 1)[0], api_key="x", max_retries=0
    )
    with pytest.raises(openai.APIStatusError) as err:
        if route == "chat":
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        else:
            client.responses.create(model=model, input="hi")
    assert err.value.status_code == status
    assert err.value.body == {"message": "the model failed", "type": error_type, "param": None, "code": code}


@pytest.mark.parametrize(("provider", "route"), list(ROUTES))
def test_http_overload_maps_the_same_everywhere(proxy: str, fakes: Fakes, provider: str, route: str) -> None:
    path, model = ROUTES[(provider, route)]
    fake = _fake(fakes, provider)
    if provider == "claude":
        fake.reply_error(529, "Overloaded", error_type="overloaded_error")
    else:
        fake.reply_error(503, "Overloaded")
    resp = httpx.post(proxy + path, json=_body(route, model, True), timeout=10)
    assert resp.status_code == 503
    assert resp.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "server_error",
        "param": None,
        "code": "server_is_overloaded",
    }
