"""The response store's bounds, TTL, persistence and stream reading (``ccproxy/responses_store.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from ccproxy.errors import ProxyError
from ccproxy.formats.errors import normalize_responses_failures
from ccproxy.responses_store import ResponseStore, ResponseStoreSettings, SQLitePersistence, terminal_response
from ccproxy.sse import frame


def settings(**values: Any) -> ResponseStoreSettings:
    return ResponseStoreSettings.model_validate(values)


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_expand_puts_history_first_and_refuses_unknown_ids() -> None:
    async def scenario() -> None:
        store = ResponseStore("p", settings())
        store.put(
            "resp_1", [user("a"), {"type": "message", "role": "assistant", "content": "b"}], {"id": "resp_1"}
        )
        body = await store.expand({"model": "m", "previous_response_id": "resp_1", "input": "c"})
        assert body == {
            "model": "m",
            "input": [user("a"), {"type": "message", "role": "assistant", "content": "b"}, user("c")],
        }
        with pytest.raises(ProxyError) as err:
            await store.expand({"previous_response_id": "resp_x", "input": []})
        assert err.value.info.code == "previous_response_not_found" and err.value.info.status == 400
        assert await store.expand({"input": "plain"}) == {"input": "plain"}

    asyncio.run(scenario())


def test_bounded_by_count_bytes_and_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        store = ResponseStore("p", settings(max_responses=2))
        for i in range(3):
            store.put(f"r{i}", [user(str(i))], {"id": f"r{i}"})
        assert await store.get("r0") is None and await store.get("r2") is not None
        small = ResponseStore("p", settings(max_bytes=300))
        small.put("a", [user("x" * 100)], {})
        small.put("b", [user("y" * 100)], {})
        assert await small.get("a") is None and await small.get("b") is not None
        small.put("huge", [user("z" * 1000)], {})  # larger than the whole budget: not kept
        assert await small.get("huge") is None and await small.get("b") is not None
        short = ResponseStore("p", settings(ttl_seconds=10))
        short.put("old", [], {})
        now = __import__("time").time()
        monkeypatch.setattr("ccproxy.responses_store.time.time", lambda: now + 11)
        assert await short.get("old") is None

    asyncio.run(scenario())


def test_sqlite_persistence_survives_a_new_store(tmp_path: Path) -> None:
    db = tmp_path / "state.db"

    async def first() -> None:
        store = ResponseStore("codex", settings(), SQLitePersistence(db))
        store.put("kept", [user("a")], {"id": "kept"})
        store.put("memory-only", [user("b")], {"id": "memory-only"}, persist=False)
        await store.close()

    async def second() -> None:
        store = ResponseStore("codex", settings(max_responses=0), SQLitePersistence(db))
        kept = await store.get("kept")
        assert kept is not None and kept.decode()["response"] == {"id": "kept"}
        assert await store.get("memory-only") is None
        other = ResponseStore("claude_api", settings(), SQLitePersistence(db))
        assert await other.get("kept") is None  # one provider's ids are not another's
        assert await store.delete("kept") is True
        assert await store.get("kept") is None
        await store.close()
        await other.close()

    asyncio.run(first())
    asyncio.run(second())


def test_terminal_response_reads_the_last_frame_only() -> None:
    response = {"id": "resp_1", "status": "completed", "output": [{"type": "message"}]}
    chunk = frame("response.output_text.done", {"type": "response.output_text.done"}) + frame(
        "response.completed", {"type": "response.completed", "response": response}
    )
    assert terminal_response(chunk) == response
    assert terminal_response(frame(None, {"type": "response.completed", "response": response})) == response
    late_error = chunk + frame("error", {"type": "error", "error": {"message": "late"}})
    assert terminal_response(late_error) is None
    assert terminal_response(b"") is None


def test_passthrough_failures_get_the_one_mapping() -> None:
    error = {
        "type": "error",
        "sequence_number": 3,
        "error": {"type": "x", "code": "overloaded_error", "message": "busy"},
    }
    failed = {
        "type": "response.failed",
        "response": {"id": "r", "error": {"code": "overloaded_error", "message": "busy"}},
    }
    chunk = frame("error", error) + frame("response.failed", failed)
    out = normalize_responses_failures(chunk)
    events = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert events[0]["code"] == "server_is_overloaded" and events[0]["error"]["type"] == "server_error"
    assert events[0]["sequence_number"] == 3
    assert events[1]["response"]["error"] == {"code": "server_is_overloaded", "message": "busy"}
    plain = frame("response.completed", {"type": "response.completed", "response": {"error": None}})
    assert normalize_responses_failures(plain) is plain
