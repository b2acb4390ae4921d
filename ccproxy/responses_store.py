"""Stateful Responses over stateless upstreams: the responses this proxy produced, by id.

Both upstreams are stateless for us (Anthropic has no response state; the Codex backend runs with
``store: false``), so ``previous_response_id`` is resolved here: each kept response holds the full item
history of its turn (input items + output items, in the client's Responses shape) and the response object
(for ``GET /v1/responses/{id}``). A request naming a ``previous_response_id`` gets that history put in
front of its own input before translation, so the upstream receives exactly what a client sending the full
history would have sent.

Bounded in memory by count, bytes and a TTL (oldest first out). An entry is one serialised blob, so its
size is exact and persistence writes it unchanged. Persistence is optional (``ResponsePersistence``; the
SQLite implementation runs the stdlib driver off the event loop): a miss in memory is looked up there, so
a chain survives a restart.

Streams cost nothing per chunk: the finished response is read once from the terminal event, the last frame
the client was sent (``terminal_response``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from pydantic import Field

from ccproxy.config import StrictModel
from ccproxy.errors import ProxyError

log = structlog.get_logger("ccproxy.responses")


class ResponseStoreSettings(StrictModel):
    max_responses: int = Field(2048, ge=0, description="Responses kept in memory (0: keep none)")
    max_bytes: int = Field(128 << 20, ge=0, description="Memory the kept responses may use, in bytes")
    ttl_seconds: float = Field(86_400.0, gt=0, description="How long a response can be chained or fetched")
    database: Path | None = Field(
        None, description="SQLite file that keeps responses across restarts (unset: memory only)"
    )


class ResponsePersistence(Protocol):
    """Where kept responses outlive the process. Blobs are opaque; expiry is absolute (epoch seconds)."""

    async def load(self, scope: str, response_id: str) -> tuple[bytes, float] | None: ...

    async def save(self, scope: str, response_id: str, blob: bytes, expires_at: float) -> None: ...

    async def delete(self, scope: str, response_id: str) -> bool: ...

    async def close(self) -> None: ...


class SQLitePersistence:
    """``ResponsePersistence`` in one SQLite table; every call runs in a worker thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ccproxy_responses (scope TEXT NOT NULL, id TEXT NOT NULL, "
                "blob BLOB NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (scope, id))"
            )

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            rows = cursor.fetchall()
            return rows if rows else [cursor.rowcount]

    async def load(self, scope: str, response_id: str) -> tuple[bytes, float] | None:
        sql = "SELECT blob, expires_at FROM ccproxy_responses WHERE scope = ? AND id = ?"
        rows = await asyncio.to_thread(self._run, sql, (scope, response_id))
        row = rows[0]
        return (bytes(row[0]), float(row[1])) if isinstance(row, tuple) else None

    async def save(self, scope: str, response_id: str, blob: bytes, expires_at: float) -> None:
        await asyncio.to_thread(
            self._run,
            "INSERT OR REPLACE INTO ccproxy_responses VALUES (?, ?, ?, ?)",
            (scope, response_id, blob, expires_at),
        )
        # Expired rows go on the way (a cheap indexed-less sweep; writes are one per response).
        await asyncio.to_thread(
            self._run, "DELETE FROM ccproxy_responses WHERE expires_at < ?", (time.time(),)
        )

    async def delete(self, scope: str, response_id: str) -> bool:
        sql = "DELETE FROM ccproxy_responses WHERE scope = ? AND id = ?"
        rows = await asyncio.to_thread(self._run, sql, (scope, response_id))
        return bool(rows[0])

    async def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(slots=True)
class Kept:
    blob: bytes  # orjson of {"items": [...], "response": {...}}
    expires_at: float

    def decode(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.blob)
        return data


