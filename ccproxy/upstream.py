"""The upstream HTTP client of the hot path: HTTP/1.1 keep-alive over asyncio protocols, parsed by httptools.

Chosen by measurement (docs/decisions.md): aiohttp cost ~35% of the proxy's CPU per request (session
bookkeeping, header merging, tracing hooks, cookie jar) for features the proxy never uses; httpx was an
order of magnitude slower under concurrency. This client does only what the data path needs: one request
at a time per pooled connection, a streamed body with back-pressure, connect/read timeouts, TLS, and a
safe retry when a reused keep-alive connection turns out to have been closed by the server; and what a
user's network needs (``ccproxy.network``): HTTP proxies from the environment (CONNECT tunnels for https,
absolute-form requests for http, proxy auth), configurable CAs, compressed and close-delimited bodies.

OAuth token calls (cold path, hours apart) use aiohttp, imported only when one happens.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable

import httptools

from ccproxy.network import ACCEPT_ENCODING, Decoder, ProxyConfig, ProxyServer, decoder_for, ssl_context

_HIGH_WATER = 1 << 20  # buffered body bytes at which we stop reading the socket (slow client)
_IDLE_SECONDS = 50.0  # keep-alive connections older than this are not reused (servers close at ~60 s)
# Idle connections kept per origin. A burst of 1,000 streams would otherwise leave 1,000 sockets (and their
# TLS state) open until they age out; steady traffic reuses far fewer, and a new connection is cheap.
_MAX_IDLE = 256


class UpstreamError(OSError):
    """The upstream could not be reached, or broke the connection or the protocol."""


class InvalidAnswer(UpstreamError):
    """The upstream answered with something that is not valid HTTP (or a body we cannot decode)."""


class Headers:
    """Response headers: lower-case names, first value wins for ``get`` (what the proxy needs)."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._map: dict[str, str] = {}
        for key, value in items:
            self._map.setdefault(key, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name.lower(), default)

    def items(self) -> Iterable[tuple[str, str]]:
        return self._items

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map


class UpstreamResponse:
    """Status and headers have arrived; the body is read with ``iter_chunks``/``read``, then the
    response is ``release()``d (connection back to the pool) or ``close()``d (connection dropped)."""

    def __init__(self, conn: _Connection, status: int, headers: Headers) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        ctype = headers.get("content-type") or ""
        self.content_type = ctype.split(";", 1)[0].strip().lower()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            chunk = await conn.next_chunk()
            if not chunk:
                return
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    def release(self) -> None:
        self._conn.finish()

    def close(self) -> None:
        self._conn.abort()


