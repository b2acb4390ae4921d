"""Ledger storage: SQLite (embedded default) or PostgreSQL (asyncpg), versioned migrations.

Both stores have the same async interface; rows are plain tuples in ``COLUMNS`` order. PostgreSQL keeps
one table row per request. SQLite keeps one row per written batch (``usage_batches``: the batch's rows
as a JSON array of arrays, with its time span), and ``usage`` is a view that shows one row per request,
so ad-hoc SQL reads it as before: a per-request INSERT bound 24 values and maintained an index, ~3.7 µs
of the writer thread's CPU per row, against ~0.8 µs for one JSON text per batch (``docs/decisions.md``).
SQLite runs in WAL mode with a busy timeout, so several workers and several ccproxy processes can append
at once; its calls run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import orjson

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
# Text columns that may be empty: rows carry "" (PostgreSQL's INSERT turns it into NULL; SQLite's readers
# and its ``usage`` view do), so no writer binds None.
OPTIONAL_TEXT = frozenset(
    {"model", "model_served", "error_kind", "session_id", "client", "account", "client_key"}
)
# Each migration is a list of statements valid on both SQLite and PostgreSQL, or a dict of lists by database
# (``"sqlite"``, ``"postgresql"``) where they differ; never edit a shipped one, append a new version. A new
# column since version 3: append it to ``COLUMNS`` and add ``{"sqlite": [], "postgresql": ["ALTER TABLE usage
# ADD COLUMN ..."]}``: SQLite's older rows are shorter arrays (read as NULL), and its view is rebuilt from
# ``COLUMNS`` whenever a migration ran.
Migration = list[str] | dict[str, list[str]]
_V2_COLUMNS = (
    "ts, request_id, provider, route, client_format, model, model_served, stream, status, error_kind, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, "
    "duration_ms, ttfb_ms, upstream_status, retries, session_id, client, account, client_key"
)
MIGRATIONS: list[tuple[int, Migration]] = [
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
    # SQLite: one row per written batch; the history moves over in one batch per hour, ``usage`` becomes a
    # view (created after the migrations, ``_sqlite_view``)
    (
        3,
        {
            "sqlite": [
                """CREATE TABLE usage_batches (
                    min_ts DOUBLE PRECISION NOT NULL,
                    max_ts DOUBLE PRECISION NOT NULL,
                    n INTEGER NOT NULL,
                    rows TEXT NOT NULL
                )""",
                "CREATE INDEX usage_batches_max_ts ON usage_batches (max_ts)",
                "INSERT INTO usage_batches (min_ts, max_ts, n, rows) SELECT MIN(ts), MAX(ts), COUNT(*), "
                f"json_group_array(json_array({_V2_COLUMNS})) FROM usage GROUP BY CAST(ts / 3600 AS INTEGER)",
                "DROP TABLE usage",
            ],
            "postgresql": [],
        },
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS ccproxy_schema_version (version INTEGER NOT NULL)"
_PG_LOCK = 0x63637078  # advisory lock id: one migrating process at a time
_PIECE = 5000  # rows fetched and handed over at a time (PostgreSQL ``fold``)


class Store(Protocol):
    url: str

    async def open(self) -> None: ...

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None: ...

    async def since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]: ...

    async def fold(
        self, ts: float, columns: Sequence[str], add: Callable[[list[tuple[Any, ...]]], None]
    ) -> None:
        """The rows of ``since`` handed to ``add`` in pieces, in no order: a long window is never held in
        memory at once (``add`` may run in a worker thread)."""

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


def _statements(migration: Migration, database: str) -> list[str]:
    return migration.get(database, []) if isinstance(migration, dict) else migration


def _sqlite_view() -> list[str]:
    """``usage`` as one row per request over ``usage_batches``, and an INSERT into it (hand-written SQL, or
    a ccproxy from before version 3 still running) stored as a batch of one."""
    picks = []
    for i, column in enumerate(COLUMNS):
        value = f"json_extract(r.value, '$[{i}]')"
        picks.append(f"{_placeholder(column, value)} AS {column}")
    columns = ", ".join(picks)
    new = ", ".join(f"NEW.{c}" for c in COLUMNS)
    return [
        "DROP TRIGGER IF EXISTS usage_insert",
        "DROP VIEW IF EXISTS usage",
        f"CREATE VIEW usage AS SELECT {columns} FROM usage_batches AS b, json_each(b.rows) AS r",
        "CREATE TRIGGER usage_insert INSTEAD OF INSERT ON usage BEGIN "
        "INSERT INTO usage_batches (min_ts, max_ts, n, rows) "
        f"VALUES (NEW.ts, NEW.ts, 1, json_array(json_array({new}))); END",
    ]


def _row_reader(columns: Sequence[str]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """Picks ``columns`` out of a stored row (a JSON array in ``COLUMNS`` order, shorter if written before a
    column existed); an empty optional text is None, as PostgreSQL's NULL."""
    index = [COLUMNS.index(c) for c in columns]
    optional = frozenset(at for at, c in enumerate(columns) if c in OPTIONAL_TEXT)
    pick = itemgetter(*index)
    single = len(index) == 1

    def slow(row: list[Any]) -> tuple[Any, ...]:
        values = [row[i] if i < len(row) else None for i in index]
        return tuple(None if v == "" and at in optional else v for at, v in enumerate(values))

    def read(row: list[Any]) -> tuple[Any, ...]:
        try:
            values = (pick(row),) if single else pick(row)
        except IndexError:  # written before one of these columns existed
            return slow(row)
        return slow(row) if optional and "" in values else values

    return read


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///")).expanduser()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # usage is private: owner-only
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed batch
        # A checkpoint (copy into the database, then fsync) every ~40 MB of log instead of SQLite's 4 MB;
        # the log is cut back to 64 MB after each.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        conn.execute("PRAGMA journal_size_limit=67108864")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            conn.execute(_VERSION_TABLE)
            row = conn.execute("SELECT MAX(version) FROM ccproxy_schema_version").fetchone()
            current = row[0] or 0
            for version, migration in MIGRATIONS:
                if version > current:
                    for statement in _statements(migration, "sqlite"):
                        conn.execute(statement)
                    conn.execute("INSERT INTO ccproxy_schema_version (version) VALUES (?)", (version,))
            if MIGRATIONS[-1][0] > current:
                for statement in _sqlite_view():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _open(self) -> None:
        conn = self._connect()
        self._migrate(conn)
        self._conn = conn

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """One statement, one transaction: the batch as one JSON text with its time span."""
        assert self._conn is not None
        if not rows:
            return
        times = [row[0] for row in rows]
        self._conn.execute(
            "INSERT INTO usage_batches (min_ts, max_ts, n, rows) VALUES (?, ?, ?, ?)",
            (min(times), max(times), len(rows), orjson.dumps(rows).decode()),
        )

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        await asyncio.to_thread(self._write, rows)

    def _since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        self._fold(ts, ("ts", *columns), found.extend)
        found.sort(key=itemgetter(0))
        return [row[1:] for row in found]

    async def since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._since, ts, columns)

    def _fold(self, ts: float, columns: Sequence[str], add: Callable[[list[tuple[Any, ...]]], None]) -> None:
        _select(columns)  # unknown names: the same error as PostgreSQL's
        read = _row_reader(columns)
        conn = self._connect()
        try:
            for (text,) in conn.execute("SELECT rows FROM usage_batches WHERE max_ts >= ?", (ts,)):
                add([read(row) for row in orjson.loads(text) if row[0] >= ts])
        finally:
            conn.close()

    async def fold(
        self, ts: float, columns: Sequence[str], add: Callable[[list[tuple[Any, ...]]], None]
    ) -> None:
        await asyncio.to_thread(self._fold, ts, columns, add)

    def _prune(self, before_ts: float) -> int:
        """Whole batches older than ``before_ts`` are deleted; a batch that spans it is rewritten."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                removed = conn.execute(
                    "SELECT COALESCE(SUM(n), 0) FROM usage_batches WHERE max_ts < ?", (before_ts,)
                ).fetchone()[0]
                conn.execute("DELETE FROM usage_batches WHERE max_ts < ?", (before_ts,))
                spanning = conn.execute(
                    "SELECT rowid, rows FROM usage_batches WHERE min_ts < ?", (before_ts,)
                ).fetchall()
                for rowid, text in spanning:
                    rows = orjson.loads(text)
                    kept = [row for row in rows if row[0] >= before_ts]
                    removed += len(rows) - len(kept)
                    if not kept:  # its max_ts was wrong (written by hand): nothing of it is left
                        conn.execute("DELETE FROM usage_batches WHERE rowid = ?", (rowid,))
                        continue
                    conn.execute(
                        "UPDATE usage_batches SET min_ts = ?, n = ?, rows = ? WHERE rowid = ?",
                        (min(row[0] for row in kept), len(kept), orjson.dumps(kept).decode(), rowid),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(removed)
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
            for version, migration in MIGRATIONS:
                if version > current:
                    for statement in _statements(migration, "postgresql"):
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO ccproxy_schema_version (version) VALUES ($1)", version)

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(self._insert, rows)

    async def since(self, ts: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        async with self._pool.acquire() as conn:
            records = await conn.fetch(_select(columns) + "$1 ORDER BY ts", ts)
        return [tuple(r) for r in records]

    async def fold(
        self, ts: float, columns: Sequence[str], add: Callable[[list[tuple[Any, ...]]], None]
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():  # a server-side cursor needs one
            piece: list[tuple[Any, ...]] = []
            async for record in conn.cursor(_select(columns) + "$1", ts, prefetch=_PIECE):
                piece.append(tuple(record))
                if len(piece) == _PIECE:
                    add(piece)
                    piece = []
            add(piece)

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