class ResponseStore:
    """Kept responses of one provider (``scope``), newest last."""

    def __init__(
        self, scope: str, settings: ResponseStoreSettings, persistence: ResponsePersistence | None = None
    ) -> None:
        self.scope = scope
        self.settings = settings
        self.persistence = persistence
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._bytes = 0
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.settings.max_responses > 0 or self.persistence is not None

    async def get(self, response_id: str) -> Kept | None:
        kept = self._kept.get(response_id)
        now = time.time()
        if kept is None and self.persistence is not None:
            try:
                row = await self.persistence.load(self.scope, response_id)
            except sqlite3.Error as exc:
                log.warning("response store lookup failed", error=str(exc))
                row = None
            if row is not None:
                kept = Kept(*row)
                if kept.expires_at > now:
                    self._insert(response_id, kept)
        if kept is None:
            return None
        if kept.expires_at <= now:
            self._drop(response_id)
            return None
        return kept

    def put(
        self, response_id: str, items: list[Any], response: dict[str, Any], *, persist: bool = True
    ) -> None:
        """Keep a finished response: ``items`` is its whole history (input then output items)."""
        if not response_id:
            return
        kept = Kept(
            orjson.dumps({"items": items, "response": response}), time.time() + self.settings.ttl_seconds
        )
        self._insert(response_id, kept)
        if persist and self.persistence is not None:
            self._spawn(self.persistence.save(self.scope, response_id, kept.blob, kept.expires_at))

    async def delete(self, response_id: str) -> bool:
        found = self._drop(response_id)
        if self.persistence is not None:
            try:
                found = await self.persistence.delete(self.scope, response_id) or found
            except sqlite3.Error as exc:
                log.warning("response store delete failed", error=str(exc))
        return found

    async def expand(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with ``previous_response_id`` replaced by that response's history in front of ``input``.

        Unknown or expired ids get the OpenAI API's own 400 (``previous_response_not_found``).
        """
        previous = body.pop("previous_response_id", None)
        if previous is None:
            return body
        if not isinstance(previous, str) or not previous:
            raise ProxyError(400, "previous_response_id must be a string", param="previous_response_id")
        kept = await self.get(previous)
        if kept is None:
            raise ProxyError(
                400,
                f"Previous response with id '{previous}' not found.",
                error_type="invalid_request_error",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        body["input"] = [*kept.decode()["items"], *input_items(body.get("input"))]
        return body

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self.persistence is not None:
            await self.persistence.close()

    def _insert(self, response_id: str, kept: Kept) -> None:
        self._drop(response_id)
        if self.settings.max_responses <= 0 or len(kept.blob) > self.settings.max_bytes:
            return
        self._kept[response_id] = kept
        self._bytes += len(kept.blob)
        while len(self._kept) > self.settings.max_responses or self._bytes > self.settings.max_bytes:
            _, oldest = self._kept.popitem(last=False)
            self._bytes -= len(oldest.blob)

    def _drop(self, response_id: str) -> bool:
        kept = self._kept.pop(response_id, None)
        if kept is None:
            return False
        self._bytes -= len(kept.blob)
        return True

    def _spawn(self, coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except sqlite3.Error as exc:
                log.warning("response store write failed", error=str(exc))

        task = asyncio.ensure_future(guarded())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


def input_items(value: Any) -> list[Any]:
    """A Responses ``input`` (string or item list) as an item list."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return list(value) if isinstance(value, list) else []


def terminal_response(chunk: bytes) -> dict[str, Any] | None:
    """The finished ``response`` of a Responses stream, read from its last frame (the terminal event ends
    the last chunk sent), or ``None`` when the stream did not end with ``response.completed`` /
    ``response.incomplete``. One parse per answer, nothing per chunk."""
    end = len(chunk)
    while end and chunk[end - 1] == 10:  # trailing newlines
        end -= 1
    start = chunk.rfind(b"\n\n", 0, end)
    at = chunk.find(b"data: ", start + 2 if start >= 0 else 0, end)
    if at < 0:
        return None
    try:
        data = orjson.loads(chunk[at + 6 : end])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") not in ("response.completed", "response.incomplete"):
        return None
    response = data.get("response")
    return response if isinstance(response, dict) else None
