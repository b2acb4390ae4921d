"""The hot-path upstream client against real loopback servers: framing, keep-alive, failures, TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccproxy.upstream import UpstreamClient, UpstreamError

from .upstream_servers import Server, _read_request, keep_alive_handler


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(connect_timeout=2, read_timeout=2)
    yield c
    await c.close()


async def test_keep_alive_reuses_one_connection(client: UpstreamClient) -> None:
    server = Server()
    await server.start(keep_alive_handler(server))
    for _ in range(5):
        resp = await client.send("POST", server.url + "/v1/messages?beta=true", {"x-test": "1"}, b"hello")
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.read() == b'{"echo": 5}'
        resp.release()
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/messages?beta=true HTTP/1.1\r\n")
    assert "host: 127.0.0.1:" in head and "x-test: 1" in head and "content-length: 5" in head


async def test_header_injection_is_dropped(client: UpstreamClient) -> None:
    server = Server()
    await server.start(keep_alive_handler(server))
    resp = await client.send("POST", server.url + "/", {"x-evil": "a\r\ninjected: yes", "x-ok": "fine"}, b"")
    await resp.read()
    resp.release()
    assert b"injected" not in server.heads[0] and b"x-ok: fine" in server.heads[0]


async def test_stale_keep_alive_connection_is_retried_once(client: UpstreamClient) -> None:
    server = Server()
    await server.start(keep_alive_handler(server, answers=1))  # closes after each answer
    for _ in range(3):
        resp = await client.send("POST", server.url + "/", {}, b"x")
        assert await resp.read() == b'{"echo": 1}'
        resp.release()
        await asyncio.sleep(0.05)  # let the close arrive for some, not necessarily all
    assert server.connections == 3


async def test_chunked_stream_arrives_in_pieces_and_ends(client: UpstreamClient) -> None:
    gate = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    server = Server()
    await server.start(handle)
    resp = await client.send("POST", server.url + "/", {}, b"{}")
    assert resp.content_type == "text/event-stream"
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == b"data: 1"  # delivered before the rest exists
    gate.set()
    rest = [c async for c in chunks]
    assert b"".join(rest) == b"data: 2"
    resp.release()


async def test_body_until_close(client: UpstreamClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    server = Server()
    await server.start(handle)
    resp = await client.send("GET", server.url + "/", {})
    assert await resp.read() == b"all of it"
    resp.release()


async def test_upstream_dropping_mid_body_raises(client: UpstreamClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    server = Server()
    await server.start(handle)
    resp = await client.send("POST", server.url + "/", {}, b"")
    with pytest.raises(UpstreamError, match="closed the connection"):
        await resp.read()


async def test_read_timeout_and_unreachable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    server = Server()
    await server.start(silent)
    quick = UpstreamClient(connect_timeout=1, read_timeout=0.2)
    with pytest.raises(TimeoutError):
        await quick.send("POST", server.url + "/", {}, b"")
    with pytest.raises(UpstreamError, match="cannot connect"):
        await quick.send("POST", "http://127.0.0.1:9/", {}, b"")
    with pytest.raises(UpstreamError, match="unsupported upstream URL"):
        await quick.send("POST", "ftp://example.invalid/", {}, b"")
    await quick.close()


async def test_read_timeout_is_per_wait_not_per_stream() -> None:
    """A stream that keeps sending may outlast the read timeout; a silence longer than it may not."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(8):  # 8 x 0.1 s = 0.8 s in all, against a 0.3 s timeout
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        if body == b"stall":
            await asyncio.sleep(5)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server = Server()
    await server.start(trickle)
    quick = UpstreamClient(connect_timeout=1, read_timeout=0.3)
    resp = await quick.send("POST", server.url + "/", {}, b"go")
    assert await resp.read() == b"ok" * 8
    resp.release()
    resp = await quick.send("POST", server.url + "/", {}, b"stall")
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await resp.read()
    assert asyncio.get_running_loop().time() - started < 2
    resp.close()
    await quick.close()


async def test_idle_pool_is_capped_and_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    from ccproxy import upstream

    monkeypatch.setattr(upstream, "_MAX_IDLE", 2)
    monkeypatch.setattr(upstream, "_IDLE_SECONDS", 0.2)
    server = Server()
    await server.start(keep_alive_handler(server))
    c = UpstreamClient(connect_timeout=1, read_timeout=2)
    responses = [await c.send("POST", server.url + "/", {}, b"x") for _ in range(4)]  # 4 connections
    for resp in responses:
        await resp.read()
        resp.release()
    pool = c._route(server.url + "/")[0]
    assert len(pool.idle) == 2  # the two oldest were closed, not kept
    await asyncio.sleep(0.5)
    assert len(pool.idle) == 0  # aged out, closed without waiting for the next request
    await c.close()


async def test_invalid_http_is_an_upstream_error(client: UpstreamClient) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    server = Server()
    await server.start(garbage)
    with pytest.raises(UpstreamError):
        await client.send("POST", server.url + "/", {}, b"")


async def test_slow_reader_pauses_the_socket(client: UpstreamClient) -> None:
    big = b"x" * (4 << 20)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big))
        writer.write(big)
        await writer.drain()

    server = Server()
    await server.start(handle)
    resp = await client.send("GET", server.url + "/", {})
    await asyncio.sleep(0.3)  # nobody reads: the client must stop buffering at its high-water mark
    assert resp._conn.buffered < 3 << 20
    assert len(await resp.read()) == len(big)
    resp.release()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
async def test_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = Server()
    await server.start(keep_alive_handler(server), tls=server_ctx)
    trusting = UpstreamClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
    for _ in range(2):
        resp = await trusting.send("POST", server.url + "/", {}, b"tls")
        assert await resp.read() == b'{"echo": 3}'
        resp.release()
    assert server.connections == 1
    await trusting.close()
    untrusting = UpstreamClient()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await untrusting.send("POST", server.url + "/", {}, b"")
    await untrusting.close()


@pytest.mark.parametrize("interim", [b"100 Continue", b"103 Early Hints\r\nlink: </a.css>; rel=preload"])
async def test_interim_answers_are_skipped(client: UpstreamClient, interim: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 " + interim + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the real answer comes separately, its body later still
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nall")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b" of it")
        await writer.drain()

    server = Server()
    await server.start(handle)
    resp = await client.send("POST", server.url + "/", {}, b"")
    assert resp.status == 200 and "link" not in resp.headers
    assert await resp.read() == b"all of it"
    resp.release()
