"""Error envelopes of the three wire formats, parsed into one shape and rendered back out.

Upstream errors arrive as an Anthropic envelope, an OpenAI envelope, or the Codex backend's FastAPI
``{"detail": ...}``; clients get their own envelope with a status their SDK maps to the right exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from ccproxy.formats.base import Format

log = structlog.get_logger("ccproxy.formats")

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_STATUS_BY_ANTHROPIC_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_STATUS_BY_OPENAI_CODE = {
    "invalid_api_key": 401,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "model_not_found": 404,
    "server_error": 500,
}


@dataclass(frozen=True)
class ErrorInfo:
    status: int
    type: str
    message: str
    param: str | None = None
    code: str | None = None


def parse_error(status: int, body: bytes | dict[str, Any] | None) -> ErrorInfo:
    """Read any upstream error body (or an in-stream error object) into an ``ErrorInfo``."""
    data: Any = body
    if isinstance(body, bytes | bytearray):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace").strip()[:500]
            return ErrorInfo(status, _default_type(status), text or f"upstream answered {status}")
    if not isinstance(data, dict):
        return ErrorInfo(status, _default_type(status), f"upstream answered {status}")
    error = data.get("error")
    if isinstance(error, dict):
        return ErrorInfo(
            status,
            str(error.get("type") or _default_type(status)),
            str(error.get("message") or f"upstream answered {status}"),
            _opt_str(error.get("param")),
            _opt_str(error.get("code")),
        )
    if isinstance(error, str):
        return ErrorInfo(status, _default_type(status), str(data.get("message") or error), code=error)
    detail = data.get("detail")
    if detail is not None:
        message = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
        return ErrorInfo(status, _default_type(status), message)
    return ErrorInfo(status, _default_type(status), str(data.get("message") or f"upstream answered {status}"))


def status_for_stream_error(info: ErrorInfo) -> int:
    """The HTTP status an in-band error (which arrived inside a 200 stream) stands for."""
    if info.code in _STATUS_BY_OPENAI_CODE:
        return _STATUS_BY_OPENAI_CODE[info.code]
    return _STATUS_BY_ANTHROPIC_TYPE.get(info.type, 500)


def log_late_error(data: dict[str, Any]) -> None:
    """An in-band ``error`` after the terminal event: the answer is complete, so it is only logged."""
    info = parse_stream_error(data)
    log.warning("upstream error after the stream completed", code=info.code, error=info.message)


def parse_stream_error(data: dict[str, Any]) -> ErrorInfo:
    """An in-band Responses failure as ``ErrorInfo`` with the HTTP status it stands for: an ``error`` event
    (``{"error": {...}}``, or the older flat ``{"code", "message", "param"}``) or a ``response.failed``
    event, whose ``response.error`` holds ``{code, message}``."""
    response = data.get("response")
    if isinstance(response, dict):
        error = response.get("error")
        error = error if isinstance(error, dict) else {}
        code = _opt_str(error.get("code"))
        message = str(error.get("message") or "the upstream response failed")
        info = ErrorInfo(500, code or "server_error", message, code=code)
    else:
        nested = data.get("error")
        source = nested if isinstance(nested, dict) else data
        code = _opt_str(source.get("code"))
        info = ErrorInfo(
            500,
            str(source.get("type") or code or "server_error"),
            str(source.get("message") or "the upstream stream failed"),
            _opt_str(source.get("param")),
            code,
        )
    status = status_for_stream_error(info)
    return ErrorInfo(status, info.type, info.message, info.param, info.code)


def render_error(fmt: Format, info: ErrorInfo, request_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` in ``fmt``'s envelope."""
    if fmt is Format.ANTHROPIC:
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": _anthropic_type(info), "message": info.message},
        }
        if request_id:
            body["request_id"] = request_id
        return info.status, body
    # OpenAI clients have no 529; their SDKs treat 503 as the retryable overload it is.
    status = 503 if info.status == 529 else info.status
    return status, {
        "error": {
            "message": info.message,
            "type": _openai_type(info),
            "param": info.param,
            "code": info.code,
        }
    }


def render_stream_error(fmt: Format, info: ErrorInfo, sequence_number: int | None = None) -> bytes:
    """The in-band error frame of ``fmt`` (for failures after the stream started)."""
    from ccproxy.sse import frame

    if fmt is Format.ANTHROPIC:
        error = {"type": _anthropic_type(info), "message": info.message}
        return frame("error", {"type": "error", "error": error})
    if fmt is Format.CHAT:
        return frame(None, render_error(fmt, info)[1])
    code = info.code or _openai_type(info)
    # Live captures nest the details under ``error`` (openai-python raises only for a truthy ``error`` key);
    # the SDK's ResponseErrorEvent type has them at the top level. Both are sent.
    event: dict[str, Any] = {
        "type": "error",
        "code": code,
        "message": info.message,
        "param": info.param,
        "error": {"type": _openai_type(info), "code": code, "message": info.message, "param": info.param},
    }
    if sequence_number is not None:
        event["sequence_number"] = sequence_number
    return frame("error", event)


def _anthropic_type(info: ErrorInfo) -> str:
    if info.type in _STATUS_BY_ANTHROPIC_TYPE:
        return info.type
    return ANTHROPIC_TYPES.get(info.status, "api_error")


def _openai_type(info: ErrorInfo) -> str:
    if info.type in _STATUS_BY_ANTHROPIC_TYPE or info.type not in {"", None}:
        mapped = {
            "authentication_error": "invalid_request_error",
            "not_found_error": "invalid_request_error",
            "api_error": "server_error",
            "overloaded_error": "server_error",
            "request_too_large": "invalid_request_error",
        }
        return mapped.get(info.type, info.type)
    return OPENAI_TYPES.get(info.status, "server_error")


def _default_type(status: int) -> str:
    return ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
