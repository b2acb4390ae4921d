"""Live agent conversations: one ``ClaudeSDKClient`` (one ``claude`` process) per session, and one-shots.

Each session's client lives in its own runner task (the SDK's client must be used from the task that
connected it); requests hand it a ``Turn`` and read the turn's events from a queue. One turn at a time per
session: a second request waits up to ``session_wait_seconds`` for the first, then gets a 409.

What a request sends is planned against what the session's agent has seen (fingerprints of every message
of the last request plus the answer it produced): a follow-up sends only its new user turns; a history that
does not extend what the agent saw (edited, truncated, another system prompt) starts a new conversation
that carries the whole history, and says so in a log line. A dead process is replaced on the next request,
likewise logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import structlog
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    CLIConnectionError,
    CLINotFoundError,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
    ToolPermissionContext,
)

from ccproxy.errors import ProxyError
from ccproxy.plugins import RequestEvent
from ccproxy.providers.claude_sdk import ClaudeSDKSettings
from ccproxy.providers.claude_sdk.prompt import Prompt, user_message
from ccproxy.providers.claude_sdk.relay import Event, Relay, sse

log = structlog.get_logger("ccproxy.claude_sdk")

JSON = dict[str, Any]
OptionsFactory = Callable[[str | None, str | None, Any], ClaudeAgentOptions]
LOGIN_HINT = (
    "Claude Code is not logged in: run `claude /login` (or `claude setup-token`) as the user running "
    "ccproxy, or set plugins.claude_sdk.base_url"
)
_END = None


class Turn:
    """One request's exchange with the agent; the runner fills ``out``, the response drains it."""

    def __init__(self, message: JSON, model: str | None, relay: Relay, owner: str, event: Any) -> None:
        self.message = message
        self.model = model
        self.relay = relay
        self.owner = owner
        self.event: RequestEvent | None = event
        self.out: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.finished = False
        self.done = asyncio.Event()
        self.aborted = False
        self.failure: ProxyError | None = None  # after output began: reported in-band
        self.asking = 0  # permission requests in flight: the idle timeout waits for people
        self.session: Session | None = None

    def push(self, message: Any) -> None:
        events = self.relay.feed(message)
        if isinstance(message, ResultMessage):
            self._result(message)
            return
        if events:
            if not self.first.done():
                self.first.set_result(None)
            self.out.put_nowait(events)

    def _result(self, result: ResultMessage) -> None:
        if self.event is not None:
            self.event.cost_usd = result.total_cost_usd
        if result.is_error and not self.aborted:
            error = result_error(result)
            if not self.first.done():
                self.first.set_exception(error)
                return
            self.failure = error
            self.out.put_nowait([_error_event(error)])
            return
        if not self.first.done():
            self.first.set_result(None)
        self.out.put_nowait(self.relay.end())

    def fail(self, error: ProxyError) -> None:
        if not self.first.done():
            self.first.set_exception(error)
        elif self.failure is None and not self.finished:
            self.failure = error
            self.out.put_nowait([_error_event(error)])

    def finish(self) -> None:
        if not self.first.done():
            self.first.set_exception(ProxyError(502, "the claude agent ended the turn without an answer"))
        self.finished = True
        self.done.set()
        self.out.put_nowait(_END)

    def abort(self, reason: str) -> None:
        """The client went away or the turn hung: stop the agent; the session stays usable."""
        if self.finished or self.aborted:
            return
        self.aborted = True
        log.info("interrupting the agent", reason=reason, session_id=self.session and self.session.key)
        if self.session is not None:
            self.session.interrupt(self)


