"""A very fast fake upstream on raw asyncio (uvloop): every answer is rendered once, at start-up.

Run as ``python -m bench.upstream --port 0``; it prints ``READY <port>`` once listening.

Answers, chosen by path and by markers in the request body (which survive every request translation):

- ``POST /v1/messages``: Anthropic JSON; with ``"stream":true`` a 200-event Anthropic SSE stream, or with
  ``bench-slow`` in the body a slow stream (``--slow-events`` events ``--slow-interval`` apart, on an
  absolute schedule so the upstream itself never drifts).
- ``POST .../responses`` (Codex backend, always SSE): a short Responses stream (28 events); with
  ``bench-long`` 200 events; with ``bench-slow`` the slow variant.
- ``GET /health``: ``ok``.

Streams go out chunked, in bursts of ``BURST`` events per write (the first event alone), so the proxy sees
a stream arrive in several reads as it would from a real upstream, at a cost of a few syscalls per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any, cast

from bench import payloads as p

BURST = 20


def run_fast(main: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(main)
    return uvloop.run(main)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


ANTHROPIC_HEADERS = [("request-id", "req_bench01"), ("anthropic-ratelimit-unified-status", "allowed")]
SSE_HEADERS = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("transfer-encoding", "chunked"),
]
END = b"0\r\n\r\n"


class Answers:
    def __init__(self, slow_events: int, slow_interval: float) -> None:
        body = p.anthropic_json()
        self.anthropic_json = (
            _head(
                "200 OK",
                [
                    *ANTHROPIC_HEADERS,
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                ],
            )
            + body
        )
        self.anthropic_stream = self._stream(ANTHROPIC_HEADERS, p.render(p.anthropic_events(p.STREAM_EVENTS)))
        self.codex_short = self._stream([], p.render(p.responses_events(p.CODEX_SHORT_DELTAS + 8)))
        self.codex_long = self._stream([], p.render(p.responses_events(p.STREAM_EVENTS)))
        self.slow_interval = slow_interval
        self.anthropic_slow = self._frames(ANTHROPIC_HEADERS, p.render(p.anthropic_events(slow_events)))
        self.codex_slow = self._frames([], p.render(p.responses_events(slow_events)))
        self.health = _head("200 OK", [("content-type", "text/plain"), ("content-length", "2")]) + b"ok"
        self.not_found = _head("404 Not Found", [("content-length", "0")])

    @staticmethod
    def _frames(headers: list[tuple[str, str]], frames: list[bytes]) -> list[bytes]:
        head = _head("200 OK", [*headers, *SSE_HEADERS])
        return [head + _chunk(frames[0])] + [_chunk(f) for f in frames[1:]]

    @staticmethod
    def _stream(headers: list[tuple[str, str]], frames: list[bytes]) -> list[bytes]:
        head = _head("200 OK", [*headers, *SSE_HEADERS])
        writes = [head + _chunk(frames[0])]
        rest = frames[1:]
        for i in range(0, len(rest), BURST):
            writes.append(_chunk(b"".join(rest[i : i + BURST])))
        writes[-1] += END
        return writes


class _Conn(asyncio.Protocol):
    __slots__ = ("answers", "buf", "loop", "transport")

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)].strip())
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        a = self.answers
        line = head[: head.find(b"\r\n")]
        path = line.split(b" ", 2)[1] if line.count(b" ") >= 1 else b"/"
        if path.startswith(b"/v1/messages"):
            if b'"stream":true' in body or b'"stream": true' in body:
                if b"bench-slow" in body:
                    self.slow(a.anthropic_slow)
                else:
                    self.burst(a.anthropic_stream)
            else:
                transport.write(a.anthropic_json)
        elif path.endswith(b"/responses"):
            if b"bench-slow" in body:
                self.slow(a.codex_slow)
            elif b"bench-long" in body:
                self.burst(a.codex_long)
            else:
                self.burst(a.codex_short)
        elif path.startswith(b"/health"):
            transport.write(a.health)
        else:
            transport.write(a.not_found)

    def burst(self, writes: list[bytes]) -> None:
        assert self.transport is not None
        for w in writes:
            self.transport.write(w)

    def slow(self, frames: list[bytes]) -> None:
        """Frame ``i`` at ``start + i * interval`` (absolute, so the upstream never drifts). Each send arms
        the next timer: 100,000 timers armed at once (1,000 streams x 100 events) fired adjacent frames
        swapped now and then."""
        assert self.transport is not None
        self.transport.write(frames[0])
        start = self.loop.time()
        self.loop.call_at(start + self.answers.slow_interval, self._send_slow, frames, 1, start)

    def _send_slow(self, frames: list[bytes], i: int, start: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        last = i == len(frames) - 1
        transport.write(frames[i] + END if last else frames[i])
        if not last:
            self.loop.call_at(
                start + (i + 1) * self.answers.slow_interval, self._send_slow, frames, i + 1, start
            )


async def serve(host: str, port: int, answers: Answers, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(answers), host, port, backlog=8192, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slow-events", type=int, default=100)
    parser.add_argument("--slow-interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    answers = Answers(args.slow_events, args.slow_interval)

    def ready(port: int) -> None:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()

    try:
        run_fast(serve(args.host, args.port, answers, ready))
    except KeyboardInterrupt:
        pass
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
