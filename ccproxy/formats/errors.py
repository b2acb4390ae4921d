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
    "server_is_overloaded": 529,
    "overloaded_error": 529,
    "slow_down": 529,
}
# One mapping for every OpenAI-format route, streaming or not, whichever upstream the error came from:
# the kind of failure (from the upstream's type, code or status) decides the OpenAI ``type`` and default
# ``code``. An upstream code is kept when it is more specific (``model_not_found``, ``insufficient_quota``).
OPENAI_BY_KIND: dict[str, tuple[str, str | None]] = {
    "overloaded": ("server_error", "server_is_overloaded"),
    "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
    "server": ("server_error", "server_error"),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("invalid_request_error", None),
    "too_large": ("invalid_request_error", None),
    "invalid_request": ("invalid_request_error", None),
}
_KIND_BY_STATUS = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    413: "too_large",
    429: "rate_limit",
    503: "overloaded",
    529: "overloaded",
}
_KIND_BY_TYPE = {
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate_limit",
    "api_error": "server",
    "server_error": "server",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "too_large",
    "invalid_request_error": "invalid_request",
}
_KIND_BY_CODE = {
    "server_is_overloaded": "overloaded",
    "overloaded_error": "overloaded",
    "slow_down": "overloaded",
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "rate_limit",
    "server_error": "server",
    "invalid_api_key": "authentication",
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


def error_kind(info: ErrorInfo) -> str:
    """What failed, whatever the upstream's vocabulary: a key of ``OPENAI_BY_KIND``."""
    kind = _KIND_BY_CODE.get(info.code or "") or _KIND_BY_TYPE.get(info.type)
    if kind is None or (kind in ("server", "invalid_request") and info.status in _KIND_BY_STATUS):
        kind = _KIND_BY_STATUS.get(
            info.status, kind or ("server" if info.status >= 500 else "invalid_request")
        )
    return kind


def openai_error(info: ErrorInfo) -> tuple[int, str, str | None]:
    """``(status, type, code)`` an OpenAI client gets for ``info``: one table for every route."""
    kind = error_kind(info)
    error_type, default_code = OPENAI_BY_KIND[kind]
    specific = info.code and (info.code not in _KIND_BY_CODE or info.code == "insufficient_quota")
    code = info.code if specific else default_code
    # OpenAI clients have no 529; their SDKs treat 503 as the retryable overload it is.
    status = 503 if kind == "overloaded" else info.status
    return status, error_type, code


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
    status, error_type, code = openai_error(info)
    return status, {"error": {"message": info.message, "type": error_type, "param": info.param, "code": code}}


def render_stream_error(fmt: Format, info: ErrorInfo, sequence_number: int | None = None) -> bytes:
    """The in-band error frame of ``fmt`` (for failures after the stream started)."""
    from ccproxy.sse import frame

    if fmt is Format.ANTHROPIC:
        error = {"type": _anthropic_type(info), "message": info.message}
        return frame("error", {"type": "error", "error": error})
    if fmt is Format.CHAT:
        return frame(None, render_error(fmt, info)[1])
    _, error_type, code = openai_error(info)
    code = code or error_type
    # Live captures nest the details under ``error`` (openai-python raises only for a truthy ``error`` key);
    # the SDK's ResponseErrorEvent type has them at the top level. Both are sent.
    event: dict[str, Any] = {
        "type": "error",
        "code": code,
        "message": info.message,
        "param": info.param,
        "error": {"type": error_type, "code": code, "message": info.message, "param": info.param},
    }
    if sequence_number is not None:
        event["sequence_number"] = sequence_number
    return frame("error", event)


def _anthropic_type(info: ErrorInfo) -> str:
    if info.type in _STATUS_BY_ANTHROPIC_TYPE:
        return info.type
    if error_kind(info) == "overloaded":
        return "overloaded_error"
    return ANTHROPIC_TYPES.get(info.status, "api_error")


def _default_type(status: int) -> str:
    return ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def normalize_responses_failures(out: bytes) -> bytes:
    """Responses frames passed through from a Responses upstream, with in-band failures (``error``,
    ``response.failed``) re-rendered through the one OpenAI mapping. ``out`` is whole frames (cut at a
    ``\n\n``). Only its last frame is looked at (a failure ends a stream, and the error event precedes the
    ``response.failed`` that ends it, in the same read), so a chunk costs a backward scan of one frame."""
    cut = out.rfind(b"\n\n", 0, len(out) - 2) + 2  # 0 when the chunk is one frame
    head = out[cut : cut + 64]  # `event: error` / `event: response.failed` / `data: {"type":"error"`
    if b"rror" not in head and b"failed" not in head:
        return out
    from ccproxy.sse import frame

    frames = []
    for raw in out.split(b"\n\n"):
        data_line = next((ln for ln in raw.split(b"\n") if ln.startswith(b"data:")), None)
        try:
            data = orjson.loads(data_line[5:]) if data_line is not None else None
        except orjson.JSONDecodeError:
            data = None
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "error" and isinstance(data, dict):
            seq = data.get("sequence_number")
            rendered = render_stream_error(
                Format.RESPONSES, parse_stream_error(data), seq if isinstance(seq, int) else None
            )
            frames.append(rendered[:-2])
        elif kind == "response.failed" and isinstance(data, dict) and isinstance(data.get("response"), dict):
            response = data["response"]
            error = response.get("error") if isinstance(response.get("error"), dict) else {}
            response["error"] = {**error, "code": openai_error(parse_stream_error(data))[2] or "server_error"}
            frames.append(frame("response.failed", data)[:-2])
        else:
            frames.append(raw)
    return b"\n\n".join(frames)
