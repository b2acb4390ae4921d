"""The one shared upstream HTTP client.

aiohttp was chosen by measurement (docs/decisions.md): under 32 concurrent connections it sustains several
times httpx's throughput with a flat p99. One session per process, connection pooling, no automatic
decompression (we never advertise encodings, so bodies arrive as sent and pass through untouched).
"""

from __future__ import annotations

from typing import Any

import aiohttp


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        max_connections: int = 0,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                raise_for_status=False,
            )
        return self._session

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """Send and return once the status line and headers arrived; the caller releases the response."""
        return await self.session.request(
            method, url, headers=headers, data=body, allow_redirects=False, **kwargs
        )

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
