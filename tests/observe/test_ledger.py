"""The usage ledger, on SQLite and on a real PostgreSQL server: exactly the requests made, batched writes,
restarts, two processes at once, kill -9, migrations and retention."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from ccproxy.cli import app as cli_app
from ccproxy.config import LedgerSettings
from ccproxy.observe import store as store_module
from ccproxy.observe.ledger import LedgerWriter, row_of
from ccproxy.observe.store import COLUMNS, OPTIONAL_TEXT, SCHEMA_VERSION, open_store
from ccproxy.plugins import RequestEvent, Usage
from ccproxy.testing import Completion, RunningFakes
from tests.conftest import free_port, stop_process, wait_healthy

from .conftest import MakeProxy

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gpt-5.5", "input": "hi", "stream": True}


def read_rows(url: str) -> list[dict[str, Any]]:
    async def read() -> list[tuple[Any, ...]]:
        store = open_store(url)
        await store.open()
        try:
            return await store.since(0, COLUMNS)
        finally:
            await store.close()

    return [dict(zip(COLUMNS, row, strict=True)) for row in asyncio.run(read())]


def completion(**kw: Any) -> Completion:
    return Completion(text="hello there", input_tokens=10, output_tokens=5, **kw)


def test_ledger_holds_exactly_the_requests_made(
    ledger_url: str, make_proxy: MakeProxy, fakes: RunningFakes
) -> None:
    headers = {"user-agent": "claude-cli/2.1.331 (external, cli)", "x-claude-code-session-id": "sess-42"}
    with make_proxy(**{"ledger.url": ledger_url}) as (url, _):
        fakes.anthropic.reply(completion(cache_read_tokens=3, cache_creation_tokens=2))
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES, headers=headers).status_code == 200
        fakes.anthropic.reply(completion())
        streamed = httpx.post(url + "/api/v1/messages", json={**MESSAGES, "stream": True})
        assert streamed.status_code == 200 and b"message_stop" in streamed.content
        fakes.anthropic.reply(completion())
        assert httpx.post(url + "/api/v1/chat/completions", json=CHAT).status_code == 200  # translated
        fakes.codex.reply(completion(cache_read_tokens=4))
        assert httpx.post(url + "/api/codex/v1/responses", json=RESPONSES).status_code == 200
        fakes.codex.reply(completion())
        chat = httpx.post(url + "/api/codex/my-session/chat/completions", json={**CHAT, "model": "gpt-5.5"})
        assert chat.status_code == 200
        fakes.anthropic.reply_error(429, "slow down")
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 429  # failed
        fakes.anthropic.reply(Completion(text=" ".join(["word"] * 40), delay=0.05))
        with httpx.stream("POST", url + "/api/v1/messages", json={**MESSAGES, "stream": True}) as resp:
            next(resp.iter_bytes())  # the client leaves after the first bytes
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(fakes.anthropic.requests) < 5:
            time.sleep(0.01)
        time.sleep(0.3)  # the abandoned stream's end reaches the hooks
    rows = read_rows(ledger_url)  # the clean shutdown wrote everything
    assert len(rows) == 7
    by_route = [(r["route"], r["status"], r["stream"]) for r in rows]
    assert by_route == [
        ("/api/v1/messages", 200, 0),
        ("/api/v1/messages", 200, 1),
        ("/api/v1/chat/completions", 200, 0),
        ("/api/codex/v1/responses", 200, 1),
        ("/api/codex/{session_id}/chat/completions", 200, 0),
        ("/api/v1/messages", 429, 0),
        ("/api/v1/messages", 499, 1),
    ]
    first = rows[0]
    assert (first["input_tokens"], first["output_tokens"]) == (10, 5)
    assert (first["cache_read_tokens"], first["cache_write_tokens"]) == (3, 2)
    assert first["session_id"] == "sess-42" and first["client"] == "claude-cli"
    assert first["provider"] == "claude_api" and first["client_format"] == "anthropic"
    assert first["model"] == "claude-sonnet-4-5" and first["model_served"]
    assert first["upstream_status"] == 200 and first["retries"] == 0 and first["error_kind"] is None
    assert first["duration_ms"] > 0 and 0 < first["ttfb_ms"] <= first["duration_ms"]
    assert first["cost_usd"] == pytest.approx((10 * 3 + 5 * 15 + 3 * 0.3 + 2 * 3.75) / 1e6)
    codex = rows[3]
    assert codex["provider"] == "codex" and codex["model"] == "gpt-5.5"
    assert (codex["input_tokens"], codex["cache_read_tokens"]) == (10, 4)
    assert codex["cost_usd"] == pytest.approx((10 * 5 + 5 * 30 + 4 * 0.5) / 1e6)
    assert rows[4]["session_id"] == "my-session" and rows[4]["client_format"] == "openai_chat"
    assert rows[5]["error_kind"] == "upstream_429" and rows[5]["upstream_status"] == 429
    assert rows[6]["error_kind"] == "client_disconnected"
    assert rows[2]["client_format"] == "openai_chat" and rows[2]["input_tokens"] == 10

    # across a restart: the same ledger keeps its rows and gets new ones
    with make_proxy(**{"ledger.url": ledger_url}) as (url, _):
        fakes.anthropic.reply(completion())
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
    assert len(read_rows(ledger_url)) == 8


def test_retries_are_recorded(ledger_url: str, make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    cli = {"ledger.url": ledger_url, "plugins.claude_api.retry_attempts": 1}
    with make_proxy(**cli) as (url, _):
        fakes.anthropic.reply_error(429, "busy", headers={"retry-after": "0"})
        fakes.anthropic.reply(completion())
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
    (row,) = read_rows(ledger_url)
    assert row["retries"] == 1 and row["status"] == 200


def _event(i: int) -> RequestEvent:
    event = RequestEvent(f"r{i}", "claude_api", "/api/v1/messages", "anthropic", "anthropic", "m", False, 0.0)
    event.status, event.duration, event.usage, event.route = 200, 0.01, Usage(1, 2), "/api/v1/messages"
    return event


def test_a_burst_of_1000_requests_is_a_few_transactions(ledger_url: str) -> None:
    async def burst() -> tuple[int, int]:
        store = open_store(ledger_url)
        await store.open()
        writer = LedgerWriter(store, LedgerSettings(url=ledger_url, flush_seconds=0.05))  # type: ignore[call-arg]
        writer.start()
        now = time.time()
        for i in range(1000):
            writer.add(row_of(_event(i), now))
        await asyncio.sleep(0.3)
        await writer.stop()
        rows = await store.since(0, ("request_id",))
        await store.close()
        return len(rows), writer.transactions

    rows, transactions = asyncio.run(burst())
    assert rows == 1000
    assert 2 <= transactions <= 4  # batch_size 500


def _serve(ledger_url: str, port: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ccproxy", "serve", "--mock", "--port", str(port)],
        env={**os.environ, "LEDGER__URL": ledger_url, "LOGGING__LEVEL": "warning", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _post_many(url: str, count: int) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            assert client.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200


def test_two_processes_write_at_once(ledger_url: str) -> None:
    ports = [free_port(), free_port()]
    procs = [_serve(ledger_url, port, LEDGER__BATCH_SIZE="7", LEDGER__FLUSH_SECONDS="0.05") for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc in zip(urls, procs, strict=True):
            wait_healthy(url, proc)
        threads = [threading.Thread(target=_post_many, args=(url, 40)) for url in urls for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for proc in procs:
            stop_process(proc, timeout=20)
    assert all(proc.returncode in (0, -signal.SIGTERM) for proc in procs)
    rows = read_rows(ledger_url)
    assert len(rows) == 160
    assert len({r["request_id"] for r in rows}) == 160


def test_kill_9_loses_at_most_the_last_batch_window(ledger_url: str) -> None:
    port = free_port()
    proc = _serve(ledger_url, port, LEDGER__FLUSH_SECONDS="0.2")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        _post_many(url, 30)
        time.sleep(1.0)  # several flush windows: these 30 are written
        _post_many(url, 10)
    finally:
        stop_process(proc, signal.SIGKILL)
    rows = read_rows(ledger_url)
    assert 30 <= len(rows) <= 40
    if ledger_url.startswith("sqlite"):
        conn = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()


def test_migrations_are_versioned_and_keep_history(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def open_write_close(rows: list[tuple[Any, ...]]) -> int:
        store = open_store(ledger_url)
        await store.open()
        if rows:
            await store.write(rows)
        version = await store.version()
        await store.close()
        return version

    assert asyncio.run(open_write_close([row_of(_event(1), time.time())])) == SCHEMA_VERSION
    assert asyncio.run(open_write_close([])) == SCHEMA_VERSION  # reopening applies nothing twice
    # a later release adds a column the documented way (store.MIGRATIONS): old rows read it as NULL
    added: store_module.Migration = {"sqlite": [], "postgresql": ["ALTER TABLE usage ADD COLUMN note TEXT"]}
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, (SCHEMA_VERSION + 1, added)])
    monkeypatch.setattr(store_module, "COLUMNS", (*COLUMNS, "note"))
    assert asyncio.run(open_write_close([(*row_of(_event(2), time.time()), "hello")])) == SCHEMA_VERSION + 1

    async def read_notes() -> list[tuple[Any, ...]]:
        store = open_store(ledger_url)
        await store.open()
        try:
            return await store.since(0, ("request_id", "note"))
        finally:
            await store.close()

    assert asyncio.run(read_notes()) == [("r1", None), ("r2", "hello")]
    if ledger_url.startswith("sqlite"):  # the view shows the new column too
        conn = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
        assert conn.execute("SELECT request_id, note FROM usage ORDER BY ts").fetchall() == [
            ("r1", None),
            ("r2", "hello"),
        ]
        conn.close()


def test_sqlite_history_moves_to_batches_and_sql_still_reads_one_row_per_request(tmp_path: Path) -> None:
    """A version-2 database (one table row per request) is migrated: its rows keep every value, ``usage``
    is a view that ad-hoc SQL reads as before, and an INSERT into it (an older ccproxy still running)
    lands as a batch of one."""
    path = tmp_path / "usage.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(store_module._VERSION_TABLE)
    for version, migration in store_module.MIGRATIONS[:2]:
        for statement in store_module._statements(migration, "sqlite"):
            conn.execute(statement)
        conn.execute("INSERT INTO ccproxy_schema_version (version) VALUES (?)", (version,))
    now = time.time()
    v2_insert = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    old = dict(zip(COLUMNS, row_of(_event(1), float(int(now) - 7200)), strict=True))
    old.update(model=None, error_kind=None, session_id="s-1", client="claude-cli", cost_usd=None)
    conn.execute(v2_insert, tuple(old.values()))
    conn.execute(v2_insert, row_of(_event(2), now - 60))
    conn.close()

    url = f"sqlite:///{path}"
    assert read_rows(url)[0] == {k: None if k in OPTIONAL_TEXT and not v else v for k, v in old.items()}
    assert [r["request_id"] for r in read_rows(url)] == ["r1", "r2"]
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("SELECT MAX(version) FROM ccproxy_schema_version").fetchone() == (SCHEMA_VERSION,)
    by_sql = conn.execute(
        "SELECT request_id, model, session_id, input_tokens FROM usage ORDER BY ts"
    ).fetchall()
    assert by_sql == [("r1", None, "s-1", 1), ("r2", "m", None, 1)]
    conn.execute(v2_insert, row_of(_event(3), now))  # what a version-2 ccproxy sends
    conn.close()
    assert [r["request_id"] for r in read_rows(url)] == ["r1", "r2", "r3"]


def test_retention_and_usage_prune(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    old, new = row_of(_event(1), now - 40 * 86400), row_of(_event(2), now)

    async def seed() -> int:
        store = open_store(ledger_url)
        await store.open()
        await store.write([old, old, new])
        settings = LedgerSettings(url=ledger_url, retention_days=30)  # type: ignore[call-arg]
        removed = await LedgerWriter(store, settings).prune_expired()
        await store.write([old])
        await store.close()
        return removed

    assert asyncio.run(seed()) == 2
    monkeypatch.setenv("LEDGER__URL", ledger_url)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["usage", "prune", "--older-than", "30"])
    assert result.exit_code == 0, result.output
    assert "removed 1 ledger rows" in result.output
    assert [r["request_id"] for r in read_rows(ledger_url)] == ["r2"]
    refused = runner.invoke(cli_app, ["usage", "prune"])
    assert refused.exit_code == 2 and "--older-than" in refused.output


def test_sqlite_ledger_is_private_by_default(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    with make_proxy() as (url, _):
        fakes.anthropic.reply(completion())
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
    path = Path(os.environ["XDG_DATA_HOME"]) / "ccproxy" / "usage.sqlite3"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(read_rows(f"sqlite:///{path}")) == 1


def test_ledger_switched_off_writes_nothing(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    with make_proxy(**{"ledger.enabled": False}) as (url, app):
        fakes.anthropic.reply(completion())
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
        assert httpx.get(url + "/usage").status_code == 404
        entry = app.plugins.get("ledger")
        assert entry is not None and not entry.enabled
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "ccproxy" / "usage.sqlite3").exists()


def test_a_bad_ledger_url_is_a_one_line_config_error() -> None:
    from ccproxy.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"ledger\.url.*LEDGER__URL.*sqlite:///"):
        load_config(env={"LEDGER__URL": "mysql://somewhere/db"})


def test_an_unreachable_database_does_not_stop_the_proxy(make_proxy: MakeProxy, fakes: RunningFakes) -> None:
    url = f"postgresql://ccproxy:hunter2-password@127.0.0.1:{free_port()}/ledger"
    with make_proxy(**{"ledger.url": url}) as (base, _):
        fakes.anthropic.reply(completion())
        assert httpx.post(base + "/api/v1/messages", json=MESSAGES).status_code == 200
        health = httpx.get(base + "/health").json()
        check = health["checks"]["ledger:store"][0]
        assert health["status"] == "warn" and check["status"] == "warn" and check["pending"] == 1
        unavailable = httpx.get(base + "/usage")
        assert unavailable.status_code == 503 and "unavailable" in unavailable.json()["error"]["message"]
        assert "hunter2" not in unavailable.text


def test_sqlite_prune_rewrites_a_batch_spanning_the_cutoff_and_survives_a_wrong_span(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
    now = time.time()

    async def run() -> tuple[int, list[tuple[Any, ...]]]:
        store = open_store(url)
        await store.open()
        await store.write([row_of(_event(1), now - 100), row_of(_event(2), now)])  # spans the cutoff
        conn = sqlite3.connect(tmp_path / "usage.sqlite3", isolation_level=None)
        old = orjson.dumps([row_of(_event(3), now - 200)]).decode()
        conn.execute("INSERT INTO usage_batches VALUES (?, ?, 1, ?)", (now - 200, now, old))  # max_ts wrong
        conn.close()
        removed = await store.prune(now - 50)
        rows = await store.since(0, ("request_id",))
        await store.close()
        return removed, rows

    assert asyncio.run(run()) == (2, [("r2",)])


def test_fold_hands_over_the_window_in_pieces(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ccproxy usage`` and ``/usage`` aggregate piece by piece (``Store.fold``): the same rows as
    ``since``, never the whole window in memory at once."""
    monkeypatch.setattr(store_module, "_PIECE", 3)  # PostgreSQL's cursor hands over 3 rows at a time
    now = time.time()
    pieces: list[list[tuple[Any, ...]]] = []

    async def run() -> list[tuple[Any, ...]]:
        store = open_store(ledger_url)
        await store.open()
        try:
            for first in (0, 4):  # two written batches (SQLite: two stored rows)
                await store.write([row_of(_event(i), now - 10 + i) for i in range(first, first + 4)])
            await store.fold(now - 8.5, ("request_id", "input_tokens"), pieces.append)
            return await store.since(now - 8.5, ("request_id", "input_tokens"))
        finally:
            await store.close()

    ordered = asyncio.run(run())
    assert [r[0] for r in ordered] == [f"r{i}" for i in range(2, 8)]
    assert sorted(r for piece in pieces for r in piece) == sorted(ordered)
    assert len(pieces) >= 2 and max(len(piece) for piece in pieces) <= 4
