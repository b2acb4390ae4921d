"""Errors raised anywhere in a request, answered in the caller's own wire format."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo, render_error


class ProxyError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.info = ErrorInfo(status, error_type or "", message, param, code)
        self.headers = dict(headers or {})


def error_response(
    fmt: Format, info: ErrorInfo, request_id: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    status, body = render_error(fmt, info, request_id)
    return Response(orjson.dumps(body), status, headers=dict(headers or {}), media_type="application/json")


def format_for(path: str, headers: Mapping[str, str]) -> Format:
    """The wire format a caller speaks, judged from the path and, for shared paths, its headers."""
    if path.endswith(("/messages", "/messages/count_tokens")):
        return Format.ANTHROPIC
    if path.endswith(("/chat/completions",)):
        return Format.CHAT
    if path.endswith("/responses"):
        return Format.RESPONSES
    if "anthropic-version" in headers or "x-api-key" in headers:
        return Format.ANTHROPIC
    return Format.CHAT
