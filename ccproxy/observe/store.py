"""Ledger storage: SQLite (embedded default) or PostgreSQL (asyncpg), one schema, versioned migrations.

Both stores have the same async interface. SQLite runs in WAL mode with a busy timeout, so several
workers and several ccproxy processes can append at once; its calls run in a worker thread, never on the
event loop. Rows are plain tuples in ``COLUMNS`` order.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
COLUMNS = (
    "ts",
    "request_id",
    "provider",
    "route",
    "client_format",
    "model",
    "model_served",
    "stream",
    "status",
    "error_kind",
    *TOKEN_COLUMNS,
    "cost_usd",
    "duration_ms",
    "ttfb_ms",
    "upstream_status",
    "retries",
    "session_id",
    "client",
    "account",
    "client_key",
)
# Text columns that may be empty: rows carry "" (bound as it is) and the INSERT turns it into NULL. Python's
# sqlite3 binds None through its adaptation lookup, which formats and drops an AttributeError per value:
# ~2,000 instructions each, a sixth of a row's write (callgrind).
OPTIONAL_TEXT = frozenset(
    {"model", "model_served", "error_kind", "session_id", "client", "account", "client_key"}
)
# Each migration is a list of statements valid on both SQLite and PostgreSQL; never edit a shipped one,
# append a new version (e.g. ALTER TABLE usage ADD COLUMN ...).
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE usage (
                ts DOUBLE PRECISION NOT NULL,
                request_id TEXT NOT NULL,
                provider TEXT NOT NULL,
                route TEXT NOT NULL,
                client_format TEXT NOT NULL,
                model TEXT,
                model_served TEXT,
                stream INTEGER NOT NULL,
                status INTEGER NOT NULL,
                error_kind TEXT,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cache_read_tokens BIGINT NOT NULL,
                cache_write_tokens BIGINT NOT NULL,
                reasoning_tokens BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION,
                duration_ms DOUBLE PRECISION NOT NULL,
                ttfb_ms DOUBLE PRECISION NOT NULL,
                upstream_status INTEGER NOT NULL,
                retries INTEGER NOT NULL,
                session_id TEXT,
                client TEXT,
                account TEXT
            )""",
            "CREATE INDEX usage_ts ON usage (ts)",
        ],
    ),
    # the client key that admitted the request (``client`` holds the key's name or the client's product
    # name, so the two could not be told apart): ``ccproxy usage --by key``
    (2, ["ALTER TABLE usage ADD COLUMN client_key TEXT"]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS ccproxy_schema_version (version INTEGER NOT NULL)"
_PG_LOCK = 0x63637078  # advisory lock id: one migrating process at a time


class Store(Protocol):
    url: str

    async def open(self) -> None: ...

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None: ...

    async def since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]: ...

    async def prune(self, before_ts: float) -> int: ...

    async def version(self) -> int: ...

    async def close(self) -> None: ...


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError(f"ledger.url must be sqlite:///PATH or postgresql://...; got {url.split('://')[0]}://")


def _select(columns: Sequence[str]) -> str:
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
    return f"SELECT {', '.join(columns)} FROM usage WHERE ts >= "


def _placeholder(column: str, mark: str) -> str:
    return f"NULLIF({mark}, '')" if column in OPTIONAL_TEXT else mark


def _chunks(rows: Sequence[tuple[Any, ...]], largest: int) -> list[Sequence[tuple[Any, ...]]]:
    """``rows`` cut into runs whose lengths are powers of two, each at most ``largest`` (a power of two)."""
    out: list[Sequence[tuple[Any, ...]]] = []
    at, size = 0, largest
    while at < len(rows):
        while size > len(rows) - at:
            size >>= 1
        out.append(rows[at : at + size])
        at += size
    return out


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///")).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._values = f"({', '.join(_placeholder(c, '?') for c in COLUMNS)})"
        self._insert = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES {self._values}"
        self._max_rows = 1

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # usage is private: owner-only
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed batch
        # A checkpoint (copy into the database, then fsync) every ~40 MB of log instead of SQLite's 4 MB: at
        # thousands of requests a second that is one every ~30 s, not every ~3 s (the fsyncs cost the serving
        # CPU measurable time on a busy proxy); the log is cut back to 64 MB after each.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        conn.execute("PRAGMA journal_size_limit=67108864")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            conn.execute(_VERSION_TABLE)
            row = conn.execute("SELECT MAX(version) FROM ccproxy_schema_version").fetchone()
            current = row[0] or 0
            for version, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO ccproxy_schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _open(self) -> None:
        conn = self._connect()
        self._migrate(conn)
        self._conn = conn
        # rows per statement: the largest power of two within SQLite's bound-variable limit, at most 512
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS)
        self._max_rows = min(512, 1 << (max(limit, 1).bit_length() - 1))

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk in _chunks(rows, self._max_rows):
                conn.execute(self._insert_rows(len(chunk)), list(chain.from_iterable(chunk)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @functools.cache  # noqa: B019  (a handful of sizes per store): the same str, its hash kept, finds the
    # connection's prepared statement without re-hashing ~75 KB of SQL per batch
    def _insert_rows(self, count: int) -> str:
        """One INSERT of ``count`` rows: a single sqlite3_step, so the writer thread lets go of the GIL
        once per statement instead of once per row (executemany), and the serving thread is not made to
        wait for it hundreds of times per batch. Sizes are powers of two: a handful of cached statements."""
        return self._insert + (", " + self._values) * (count - 1)

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        await asyncio.to_thread(self._write, rows)

    def _since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        conn = self._connect()  # readers get their own connection: the writer's is used from its thread
        try:
            return conn.execute(_select(columns) + "? ORDER BY ts", (ts,)).fetchall()
        finally:
            conn.close()

    async def since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._since, ts, columns)

    def _prune(self, before_ts: float) -> int:
        conn = self._connect()
        try:
            return conn.execute("DELETE FROM usage WHERE ts < ?", (before_ts,)).rowcount
        finally:
            conn.close()

    async def prune(self, before_ts: float) -> int:
        return await asyncio.to_thread(self._prune, before_ts)

    def _version(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT MAX(version) FROM ccproxy_schema_version").fetchone()[0] or 0)
        finally:
            conn.close()

    async def version(self) -> int:
        return await asyncio.to_thread(self._version)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None
        placeholders = ", ".join(_placeholder(c, f"${i + 1}") for i, c in enumerate(COLUMNS))
        self._insert = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({placeholders})"

    async def open(self) -> None:
        try:
            import asyncpg
        except ImportError:
            raise RuntimeError(
                "a postgresql:// ledger needs asyncpg: pip install 'ccproxy-api[postgres]'"
            ) from None
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2, command_timeout=60)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK)
            await conn.execute(_VERSION_TABLE)
            current = await conn.fetchval("SELECT MAX(version) FROM ccproxy_schema_version") or 0
            for version, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO ccproxy_schema_version (version) VALUES ($1)", version)

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(self._insert, rows)

    async def since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        async with self._pool.acquire() as conn:
            records = await conn.fetch(_select(columns) + "$1 ORDER BY ts", ts)
        return [tuple(r) for r in records]

    async def prune(self, before_ts: float) -> int:
        async with self._pool.acquire() as conn:
            status: str = await conn.execute("DELETE FROM usage WHERE ts < $1", before_ts)
        return int(status.rsplit(" ", 1)[-1])

    async def version(self) -> int:
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval("SELECT MAX(version) FROM ccproxy_schema_version") or 0)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
