"""The permission service: a person answers every tool use the agent would ask about.

One in-process service per app (``app.permissions``). Askers (the SDK provider's ``can_use_tool``
callback, the ``/mcp`` permission tool) call ``ask()``; it applies the config policy (always allow, always
deny), else parks a ``PermissionRequest`` until someone answers it through ``respond()`` (REST, the SSE
watchers, the terminal approver, the dashboard), the timeout denies it, or its owner goes away
(``cancel_owner``: the client disconnected).

Listeners (``subscribe()``) receive every change as a ``PermissionEvent``: ``pending`` (a new request;
every still-pending one is replayed first on subscribe), ``resolved`` (answered) and ``expired``
(timed out or cancelled). Each listener has its own queue; a slow one never blocks the agent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from ccproxy.config import PermissionsSettings

log = structlog.get_logger("ccproxy.permissions")

EventKind = Literal["pending", "resolved", "expired"]
_LISTENER_QUEUE = 1000


class AnswerError(Exception):
    """A ``respond()`` that cannot be applied: unknown id (404) or already decided (409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Decision:
    allowed: bool
    message: str = ""
    updated_input: dict[str, Any] | None = None
    by: str = "person"  # person | policy | timeout | disconnect

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allowed": self.allowed, "by": self.by}
        if self.message:
            out["message"] = self.message
        if self.updated_input is not None:
            out["updated_input"] = self.updated_input
        return out


@dataclass(slots=True)
class PermissionRequest:
    id: str
    tool_name: str
    input: dict[str, Any]
    created_at: float  # Unix time
    source: str  # "sdk" (the /claude agent) or "mcp"
    session_id: str | None = None
    request_id: str | None = None  # the proxied request that made the agent ask
    tool_use_id: str | None = None
    owner: str | None = None
    decision: Decision | None = None
    decided_at: float | None = None
    future: asyncio.Future[Decision] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "tool_name": self.tool_name,
            "input": self.input,
            "created_at": self.created_at,
            "source": self.source,
            "session_id": self.session_id,
            "request_id": self.request_id,
            "tool_use_id": self.tool_use_id,
            "status": "pending" if self.decision is None else "decided",
        }
        if self.decision is not None:
            out["decision"] = self.decision.to_json()
            out["decided_at"] = self.decided_at
        return out


@dataclass(frozen=True, slots=True)
class PermissionEvent:
    kind: EventKind
    request: dict[str, Any]


