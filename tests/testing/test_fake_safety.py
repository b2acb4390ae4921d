"""The fakes are safe to leave running (offline mode): bounded request memory, and wrong input is a 400 in
the real upstream's envelope, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from ccproxy.testing import FakeUpstream, create_fake_upstreams, fake_anthropic, fake_codex
from ccproxy.testing.scripting import REQUEST_MEMORY

ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"}
CODEX = {"authorization": "Bearer t", "chatgpt-account-id": "acct", "content-type": "application/json"}
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gpt-5.5", "input": "hi", "stream": True, "store": False, "instructions": "x"}
WRONG = [None, 1, "x", 1.5, True, [], {}, [1], ["x"], [None], [[]], 10**40]


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_fake_upstreams(), raise_server_exceptions=False)


def test_request_memory_is_a_ring_buffer(client: TestClient) -> None:
    upstream: FakeUpstream = client.app.state.anthropic  # type: ignore[attr-defined]
    for index in range(REQUEST_MEMORY + 50):
        body = {**MESSAGES, "metadata": {"user_id": str(index)}}
        assert client.post("/v1/messages", json=body, headers=ANTHROPIC).status_code == 200
    kept = upstream.requests
    assert len(kept) == REQUEST_MEMORY
    assert kept[-1].json["metadata"]["user_id"] == str(REQUEST_MEMORY + 49)  # the newest are kept
    assert FakeUpstream("x", keep=2).requests == []


def _variants(fields: list[str]) -> list[tuple[str, Any]]:
    return [(name, value) for name in fields for value in WRONG]


ANTHROPIC_FIELDS = ["model", "max_tokens", *fake_anthropic.FIELD_TYPES]
CODEX_FIELDS = ["stream", "store", *fake_codex.FIELD_TYPES]
BAD_MESSAGES: list[Any] = [
    [1],
    [{"role": 1, "content": "x"}],
    [{"role": "user", "content": 5}],
    [{"role": "user", "content": [1]}],
    [{"role": "user", "content": [{"text": "no type"}]}],
]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_anthropic_fake_answers_wrong_types_with_400(client: TestClient, path: str) -> None:
    cases = _variants(ANTHROPIC_FIELDS)
    cases += [("messages", value) for value in BAD_MESSAGES]
    for name, value in cases:
        body = {**MESSAGES, name: value}
        resp = client.post(path, content=json.dumps(body), headers=ANTHROPIC)
        assert resp.status_code < 500, (name, value, resp.text)
        if resp.status_code >= 400:
            error = resp.json()
            assert error["type"] == "error" and error["error"]["message"], (name, value)
    too_big = client.post("/v1/messages", json={**MESSAGES, "max_tokens": 10**40}, headers=ANTHROPIC)
    assert too_big.status_code == 400 and "max_tokens" in too_big.json()["error"]["message"]
    tools = client.post("/v1/messages", json={**MESSAGES, "tools": 1}, headers=ANTHROPIC)
    assert tools.json()["error"]["message"] == "tools: Input should be a valid list"


def test_codex_fake_answers_wrong_types_with_400(client: TestClient) -> None:
    for name, value in _variants(CODEX_FIELDS):
        body = {**RESPONSES, name: value}
        resp = client.post("/backend-api/codex/responses", content=json.dumps(body), headers=CODEX)
        assert resp.status_code < 500, (name, value, resp.text)
        if resp.status_code >= 400:
            assert isinstance(resp.json()["detail"], str), (name, value)
    resp = client.post("/backend-api/codex/responses", json={**RESPONSES, "input": 1}, headers=CODEX)
    assert (
        resp.status_code == 400
        and resp.json()["detail"] == "input: Input should be a valid string or a valid list"
    )


def test_models_listing_rejects_a_bad_limit(client: TestClient) -> None:
    for limit in ("abc", "0", "-1", "100000"):
        assert client.get(f"/v1/models?limit={limit}", headers=ANTHROPIC).status_code == 400
    assert client.get("/v1/models?limit=2", headers=ANTHROPIC).json()["has_more"] is True