class Session:
    def __init__(self, key: str | None, system: str | None, pool: SessionPool) -> None:
        self.key = key
        self.system = system
        self.pool = pool
        self.id = key or f"oneshot-{uuid.uuid4().hex[:12]}"
        self.lock = asyncio.Lock()
        self.seen: list[str] = []
        self.answer: str | None = None
        self.created_at = time.time()
        self.last_used = time.monotonic()
        self.turns = 0
        self.model: str | None = None
        self.pid: int | None = None
        self.dead = False
        self.started = False
        self.turn: Turn | None = None
        self._inbox: asyncio.Queue[Turn | None] = asyncio.Queue()
        self._ready: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._client: ClaudeSDKClient | None = None

    def info(self) -> JSON:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "idle_seconds": round(time.monotonic() - self.last_used, 3),
            "turns": self.turns,
            "busy": self.lock.locked(),
            "pid": self.pid,
            "model": self.model,
            "messages_seen": len(self.seen),
            "alive": not self.dead,
        }

    async def start(self, options: ClaudeAgentOptions, timeout: float) -> None:
        if self.started:
            return
        self.started = True
        self.model = options.model
        self._ready = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(options), name=f"claude-sdk:{self.id}")
        self.pool.tasks.add(self._runner)
        self._runner.add_done_callback(self.pool.tasks.discard)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            self.kill()
            raise ProxyError(
                504, f"the claude process did not start within {timeout:g} s", error_type="timeout_error"
            ) from None

    def submit(self, turn: Turn) -> None:
        turn.session = self
        self.turns += 1
        self._inbox.put_nowait(turn)

    def interrupt(self, turn: Turn) -> None:
        if turn.owner and self.pool.permissions is not None:
            self.pool.permissions.cancel_owner(turn.owner)
        self.pool.spawn(self._interrupt(turn))

    async def _interrupt(self, turn: Turn) -> None:
        client = self._client
        if client is not None and self.turn is turn:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.pool.settings.interrupt_grace):
                    await client.interrupt()
        try:
            async with asyncio.timeout(self.pool.settings.interrupt_grace):
                await turn.done.wait()
        except TimeoutError:
            log.warning("agent did not stop after an interrupt; ending its process", session_id=self.id)
            self.kill()

    def kill(self) -> None:
        self.dead = True
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()

    async def close(self) -> None:
        self.dead = True
        runner = self._runner
        if runner is None or runner.done():
            return
        self._inbox.put_nowait(None)
        try:
            async with asyncio.timeout(self.pool.settings.interrupt_grace):
                await asyncio.shield(runner)
        except TimeoutError:
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
        except BaseException:
            pass

    async def _run(self, options: ClaudeAgentOptions) -> None:
        assert self._ready is not None
        client = ClaudeSDKClient(options)
        try:
            await client.connect()
        except BaseException as exc:
            self.dead = True
            if not self._ready.done():
                self._ready.set_exception(connect_error(exc))
            return
        self._client = client
        self.pid = _pid(client)
        self._ready.set_result(None)
        log.info("claude process started", session_id=self.id, pid=self.pid)
        try:
            while True:
                turn = await self._inbox.get()
                if turn is None or not await self._serve(client, turn) or self.key is None:
                    break
        finally:
            self.dead = True
            for pending in _drain(self._inbox):
                pending.fail(ProxyError(502, "the claude session ended"))
                pending.finish()
                self.lock.release()
            with contextlib.suppress(BaseException):
                await client.disconnect()
            if self.key is None:
                self.pool.live.discard(self)
            log.info("claude process ended", session_id=self.id, pid=self.pid)

    async def _serve(self, client: ClaudeSDKClient, turn: Turn) -> bool:
        self.turn = turn
        ok = False
        try:
            if turn.model and turn.model != self.model:
                await client.set_model(turn.model)
                self.model = turn.model
            await client.query(_one(turn.message))
            async for message in client.receive_response():
                turn.push(message)
                if isinstance(message, ResultMessage):
                    ok = True
            if not ok:
                turn.fail(ProxyError(502, "the claude process ended before its answer was complete"))
                log.warning("claude process ended mid-turn", session_id=self.id, pid=self.pid)
        except asyncio.CancelledError:
            turn.fail(ProxyError(502, "the claude process was stopped"))
            raise
        except Exception as exc:
            turn.fail(ProxyError(502, f"the claude process failed: {_short(exc)}"))
            log.warning("claude process failed", session_id=self.id, error=_short(exc))
        finally:
            self.turn = None
            self.last_used = time.monotonic()
            if ok and not turn.aborted and turn.failure is None:
                self.answer = turn.relay.answer_fingerprint()
            turn.finish()
            self.lock.release()
        return ok


