"""Lifecycle hooks: finished requests reach their observers in batches, in order, and none is lost."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from ccproxy.formats.base import Format
from ccproxy.meter import observe_later
from ccproxy.plugins import FINISH_BATCH, FINISH_WINDOW, Hooks, RequestEvent, ended_at, hookimpl


def _event(n: int) -> RequestEvent:
    return RequestEvent(
        f"req-{n}", "claude_api", "/api/v1/messages", "anthropic", "anthropic", "m", False, 0.0
    )


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, str]], broken: bool = False) -> None:
        self.name, self.log, self.broken = name, log, broken

    @hookimpl
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        self.log.append((self.name, event.request_id))
        if self.broken:
            raise RuntimeError("observer bug")


def test_a_batch_waits_for_the_window_then_each_observer_sees_all_of_it_in_order() -> None:
    seen: list[tuple[str, str]] = []
    hooks = Hooks()
    hooks.register(Recorder("first", seen), "first")
    hooks.register(Recorder("second", seen, broken=True), "second")  # its failures stop nobody

    async def scenario() -> list[tuple[str, str]]:
        hooks.request_finished(_event(1))
        hooks.request_finished(_event(2))
        assert seen == []  # the request path only queued them
        await asyncio.sleep(FINISH_WINDOW * 3)
        return list(seen)

    got = asyncio.run(scenario())
    # pluggy's order: the later-registered observer first; each over the whole batch in arrival order
    assert got == [("second", "req-1"), ("second", "req-2"), ("first", "req-1"), ("first", "req-2")]


def test_a_full_batch_is_handed_over_at_once_and_drain_empties_the_rest() -> None:
    seen: list[tuple[str, str]] = []
    hooks = Hooks()
    hooks.register(Recorder("only", seen), "only")

    async def scenario() -> None:
        for n in range(FINISH_BATCH):
            hooks.request_finished(_event(n))
        assert len(seen) == FINISH_BATCH  # no wait for the timer
        hooks.request_finished(_event(FINISH_BATCH))
        assert len(seen) == FINISH_BATCH
        hooks.drain()  # what an endpoint reporting the observers' state does first
        assert len(seen) == FINISH_BATCH + 1
        await asyncio.sleep(FINISH_WINDOW * 2)  # the cancelled timer delivers nothing twice
        assert len(seen) == FINISH_BATCH + 1

    asyncio.run(scenario())


def test_without_an_event_loop_or_observers_nothing_waits() -> None:
    seen: list[tuple[str, str]] = []
    hooks = Hooks()
    hooks.request_finished(_event(0))  # nobody listens: not even kept
    hooks.register(Recorder("only", seen), "only")
    hooks.request_finished(_event(1))  # a synchronous caller: delivered at once
    assert seen == [("only", "req-1")]


def test_an_observer_that_leaves_gets_what_it_was_owed() -> None:
    seen: list[tuple[str, str]] = []
    hooks = Hooks()
    hooks.register(Recorder("viewer", seen), "viewer")

    async def scenario() -> None:
        hooks.request_finished(_event(1))
        hooks.unregister("viewer")

    asyncio.run(scenario())
    assert seen == [("viewer", "req-1")]


def test_a_kept_answer_is_metered_before_the_observers_read_the_event() -> None:
    usages: list[object] = []

    class Reader:
        @hookimpl
        def ccproxy_request_finished(self, event: RequestEvent) -> None:
            usages.append((event.model_served, event.usage and event.usage.output_tokens, event.answer))

    hooks = Hooks()
    hooks.register(Reader(), "reader")
    body = {
        "id": "m",
        "type": "message",
        "model": "claude-x",
        "content": [],
        "usage": {"input_tokens": 3, "output_tokens": 7},
    }

    async def scenario() -> None:
        event = _event(1)
        observe_later(event, Format.ANTHROPIC, orjson.dumps(body))
        assert event.usage is None and event.answer is not None  # nothing parsed on the request path
        hooks.request_finished(event)
        hooks.drain()

    asyncio.run(scenario())
    assert usages == [("claude-x", 7, None)]  # read, and the bytes let go


def test_a_large_answer_is_metered_at_once_so_waiting_events_hold_little_memory() -> None:
    event = _event(1)
    big = {
        "model": "claude-x",
        "content": [{"type": "text", "text": "x" * 100_000}],
        "usage": {"output_tokens": 9},
    }
    observe_later(event, Format.ANTHROPIC, orjson.dumps(big))
    assert event.answer is None and event.usage is not None and event.usage.output_tokens == 9


def test_the_wall_clock_end_does_not_move_with_the_wait() -> None:
    event = _event(1)
    event.started = time.perf_counter() - 0.5
    event.duration = 0.25
    first = ended_at(event)
    time.sleep(FINISH_WINDOW)
    assert ended_at(event) == pytest.approx(first, abs=0.005)
    assert ended_at(event) == pytest.approx(time.time() - 0.25 - FINISH_WINDOW, abs=0.05)


def test_the_kept_headers_never_show_in_an_events_repr() -> None:
    """A ``started`` observer that logs the event must not log the caller's credentials."""
    event = _event(1)
    event.headers = {"authorization": "Bearer sk-ant-oat01-secret", "x-api-key": "ccp_secret"}
    event.answer = (Format.ANTHROPIC, b'{"text":"private answer"}')
    text = repr(event)
    assert "secret" not in text and "private answer" not in text and "req-1" in text