class _Connection(asyncio.Protocol):
    """One upstream connection; also the httptools parser's callback object."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.idle_since = 0.0
        self.received_any = False
        self.read_timeout = 0.0
        self.wait_started = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.header_items: list[tuple[str, str]] = []
        self.head: asyncio.Future[UpstreamResponse] | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.keep_alive = False
        self.decoder: Decoder | None = None
        self.interim = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        parser = self.parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(InvalidAnswer(f"invalid HTTP ({exc})"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self._end_of_body()
        # Break the connection <-> parser/transport/response cycles, so a closed connection is freed by
        # reference counting at once: after a burst of 1,000 streams, the cyclic collector would otherwise
        # walk every live object to find them (tens of ms of stalls).
        self.parser = None
        self.transport = None
        self.head = None

    def _end_of_body(self) -> None:
        if self.complete:
            return
        head = self.head
        if head is not None and head.done() and not head.cancelled() and head.exception() is None:
            framed = any(k in ("content-length", "transfer-encoding") for k, _ in self.header_items)
            if not framed:  # a body delimited by the end of the connection: this is its end
                self._end_decoding()
                if self.error is None:
                    self.complete = True
                self._wake()
                return
        self._fail(UpstreamError("upstream closed the connection before the answer was complete"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_items.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # only called from parser.feed_data
        status = parser.get_status_code()
        if status < 200 and status != 101:  # an interim answer (100, 103 Early Hints); the real one follows
            self.header_items = []
            self.interim = True
            return
        self.keep_alive = parser.should_keep_alive()  # only meaningful before the message completes
        headers = Headers(self.header_items)
        encoding = headers._map.get("content-encoding")
        if encoding is not None:
            try:
                self.decoder = decoder_for(encoding)
            except ValueError as exc:
                self._fail(InvalidAnswer(str(exc)))
                self.abort()
                return
        if self.head is not None and not self.head.done():
            self.head.set_result(UpstreamResponse(self, status, headers))

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            try:
                body = self.decoder.feed(body)
            except ValueError as exc:
                self.decoder = None
                self._fail(InvalidAnswer(f"broken compressed body ({exc})"))
                self.abort()
                return
            if not body:
                return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:  # the end of a 1xx answer, not of ours
            self.interim = False
            return
        if self.decoder is not None:
            self._end_decoding()
        if self.error is None:
            self.complete = True
        self._disarm()
        self._wake()

    def _end_decoding(self) -> None:
        decoder = self.decoder
        if decoder is None:
            return
        self.decoder = None
        try:
            rest = decoder.end()
        except ValueError as exc:
            self.keep_alive = False
            self._fail(InvalidAnswer(f"broken compressed body ({exc})"))
            return
        if rest:
            self.chunks.append(rest)
            self.buffered += len(rest)

    # -- used by the client and the response

    async def request(self, head: bytes, body: bytes | None, read_timeout: float) -> UpstreamResponse:
        if self.closed or self.transport is None:  # reset by the server between connect and now
            raise UpstreamError("upstream closed the connection")
        self._reset()
        self.head = future = self.loop.create_future()
        self.received_any = False
        self.read_timeout = read_timeout
        self.wait_started = self.loop.time()
        # One timer per request, not one per wait: a stream of 1,000 events would otherwise create and
        # cancel 1,000 timers. It re-arms itself until a wait has lasted ``read_timeout``.
        self._deadline = self.loop.call_at(self.wait_started + read_timeout, self._check_deadline)
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        response: UpstreamResponse = await future
        return response

    async def next_chunk(self) -> bytes:
        """The body bytes that have arrived (joined), waiting for more; ``b""`` at the end."""
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self.waiter = waiter = self.loop.create_future()
            self.wait_started = self.loop.time()
            await waiter

    def _check_deadline(self) -> None:
        self._deadline = None
        if self.complete or self.closed:
            return
        now = self.loop.time()
        waiting = (self.head is not None and not self.head.done()) or (
            self.waiter is not None and not self.waiter.done()
        )
        if waiting and now - self.wait_started >= self.read_timeout:
            self._fail(TimeoutError("upstream did not answer in time"))
            self.abort()
            return
        start = self.wait_started if waiting else now
        self._deadline = self.loop.call_at(start + self.read_timeout, self._check_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def finish(self) -> None:
        if self.complete and not self.closed and self.keep_alive:
            self._reset()  # an idle connection holds nothing of its last answer
            self.pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        self._wake()


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``; the TLS connection to the target then takes over."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.answer.done():
            self.answer.set_result(self.buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(UpstreamError("the proxy closed the connection during CONNECT"))


class _Pool:
    """Idle keep-alive connections to one (scheme, host, port, proxy), most recently used first.

    ``fixed`` is the part of every request head after the request line that never changes for this pool
    (host, accept-encoding, proxy authorization); ``prefix`` makes the request target absolute when an
    http target is reached through a proxy.
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, proxy: ProxyServer | None) -> None:
        self.host, self.port, self.tls, self.proxy = host, port, tls, proxy
        self.idle: deque[_Connection] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    async def get(self, connect_timeout: float) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_SECONDS:
                return conn, True
            conn.abort()
        try:
            async with asyncio.timeout(connect_timeout):  # unlike wait_for, no extra task per connect
                conn = await self._connect()
        except (OSError, ssl.SSLError) as exc:
            via = f" through the proxy {self.proxy.url}" if self.proxy else ""
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}{via}: {exc}") from None
        return conn, False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        if proxy is None or self.tls is None:  # direct, or an http target in absolute form via the proxy
            host, port = (self.host, self.port) if proxy is None else (proxy.host, proxy.port)
            transport, conn = await loop.create_connection(
                lambda: _Connection(self),
                host,
                port,
                ssl=self.tls,
                server_hostname=self.host if self.tls else None,
            )
            conn.transport = transport  # uvloop may run connection_made only after create_connection returns
            return conn
        raw, tunnel = await loop.create_connection(_Tunnel, proxy.host, proxy.port)
        try:
            target = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            auth = f"proxy-authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
            raw.write(f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n{auth}\r\n".encode("latin-1"))
            answer = await tunnel.answer
            status_line = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or parts[1] != "200":
                hint = " (check the credentials in the proxy URL)" if parts[1:2] in (["407"], ["401"]) else ""
                raise UpstreamError(f"the proxy refused CONNECT {target}: {status_line[:100]}{hint}")
            conn = _Connection(self)
            tls = await loop.start_tls(raw, conn, self.tls, server_hostname=self.host)
        except BaseException:
            raw.abort()
            raise
        if tls is None:  # only for a closed transport
            raise UpstreamError("the proxy closed the connection during the TLS handshake")
        conn.transport = tls
        return conn

    def put(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        if len(self.idle) > _MAX_IDLE:
            self.idle.popleft().abort()
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(_IDLE_SECONDS, self._close_stale)

    def _close_stale(self) -> None:
        """Close what aged out, so a quiet proxy holds no sockets the server is about to drop anyway."""
        self._sweep = None
        limit = time.monotonic() - _IDLE_SECONDS
        while self.idle and (self.idle[0].idle_since <= limit or self.idle[0].closed):
            self.idle.popleft().abort()
        if self.idle:
            delay = self.idle[0].idle_since + _IDLE_SECONDS - time.monotonic()
            self._sweep = asyncio.get_running_loop().call_later(max(delay, 1.0), self._close_stale)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class UpstreamClient:
    """Pools per (scheme, host, port, proxy). ``proxies`` default to the environment (read once, here);
    ``ca_bundle`` replaces the default trust (``ccproxy.network.ssl_context``)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        ssl_context: ssl.SSLContext | None = None,
        ca_bundle: str | None = None,
        proxies: ProxyConfig | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl = ssl_context
        self.ca_bundle = ca_bundle
        self.proxies = ProxyConfig.from_env() if proxies is None else proxies
        self._pools: dict[str, tuple[_Pool, str, str]] = {}

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> UpstreamResponse:
        """Send and return once the status line and headers arrived; the caller releases the response."""
        pool, fixed, prefix, target = self._route(url)
        lines = [f"{method} {prefix}{target} HTTP/1.1\r\n{fixed}"]
        for key, value in headers.items():
            if key not in _OWN_HEADERS and "\n" not in value and "\r" not in value:
                lines.append(f"{key}: {value}\r\n")
        lines.append(f"content-length: {len(body) if body else 0}\r\n\r\n")
        head = "".join(lines).encode("latin-1", "replace")
        conn, reused = await pool.get(self.connect_timeout)
        try:
            return await conn.request(head, body, self.read_timeout)
        except BaseException as exc:  # timeouts and cancellation included: the connection is spent
            conn.abort()
            if not isinstance(exc, UpstreamError) or not reused or conn.received_any:
                raise
        # A kept-alive connection the server had already closed: one retry on a fresh connection.
        conn, _ = await pool.get(self.connect_timeout)
        try:
            return await conn.request(head, body, self.read_timeout)
        except BaseException:
            conn.abort()
            raise

    def _route(self, url: str) -> tuple[_Pool, str, str, str]:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise UpstreamError(f"unsupported upstream URL: {url[:100]}")
        authority, slash, path = rest.partition("/")
        target = slash + path if slash else "/"
        origin = scheme + "://" + authority
        cached = self._pools.get(origin)
        if cached is None:
            cached = self._pools[origin] = self._new_pool(scheme, authority)
        return cached[0], cached[1], cached[2], target

    def _new_pool(self, scheme: str, authority: str) -> tuple[_Pool, str, str]:
        if authority.rfind(":") > authority.rfind("]"):
            host, _, port = authority.rpartition(":")
        else:
            host, port = authority, ""
        host = host.strip("[]")
        tls = (self._ssl or ssl_context(self.ca_bundle)) if scheme == "https" else None
        number = int(port) if port.isdigit() else (443 if tls else 80)
        proxy = self.proxies.for_target(scheme, host, number)
        fixed = f"host: {authority}\r\naccept-encoding: {ACCEPT_ENCODING}\r\n"
        prefix = ""
        if proxy is not None and tls is None:  # plain http through the proxy: absolute form, proxy auth
            prefix = f"{scheme}://{authority}"
            if proxy.authorization:
                fixed += f"proxy-authorization: {proxy.authorization}\r\n"
        return _Pool(host, number, tls, proxy), fixed, prefix

    async def close(self) -> None:
        for pool, _, _ in self._pools.values():
            pool.close()
        self._pools.clear()


# Set by the client itself; a caller's value is dropped (an injected proxy-authorization included).
_OWN_HEADERS = frozenset({"host", "content-length", "accept-encoding", "proxy-authorization"})