class PermissionService:
    def __init__(self, settings: PermissionsSettings) -> None:
        self.settings = settings
        self.pending: dict[str, PermissionRequest] = {}
        self.recent: deque[PermissionRequest] = deque(maxlen=settings.recent_size)
        self._decided: dict[str, PermissionRequest] = {}
        self._listeners: set[asyncio.Queue[PermissionEvent]] = set()
        self._allow = frozenset(settings.allow)
        self._deny = frozenset(settings.deny)

    # -- asking

    def policy(self, tool_name: str) -> Decision | None:
        """The config's answer for a tool, or ``None`` when a person must be asked."""
        if tool_name in self._deny:
            return Decision(False, f"{tool_name} is denied by the ccproxy permission policy", by="policy")
        if tool_name in self._allow:
            return Decision(True, by="policy")
        return None

    async def ask(
        self,
        tool_name: str,
        tool_input: dict[str, Any],
        *,
        source: str,
        session_id: str | None = None,
        request_id: str | None = None,
        tool_use_id: str | None = None,
        owner: str | None = None,
        timeout: float | None = None,
    ) -> Decision:
        decided = self.policy(tool_name)
        if decided is not None:
            log.info("permission by policy", tool=tool_name, allowed=decided.allowed)
            return decided
        req = PermissionRequest(
            id=f"perm_{uuid.uuid4().hex[:16]}",
            tool_name=tool_name,
            input=tool_input,
            created_at=time.time(),
            source=source,
            session_id=session_id,
            request_id=request_id,
            tool_use_id=tool_use_id,
            owner=owner,
            future=asyncio.get_running_loop().create_future(),
        )
        self.pending[req.id] = req
        log.info("permission requested", id=req.id, tool=tool_name, source=source, session_id=session_id)
        self._broadcast("pending", req)
        wait = self.settings.timeout_seconds if timeout is None else timeout
        assert req.future is not None
        try:
            return await asyncio.wait_for(asyncio.shield(req.future), wait)
        except TimeoutError:
            seconds = f"{wait:g}"
            self._finish(
                req,
                Decision(
                    False,
                    f"Permission to use {tool_name} was not granted: nobody answered the request within "
                    f"{seconds} s, so it was denied.",
                    by="timeout",
                ),
                "expired",
            )
            assert req.decision is not None
            return req.decision
        finally:
            if req.decision is None:  # the asker itself was cancelled (client gone)
                self._finish(req, Decision(False, "the request was cancelled", by="disconnect"), "expired")

    # -- answering

    def respond(
        self,
        request_id: str,
        allowed: bool,
        message: str = "",
        updated_input: dict[str, Any] | None = None,
        by: str = "person",
    ) -> PermissionRequest:
        req = self.pending.get(request_id)
        if req is None:
            if request_id in self._decided:
                raise AnswerError(409, f"permission request {request_id} was already decided")
            raise AnswerError(404, f"no permission request with id {request_id}")
        if not allowed and not message:
            message = f"The user denied permission to use {req.tool_name}."
        self._finish(req, Decision(allowed, message, updated_input, by), "resolved")
        log.info("permission answered", id=request_id, tool=req.tool_name, allowed=allowed)
        return req

    def cancel_owner(self, owner: str, reason: str = "the client disconnected") -> int:
        """Deny and expire every pending request of ``owner`` (e.g. a proxied request whose client left)."""
        mine = [r for r in self.pending.values() if r.owner == owner]
        for req in mine:
            self._finish(req, Decision(False, f"Permission request cancelled: {reason}.", by="disconnect"))
        return len(mine)

    def get(self, request_id: str) -> PermissionRequest | None:
        return self.pending.get(request_id) or self._decided.get(request_id)

    def snapshot(self) -> dict[str, Any]:
        return {
            "pending": [r.to_json() for r in self.pending.values()],
            "recent": [r.to_json() for r in reversed(self.recent)],
        }

    # -- listening

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[PermissionEvent]]:
        """A queue of events: first every pending request, then every change, until the block exits."""
        queue: asyncio.Queue[PermissionEvent] = asyncio.Queue(_LISTENER_QUEUE)
        for req in self.pending.values():
            queue.put_nowait(PermissionEvent("pending", req.to_json()))
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    # -- internals

    def _finish(self, req: PermissionRequest, decision: Decision, kind: EventKind = "expired") -> None:
        if req.decision is not None:
            return
        req.decision = decision
        req.decided_at = time.time()
        self.pending.pop(req.id, None)
        self._remember(req)
        if req.future is not None and not req.future.done():
            req.future.set_result(decision)
        if kind == "expired":
            log.info("permission expired", id=req.id, tool=req.tool_name, reason=decision.by)
        self._broadcast(kind, req)

    def _remember(self, req: PermissionRequest) -> None:
        if not self.recent.maxlen:
            return
        if len(self.recent) == self.recent.maxlen:
            self._decided.pop(self.recent[0].id, None)
        self.recent.append(req)
        self._decided[req.id] = req

    def _broadcast(self, kind: EventKind, req: PermissionRequest) -> None:
        event = PermissionEvent(kind, req.to_json())
        for queue in self._listeners:
            if queue.full():  # a listener that stopped reading loses its oldest event, never blocks us
                queue.get_nowait()
            queue.put_nowait(event)


def describe(tool_name: str, tool_input: dict[str, Any], width: int = 200) -> str:
    """One line for people: the tool and its most telling argument."""
    for key in ("command", "file_path", "path", "pattern", "url"):
        value = tool_input.get(key)
        if isinstance(value, str):
            text = value if len(value) <= width else value[: width - 1] + "…"
            return f"{tool_name}: {text}"
    return tool_name


__all__ = ["AnswerError", "Decision", "PermissionEvent", "PermissionRequest", "PermissionService", "describe"]
