"""Raw request logging: ``logging.verbose_api`` (bodies in the log) and ``logging.request_log_dir``
(one JSON file per request). Everything is redacted before it is written; when both are off the
recorder hands out a shared no-op record, so the hot path pays nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from ccproxy.logs import redact, redact_headers, redact_text

log = structlog.get_logger("ccproxy.api")
_MAX_STREAM_BYTES = 1 << 20


class _NullRecord:
    __slots__ = ()

    def chunk(self, data: bytes) -> None:
        return None

    def finish(self, status: int, body: bytes | None) -> None:
        return None


NULL_RECORD = _NullRecord()


class _Record:
    __slots__ = ("_recorder", "_started", "_stream", "_stream_size", "data")

    def __init__(self, recorder: Recorder, data: dict[str, Any]) -> None:
        self._recorder = recorder
        self._started = time.perf_counter()
        self._stream: list[bytes] = []
        self._stream_size = 0
        self.data = data

    def chunk(self, data: bytes) -> None:
        if self._stream_size < _MAX_STREAM_BYTES:
            self._stream.append(data)
            self._stream_size += len(data)

    def finish(self, status: int, body: bytes | None) -> None:
        self.data["status"] = status
        self.data["duration_ms"] = round((time.perf_counter() - self._started) * 1000, 2)
        text = body if body is not None else b"".join(self._stream)
        try:
            self.data["response"] = redact(orjson.loads(text)) if body is not None else None
        except orjson.JSONDecodeError:
            self.data["response"] = None
        if self.data["response"] is None and text:
            self.data["response_text"] = redact_text(text.decode("utf-8", "replace"))
        self._recorder.write(self.data)


class Recorder:
    def __init__(self, *, verbose: bool, directory: Path | None) -> None:
        self.verbose = verbose
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def enabled(self) -> bool:
        return self.verbose or self.directory is not None

    def start(
        self, request_id: str, path: str, headers: dict[str, str], body: Any, method: str = "POST"
    ) -> _Record | _NullRecord:
        if not self.enabled:
            return NULL_RECORD
        return _Record(
            self,
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "method": method,
                "path": path,
                "headers": redact_headers(headers),
                "request": redact(body),
            },
        )

    def write(self, data: dict[str, Any]) -> None:
        if self.verbose:
            log.info("api exchange", **data)
        if self.directory is not None:
            path = self.directory / f"{data['request_id'] or 'request'}.json"
            try:
                payload = orjson.dumps(data, option=orjson.OPT_INDENT_2)
            except orjson.JSONEncodeError:  # a body nested deeper than orjson writes (the upstream judged it)
                data = {**data, "request": "<not recordable: nested deeper than 255 levels>"}
                payload = orjson.dumps(data, option=orjson.OPT_INDENT_2)
            try:
                asyncio.get_running_loop().run_in_executor(None, _write_private, path, payload)
            except RuntimeError:
                _write_private(path, payload)


def _write_private(path: Path, payload: bytes) -> None:
    # Prompts are private too: owner-only, written in one go.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