class SessionPool:
    def __init__(self, settings: ClaudeSDKSettings, options: OptionsFactory, permissions: Any) -> None:
        self.settings = settings
        self.options = options
        self.permissions = permissions
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.live: set[Session] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open(self, prompt: Prompt, key: str | None, model: str | None, stream: bool, event: Any) -> Any:
        session, messages = await self._checkout(prompt, key)
        owner = (event.request_id if event is not None else "") or uuid.uuid4().hex
        relay = Relay(model, self.settings.tool_display, self.settings.tool_result_chars)
        turn = Turn(user_message(messages), model, relay, owner, event)
        session.seen, session.answer = prompt.fingerprints, None
        try:
            await session.start(
                self.options(prompt.system, model, self._asker(session)), self.settings.first_event_timeout
            )
            if session.dead:
                raise ProxyError(502, "the claude process exited")
        except BaseException:
            session.lock.release()
            self.live.discard(session)
            if key is not None:
                self.sessions.pop(key, None)
            raise
        session.submit(turn)
        try:
            async with asyncio.timeout(self.settings.first_event_timeout):
                await asyncio.shield(turn.first)
        except TimeoutError:
            turn.abort("no answer before the first-event timeout")
            raise ProxyError(
                504,
                f"the claude agent sent nothing within {self.settings.first_event_timeout:g} s",
                error_type="timeout_error",
            ) from None
        except BaseException:
            turn.abort("request ended before the first event")
            raise
        return AgentResponse(turn, stream, self.settings.idle_timeout)

    async def _checkout(self, prompt: Prompt, key: str | None) -> tuple[Session, list[JSON]]:
        if key is None:
            session = Session(None, prompt.system, self)
            self.live.add(session)
            await session.lock.acquire()
            return session, prompt.messages
        session = self.sessions.get(key) or self._create(key, prompt.system)
        await self._lock(session)
        if session.dead and session.started:
            log.warning("claude process of the session died; starting a fresh one", session_id=key)
            session = await self._replace(session, prompt)
            return session, prompt.messages
        if not session.started:
            session.system = prompt.system
            return session, prompt.messages
        tail = plan(session, prompt)
        if tail is None:
            log.warning(
                "session history diverged (edited, truncated or another system prompt); "
                "starting a new conversation that carries the history",
                session_id=key,
                messages=len(prompt.messages),
            )
            session = await self._replace(session, prompt)
            return session, prompt.messages
        self.sessions.move_to_end(key)
        return session, tail

    async def _replace(self, old: Session, prompt: Prompt) -> Session:
        old.lock.release()
        await self._end(old)
        assert old.key is not None
        session = self._create(old.key, prompt.system)
        await session.lock.acquire()
        return session

    def _create(self, key: str, system: str | None) -> Session:
        while len(self.sessions) >= self.settings.max_sessions:
            idle = next((s for s in self.sessions.values() if not s.lock.locked()), None)
            if idle is None:
                raise ProxyError(
                    503,
                    f"all {self.settings.max_sessions} SDK sessions are busy; retry later",
                    error_type="overloaded_error",
                )
            log.info("session evicted (least recently used)", session_id=idle.key)
            self.sessions.pop(idle.id, None)
            self.spawn(self._end(idle))
        session = Session(key, system, self)
        self.sessions[key] = session
        self.live.add(session)
        return session

    async def _lock(self, session: Session) -> None:
        wait = self.settings.session_wait_seconds
        try:
            async with asyncio.timeout(wait):
                await session.lock.acquire()
        except TimeoutError:
            raise ProxyError(
                409,
                f"session {session.key} is busy with another request (waited {wait:g} s)",
                error_type="invalid_request_error",
            ) from None

    def _asker(self, session: Session) -> Any:
        permissions = self.permissions

        async def can_use_tool(
            tool_name: str, tool_input: dict[str, Any], ctx: ToolPermissionContext
        ) -> PermissionResultAllow | PermissionResultDeny:
            turn = session.turn
            if permissions is None:
                return PermissionResultDeny(message="no permission service is running")
            if turn is not None:
                turn.asking += 1
            try:
                decision = await permissions.ask(
                    tool_name,
                    tool_input,
                    source="sdk",
                    session_id=session.key,
                    request_id=turn.event.request_id if turn and turn.event else None,
                    tool_use_id=ctx.tool_use_id,
                    owner=turn.owner if turn else None,
                )
            finally:
                if turn is not None:
                    turn.asking -= 1
            if decision.allowed:
                return PermissionResultAllow(updated_input=decision.updated_input)
            return PermissionResultDeny(message=decision.message)

        return can_use_tool

    async def end(self, key: str) -> bool:
        session = self.sessions.pop(key, None)
        if session is None:
            return False
        await self._end(session)
        return True

    async def _end(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            self.sessions.pop(session.id, None)
        if session.turn is not None:
            session.turn.abort("session ended")
        await session.close()
        self.live.discard(session)

    async def reap(self) -> None:
        """Close sessions idle for longer than ``session_idle`` (runs until cancelled)."""
        interval = max(0.05, min(self.settings.session_idle_seconds / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.lock.locked() and now - session.last_used > self.settings.session_idle_seconds:
                    log.info("session closed after idling", session_id=session.key)
                    await self._end(session)
            for session in [s for s in self.live if s.key is None and s.dead]:
                self.live.discard(session)

    async def close_all(self) -> None:
        sessions = list(self.live)
        self.sessions.clear()
        self.live.clear()
        await asyncio.gather(*(self._end(s) for s in sessions), return_exceptions=True)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def plan(session: Session, prompt: Prompt) -> list[JSON] | None:
    """The messages the session's agent has not seen, or ``None`` when the history diverged."""
    if prompt.system != session.system:
        return None
    seen, fps, messages = session.seen, prompt.fingerprints, prompt.messages
    n = len(seen)
    if fps[:n] != seen:
        return None
    start = n
    if start < len(messages) and messages[start].get("role") == "assistant":
        if session.answer is not None and fps[start] != session.answer:
            return None  # the client's copy of the agent's answer was edited
        start += 1
    if start < len(messages):
        return messages[start:]
    if session.answer is None and n == len(messages):
        return messages[-1:]  # the last turn was interrupted: the same question is asked again
    return None


class AgentResponse:
    """What the shared data path reads like an upstream response: SSE events or one JSON body."""

    status = 200

    def __init__(self, turn: Turn, stream: bool, idle_timeout: float) -> None:
        self.turn = turn
        self.stream = stream
        self.idle_timeout = idle_timeout
        self.headers: dict[str, str] = {}
        self.content_type = "text/event-stream" if stream else "application/json"

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        if not self.stream:
            yield await self.read()
            return
        while (events := await self._next()) is not None:
            yield sse(events)

    async def read(self, limit: int | None = None) -> bytes:
        while await self._next() is not None:
            pass
        if self.turn.failure is not None:
            raise self.turn.failure
        return orjson.dumps(self.turn.relay.message())

    async def _next(self) -> list[Event] | None:
        turn = self.turn
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    events = await turn.out.get()
            except TimeoutError:
                if turn.asking:
                    continue  # a person is deciding; the permission timeout bounds this
                turn.abort("idle timeout")
                error = ProxyError(
                    504,
                    f"the claude agent sent nothing for {self.idle_timeout:g} s",
                    error_type="timeout_error",
                )
                if turn.failure is None:
                    turn.failure = error
                    return [_error_event(error)]
                return None
            return events

    def release(self) -> None:
        if not self.turn.finished:
            self.turn.abort("the client went away")

    def close(self) -> None:
        self.release()


def result_error(result: ResultMessage) -> ProxyError:
    text = (result.result or "; ".join(result.errors or []) or result.subtype or "agent error").strip()
    if "not logged in" in text.lower() or "/login" in text:
        return ProxyError(401, f"{LOGIN_HINT} ({text})", error_type="authentication_error")
    status = result.api_error_status or 502
    return ProxyError(status if 400 <= status < 600 else 502, f"claude agent error: {text}")


def connect_error(exc: BaseException) -> ProxyError:
    if isinstance(exc, CLINotFoundError):
        return ProxyError(
            503,
            f"the claude CLI was not found ({exc}); reinstall claude-agent-sdk (it bundles one) or set "
            "plugins.claude_sdk.cli_path",
        )
    if isinstance(exc, CLIConnectionError | OSError):
        return ProxyError(503, f"cannot start the claude CLI: {_short(exc)}")
    if isinstance(exc, ProxyError):
        return exc
    return ProxyError(502, f"the claude CLI failed to start: {_short(exc)}")


def _error_event(error: ProxyError) -> Event:
    info = error.info
    kind = info.type or ("overloaded_error" if info.status == 529 else "api_error")
    return ("error", {"type": "error", "error": {"type": kind, "message": info.message}})


async def _one(message: JSON) -> AsyncIterator[JSON]:
    yield message


def _drain(queue: asyncio.Queue[Turn | None]) -> list[Turn]:
    out: list[Turn] = []
    while not queue.empty():
        item = queue.get_nowait()
        if item is not None:
            out.append(item)
    return out


def _pid(client: ClaudeSDKClient) -> int | None:
    process = getattr(getattr(client, "_transport", None), "_process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
