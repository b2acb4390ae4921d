"""The usage ledger plugin: one row per proxied request, written off the request path in batches.

The lifecycle hook only appends a tuple to a list. A background task writes the list in transactions of
at most ``ledger.batch_size`` rows, every ``ledger.flush_seconds`` or as soon as a batch is full, so a
burst of 1,000 requests is a few transactions. A clean shutdown writes what is left; ``kill -9`` loses at
most the rows of the last ``flush_seconds``, and a transaction is all-or-nothing, so the database is never
left half-written. ``GET /usage`` and ``ccproxy usage`` read it back (``ccproxy.observe.usage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ccproxy.config import LedgerSettings
from ccproxy.errors import error_response
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo
from ccproxy.observe.store import Store, open_store
from ccproxy.observe.usage import UsageQueryError, query_usage
from ccproxy.plugins import (
    HealthCheck,
    Plugin,
    PluginContext,
    RequestEvent,
    Usage,
    ended_at,
    hookimpl,
)

log = structlog.get_logger("ccproxy.ledger")
_NO_USAGE = Usage()
_DAY = 86400.0
_PRUNE_EVERY = 3600.0


def row_of(event: RequestEvent, now: float) -> tuple[Any, ...]:
    """The ledger row of one finished request (``ccproxy.observe.store.COLUMNS`` order); a missing text
    value is "" (``store.OPTIONAL_TEXT``: stored as NULL)."""
    u = event.usage or _NO_USAGE
    return (
        now - event.duration,
        event.request_id,
        event.plugin,
        event.route or event.path,
        event.client_format,
        event.model or "",
        event.model_served or "",
        int(event.stream),
        event.status,
        event.error_kind or "" if event.status >= 400 or event.error is not None else "",
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
        event.cost_usd,
        event.duration * 1000,
        event.ttfb * 1000,
        event.upstream_status,
        event.retries,
        event.session_id or "",
        event.client or "",
        event.account or "",
        event.key or "",
    )


class LedgerWriter:
    """Buffers rows in memory and writes them in batches from one background task."""

    def __init__(self, store: Store, settings: LedgerSettings) -> None:
        self.store = store
        self.settings = settings
        self.pending: list[tuple[Any, ...]] = []
        self.dropped = 0
        self.transactions = 0  # written batches (for tests and /health)
        self.last_error: str | None = None
        self.opened = False
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def add(self, row: tuple[Any, ...]) -> None:
        pending = self.pending
        if len(pending) >= self.settings.queue_limit:
            self.dropped += 1  # the database is down or too slow: memory stays bounded
            return
        pending.append(row)
        if len(pending) == self.settings.batch_size:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        next_prune = 0.0
        while True:
            if len(self.pending) < self.settings.batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.flush_seconds):
                        await self._full.wait()
            self._full.clear()
            await self.flush()
            if self.settings.retention_days and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _PRUNE_EVERY
                await self.prune_expired()

    async def open(self) -> bool:
        """Open (and migrate) the store; while the database is unreachable, retried at every flush."""
        if not self.opened:
            try:
                await self.store.open()
            except Exception as exc:
                self._failed("ledger database unavailable; rows kept in memory", exc)
                return False
            self.opened = True
        return True

    def _failed(self, message: str, exc: Exception) -> None:
        if self.last_error is None:
            log.error(message, url=_safe_url(self.store.url), error=f"{type(exc).__name__}: {exc}")
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def flush(self) -> None:
        """Write what is pending now, in batches; on a database error the rows stay for the next try.

        Rows that arrive while a batch is being written wait for the next flush: under steady traffic the
        writer would otherwise chase them in a stream of tiny transactions (measured: 500 a second at
        11,000 rows/s, a third more CPU per request, against 23 a second of 500 rows)."""
        async with self._lock:
            if not await self.open():
                return
            todo = len(self.pending)
            while todo > 0:
                batch = self.pending[: min(self.settings.batch_size, todo)]
                try:
                    await self.store.write(batch)
                except Exception as exc:
                    if self.last_error is None:
                        log.error(
                            "ledger write failed; rows kept in memory", error=f"{type(exc).__name__}: {exc}"
                        )
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    return
                del self.pending[: len(batch)]
                todo -= len(batch)
                self.transactions += 1
                self.last_error = None

    async def prune_expired(self) -> int:
        cutoff = time.time() - self.settings.retention_days * _DAY
        try:
            removed = await self.store.prune(cutoff)
        except Exception as exc:
            log.warning("ledger retention failed", error=f"{type(exc).__name__}: {exc}")
            return 0
        if removed:
            log.info("ledger rows past retention removed", rows=removed)
        return removed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self.pending:
            log.error("ledger rows lost at shutdown", rows=len(self.pending), error=self.last_error)


class LedgerPlugin(Plugin):
    name = "ledger"
    core_switch = "ledger.enabled"  # switched by the core [ledger] section

    def __init__(self) -> None:
        self.writer: LedgerWriter | None = None

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        return [Route("/usage", self._usage_endpoint, methods=["GET"])]

    async def startup(self, ctx: PluginContext) -> None:
        settings: LedgerSettings = ctx.config.settings.ledger
        self.writer = LedgerWriter(open_store(settings.resolved_url()), settings)
        await self.writer.open()  # an unreachable database is retried; the proxy serves meanwhile
        self.writer.start()

    async def shutdown(self, ctx: PluginContext) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await writer.stop()
            await writer.store.close()

    async def health(self, ctx: PluginContext) -> list[HealthCheck]:
        writer = self.writer
        if writer is None:
            return [HealthCheck("store", "warn", "ledger not started")]
        details = {"pending": len(writer.pending), "dropped": writer.dropped}
        if writer.last_error:
            return [HealthCheck("store", "warn", f"writes failing: {writer.last_error}", details)]
        return [HealthCheck("store", "pass", None, details)]

    @hookimpl
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        writer = self.writer
        if writer is not None:
            writer.add(row_of(event, ended_at(event)))

    async def _usage_endpoint(self, request: Request) -> Response:
        writer = self.writer
        if writer is None:
            info = ErrorInfo(503, "api_error", "the usage ledger is not running")
            return error_response(Format.CHAT, info)
        await writer.flush()  # this process's pending rows are part of the answer
        if not writer.opened:
            info = ErrorInfo(503, "api_error", f"the usage ledger is unavailable: {writer.last_error}")
            return error_response(Format.CHAT, info)
        params = request.query_params
        try:
            result = await query_usage(writer.store, params.get("since", "24h"), params.get("by", "model"))
        except UsageQueryError as exc:
            return error_response(Format.CHAT, ErrorInfo(400, "invalid_request_error", str(exc)))
        return Response(orjson.dumps(result), media_type="application/json")


def _safe_url(url: str) -> str:
    """The URL without a password (postgresql://user:secret@host/db → postgresql://user:***@host/db)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"
