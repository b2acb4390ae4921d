"""The Codex Responses-over-WebSocket route: prewarm, history chaining, bad frames, errors, auth."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets

from .conftest import Fakes, MakeProxy


def ws_url(http_url: str, path: str = "/api/codex/v1/responses") -> str:
    return http_url.replace("http://", "ws://") + path


def user(text: str) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]


async def turn(ws: Any, frame: dict[str, Any]) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "response.create", **frame}))
    events = []
    while True:
        event = json.loads(await ws.recv())
        events.append(event)
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            return events


async def test_prewarm_then_chained_turns_carry_full_history(proxy: str, fakes: Fakes) -> None:
    async with websockets.connect(ws_url(proxy)) as ws:
        prewarm = await turn(ws, {"model": "gpt-5.5", "generate": False, "input": []})
        assert [e["type"] for e in prewarm] == ["response.created", "response.completed"]
        assert fakes.codex.requests == []  # answered locally, never sent upstream
        first = await turn(
            ws,
            {
                "model": "gpt-5.5",
                "previous_response_id": prewarm[-1]["response"]["id"],
                "input": user("first question"),
            },
        )
        assert first[0]["type"] == "response.created" and first[-1]["type"] == "response.completed"
        second = await turn(
            ws,
            {
                "model": "gpt-5.5",
                "previous_response_id": first[-1]["response"]["id"],
                "input": user("second question"),
            },
        )
        assert second[-1]["type"] == "response.completed"
    bodies = [r.json for r in fakes.codex.requests]
    assert len(bodies) == 2
    texts = json.dumps(bodies[1]["input"])
    # the second upstream call carries the first question, the first answer and the new question
    assert "first question" in texts and "second question" in texts
    assert any(
        item.get("role") == "assistant" or item.get("type") == "message" for item in bodies[1]["input"][1:]
    )
    assert "previous_response_id" not in bodies[1]
    assert bodies[1]["stream"] is True and bodies[1]["store"] is False


async def test_unknown_previous_response_fails_in_band(proxy: str, fakes: Fakes) -> None:
    async with websockets.connect(ws_url(proxy)) as ws:
        events = await turn(ws, {"model": "gpt-5.5", "previous_response_id": "resp_nope", "input": user("x")})
    assert events[-1]["type"] == "response.failed"
    assert "resp_nope" in events[-1]["response"]["error"]["message"]
    assert events[-1]["response"]["error"]["code"] == "previous_response_not_found"
    assert fakes.codex.requests == []


async def test_socket_shares_the_http_store(make_proxy: MakeProxy, fakes: Fakes) -> None:
    """A kept WebSocket turn chains over HTTP; a store:false one only on its own connection. (A proxy of its
    own: the fakes' ids repeat across tests.)"""
    from .conftest import CODEX_TOKEN

    with make_proxy(**{"plugins.codex.access_token": CODEX_TOKEN}) as proxy:
        await _shared_store(proxy, fakes)


async def _shared_store(proxy: str, fakes: Fakes) -> None:
    import httpx

    async with websockets.connect(ws_url(proxy)) as ws:
        kept = (await turn(ws, {"model": "gpt-5.5", "input": user("kept turn")}))[-1]["response"]
        unkept = (await turn(ws, {"model": "gpt-5.5", "input": user("unkept"), "store": False}))[-1][
            "response"
        ]
        chained = await turn(
            ws, {"model": "gpt-5.5", "previous_response_id": unkept["id"], "input": user("more")}
        )
        assert chained[-1]["type"] == "response.completed"  # chainable on its connection
    base = proxy + "/api/codex/v1/responses"
    fetched = httpx.get(f"{base}/{kept['id']}")
    assert fetched.status_code == 200 and fetched.json()["id"] == kept["id"]
    assert httpx.get(f"{base}/{unkept['id']}").status_code == 404  # forgotten with the connection
    over_http = httpx.post(
        base, json={"model": "gpt-5.5", "previous_response_id": kept["id"], "input": "next"}
    )
    assert over_http.status_code == 200
    assert "kept turn" in json.dumps(fakes.codex.last_request.json["input"])


async def test_upstream_error_becomes_response_failed(proxy: str, fakes: Fakes) -> None:
    fakes.codex.reply_error(429, "slow down")
    async with websockets.connect(ws_url(proxy)) as ws:
        events = await turn(ws, {"model": "gpt-5.5", "input": user("x")})
        assert events[-1]["type"] == "response.failed"
        assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
        # the socket stays usable for the next turn
        again = await turn(ws, {"model": "gpt-5.5", "input": user("y")})
        assert again[-1]["type"] == "response.completed"


@pytest.mark.parametrize("frame", ["not json", json.dumps({"type": "something.else"}), json.dumps([1, 2])])
async def test_bad_frames_close_with_policy_violation(proxy: str, frame: str) -> None:
    async with websockets.connect(ws_url(proxy)) as ws:
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_session_path_gives_a_stable_session(proxy: str, fakes: Fakes) -> None:
    async with websockets.connect(ws_url(proxy, "/api/codex/sess-ws-1/responses")) as ws:
        await turn(ws, {"model": "gpt-5.5", "input": user("a")})
        await turn(ws, {"model": "gpt-5.5", "input": user("b")})
    assert [r.headers["session_id"] for r in fakes.codex.requests] == ["sess-ws-1", "sess-ws-1"]


async def test_auth_token_is_checked_before_accept(make_proxy: MakeProxy, fakes: Fakes) -> None:
    from .conftest import CODEX_TOKEN

    with make_proxy(**{"security.auth_token": "ws-secret", "plugins.codex.access_token": CODEX_TOKEN}) as url:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url(url)):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(
            ws_url(url), additional_headers={"authorization": "Bearer ws-secret"}
        ) as ws:
            events = await turn(ws, {"model": "gpt-5.5", "input": user("hi")})
            assert events[-1]["type"] == "response.completed"
    assert all("ws-secret" not in json.dumps(r.headers) for r in fakes.codex.requests)
