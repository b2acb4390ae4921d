"""The ``raw_http_logger`` plugin: both legs of every proxied request as raw HTTP text files.

Per request, ``<time>-<request id>-client.http`` (client ↔ ccproxy) and ``-upstream.http`` (ccproxy ↔
upstream): the request (request line, headers, body), a blank line, then the response (status line,
headers, body or the stream as it passed). Bodies are kept byte for byte up to ``max_body_bytes``;
secrets are redacted (credential headers by name, tokens and keys by shape, secret JSON fields by
name). The directory is 0700, every file 0600, and the oldest files are removed once the directory
holds more than ``max_total_bytes``. Files are written by one background thread, never on the event loop.

It is fed by the core's exchange capture (``ccproxy.recorder``), the same capture that
``logging.verbose_api`` logs; ``CCPROXY_REQUEST_LOG_DIR`` / ``logging.request_log_dir`` turn this plugin on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from pydantic import Field, model_validator

from ccproxy.config import user_data_dir
from ccproxy.logs import SECRET_KEYS, redact_text
from ccproxy.plugins import Plugin, PluginContext, PluginSettings, hookimpl
from ccproxy.recorder import MAX_BODY_BYTES, Exchange, HttpMessage

log = structlog.get_logger("ccproxy.raw_http")
# "refresh_token": "...", "api_key":"..." in JSON bodies, whatever the value looks like.
_SECRET_FIELDS = re.compile(
    rb'("(?:[a-z_]*token|api[-_]?key|secret|client_secret|password|authorization|cookie)"\s*:\s*")'
    rb'(?:[^"\\]|\\.)*(")',
    re.IGNORECASE,
)


class RawHttpLoggerSettings(PluginSettings):
    log_dir: Path | None = Field(None, description="Directory for the files (default: DATA_DIR/raw-http)")
    max_body_bytes: int = Field(
        256 * 1024, ge=0, le=MAX_BODY_BYTES, description="Bytes kept per body; the rest is cut"
    )
    max_total_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Size of the directory beyond which the oldest files go"
    )

    @model_validator(mode="after")
    def _dir_enables(self) -> RawHttpLoggerSettings:
        # CCPROXY_REQUEST_LOG_DIR (or logging.request_log_dir) alone switches the logger on.
        if self.enabled is None and self.log_dir is not None:
            self.enabled = True
        return self


def redact_head(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, "***" if SECRET_KEYS.search(k) else redact_text(v)) for k, v in headers]


def redact_body(body: bytes) -> bytes:
    body = _SECRET_FIELDS.sub(rb"\1***\2", body)
    text = body.decode("utf-8", "surrogateescape")
    cleaned = redact_text(text)
    return body if cleaned == text else cleaned.encode("utf-8", "surrogateescape")


def render(message: HttpMessage, max_body: int) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in redact_head(message.headers))
    body = message.body
    out = [f"{message.start_line}\r\n{head}\r\n".encode("latin-1", "replace"), redact_body(body[:max_body])]
    if message.size > min(len(body), max_body):
        out.append(
            f"\r\n[ccproxy: body cut, {min(len(body), max_body)} of {message.size} bytes kept]".encode()
        )
    return b"".join(out)


def render_leg(request: HttpMessage | None, response: HttpMessage | None, max_body: int) -> bytes:
    parts = [render(m, max_body) for m in (request, response) if m is not None]
    return b"\r\n\r\n".join(parts)


class _Files:
    """The log directory: private files, a running total, oldest-first removal past the cap."""

    def __init__(self, directory: Path, max_total: int) -> None:
        self.directory = directory
        self.max_total = max_total
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if created:
            os.chmod(directory, 0o700)
        elif directory.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("raw HTTP log directory is readable by others", path=str(directory))
        entries = sorted(
            (e.stat().st_mtime, e.name, e.stat().st_size)
            for e in os.scandir(directory)
            if e.name.endswith(".http")
        )
        self.files: deque[tuple[str, int]] = deque((name, size) for _, name, size in entries)
        self.total = sum(size for _, size in self.files)

    def write(self, name: str, data: bytes) -> None:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        self.files.append((name, len(data)))
        self.total += len(data)
        while self.total > self.max_total and len(self.files) > 1:
            old, size = self.files.popleft()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / old)
            self.total -= size


class RawHttpLoggerPlugin(Plugin):
    name = "raw_http_logger"
    settings_model = RawHttpLoggerSettings
    default_enabled = False

    def __init__(self) -> None:
        self.files: _Files | None = None
        self.max_body = 0
        self.pool: ThreadPoolExecutor | None = None

    async def startup(self, ctx: PluginContext) -> None:
        settings: RawHttpLoggerSettings = ctx.settings
        directory = (settings.log_dir or user_data_dir() / "raw-http").expanduser()
        self.files = _Files(directory, settings.max_total_bytes)
        self.max_body = settings.max_body_bytes
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccproxy-raw-http")
        log.warning("raw HTTP logging is on: prompts and answers are written to disk", path=str(directory))

    async def shutdown(self, ctx: PluginContext) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await asyncio.to_thread(pool.shutdown, wait=True)

    @hookimpl
    def ccproxy_http_exchange(self, exchange: Exchange) -> None:
        if self.pool is not None:
            self.pool.submit(self._write, exchange)

    def _write(self, ex: Exchange) -> None:
        files = self.files
        assert files is not None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ex.started)) + f".{int(ex.started % 1 * 1e6):06d}Z"
        base = f"{stamp}-{_safe(ex.request_id) or 'request'}"
        try:
            files.write(
                f"{base}-client.http", render_leg(ex.client_request, ex.client_response, self.max_body)
            )
            if ex.upstream_request is not None:
                leg = render_leg(ex.upstream_request, ex.upstream_response, self.max_body)
                files.write(f"{base}-upstream.http", leg)
        except OSError as exc:
            log.error("raw HTTP log write failed", error=str(exc))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
