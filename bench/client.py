"""The asyncio load client: raw HTTP/1.1 on keep-alive connections, cheap enough never to be the bottleneck.

It times each answer (first complete SSE event = TTFT, last byte = total) and keeps the decoded body, so
every streamed answer is checked afterwards (outside the timed part) for completeness, order and unmerged
events. It is also the fallback non-streaming load generator when ``wrk`` is not installed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import cast


@dataclass(slots=True)
class Answer:
    status: int = 0
    sent: float = 0.0
    first: float = 0.0  # first complete SSE event (or first body byte for a non-SSE answer)
    done: float = 0.0
    body: bytes = b""
    error: str = ""

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def total(self) -> float:
        return self.done - self.sent


class _Conn(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.body = bytearray()
        self.answer: Answer | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.state = 0  # 0 head, 1 length body, 2 chunk size, 3 chunk data, 4 trailer, 5 until close
        self.remaining = 0
        self.keep_alive = True
        self.sse = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and self.waiter is not None and not self.waiter.done():
            if self.state == 5:
                self._finish()
            else:
                self.answer.error = f"connection lost ({exc or 'closed'})"
                self.answer.done = time.perf_counter()
                self.answer.body = bytes(self.body)
                self.waiter.set_result(self.answer)

    def request(self, raw: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.answer = Answer(sent=time.perf_counter())
        self.body = bytearray()
        self.state = 0
        self.transport.write(raw)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:
            return
        buf = self.buf
        buf += data
        while buf:
            state = self.state
            if state == 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                answer.status = int(head[9:12])
                self.sse = b"text/event-stream" in head
                self.keep_alive = b"\r\nconnection: close" not in head
                if b"\r\ntransfer-encoding: chunked" in head:
                    self.state = 2
                else:
                    at = head.find(b"\r\ncontent-length:")
                    if at >= 0:
                        stop = head.find(b"\r\n", at + 2)
                        self.remaining = int(head[at + 17 : stop if stop >= 0 else len(head)])
                        self.state = 1
                        if self.remaining == 0:
                            self._finish()
                            return
                    else:
                        self.state = 5
                        self.keep_alive = False
            elif state == 1:
                take = min(self.remaining, len(buf))
                self._body(bytes(buf[:take]))
                del buf[:take]
                self.remaining -= take
                if self.remaining == 0:
                    self._finish()
                    return
            elif state == 2:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self.state = 4
                else:
                    self.remaining = size
                    self.state = 3
            elif state == 3:
                if len(buf) < self.remaining + 2:
                    if self.remaining > 0:
                        take = min(self.remaining, len(buf))
                        self._body(bytes(buf[:take]))
                        del buf[:take]
                        self.remaining -= take
                    return
                self._body(bytes(buf[: self.remaining]))
                del buf[: self.remaining + 2]
                self.remaining = 0
                self.state = 2
            elif state == 4:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()
                    return
            else:
                self._body(bytes(buf))
                buf.clear()

    def _body(self, data: bytes) -> None:
        answer = self.answer
        assert answer is not None
        if not answer.first and (
            not self.sse or b"\n\n" in data or (self.body.endswith(b"\n") and data.startswith(b"\n"))
        ):
            answer.first = time.perf_counter()
        self.body += data

    def _finish(self) -> None:
        answer = self.answer
        assert answer is not None and self.waiter is not None
        answer.done = time.perf_counter()
        if not answer.first:
            answer.first = answer.done
        answer.body = bytes(self.body)
        self.answer = None
        self.state = 0
        if not self.waiter.done():
            self.waiter.set_result(answer)


async def connect(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_Conn, host, port)
    return conn


async def fetch(conn: _Conn | None, host: str, port: int, raw: bytes, timeout: float) -> tuple[_Conn, Answer]:
    if conn is None or conn.closed or not conn.keep_alive:
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        conn = await connect(host, port)
    try:
        answer = await asyncio.wait_for(conn.request(raw), timeout)
    except TimeoutError:
        if conn.transport is not None:
            conn.transport.close()
        return conn, Answer(error=f"timeout after {timeout:.0f} s")
    return conn, answer


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)
    wall: float = 0.0
    connect_errors: int = 0


async def closed_loop(
    host: str,
    port: int,
    raw: bytes,
    *,
    conns: int,
    duration: float,
    per_conn: int = 0,
    timeout: float = 60.0,
    keep_bodies: bool = True,
) -> LoadResult:
    """``conns`` workers, each sending ``raw`` back to back on its own connection until ``duration`` has
    passed (or ``per_conn`` answers each, when set). Returns every answer."""
    result = LoadResult()
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        conn: _Conn | None = None
        count = 0
        try:
            conn = await connect(host, port)
        except OSError:
            result.connect_errors += 1
            return
        while True:
            conn, answer = await fetch(conn, host, port, raw, timeout)
            if not keep_bodies and not answer.error:
                answer.body = answer.body[:0]
            result.answers.append(answer)
            count += 1
            if per_conn and count >= per_conn:
                break
            if not per_conn and time.perf_counter() >= deadline:
                break
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    result.wall = time.perf_counter() - start
    return result


async def get_status(host: str, port: int, path: str, timeout: float = 1.0) -> int:
    """Status of a GET, or 0 when the server does not answer (yet)."""
    try:
        conn = await asyncio.wait_for(connect(host, port), timeout)
    except (OSError, TimeoutError):
        return 0
    try:
        raw = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        answer = await asyncio.wait_for(conn.request(raw), timeout)
        return answer.status if not answer.error else 0
    except TimeoutError:
        return 0
    finally:
        if conn.transport is not None:
            conn.transport.close()
