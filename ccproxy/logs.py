"""Structured logging (structlog) with secrets redacted from every event."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# Names that carry a secret (headers, body fields, log keys): anything with key, token, secret, auth,
# cookie, password or a session credential in it...
_SECRET_NAME = (
    r"[\w-]*(?:auth|api[-_]?key|key|token|secret|passw(?:or)?d|cookie|credential|code_verifier)[\w-]*"
)
SECRET_KEYS = re.compile(rf"^(?:{_SECRET_NAME}|code)$", re.IGNORECASE)
# ...except usage counters and limits, which only mention tokens (max_tokens, input_tokens_details, ...).
COUNTER_KEYS = re.compile(r"tokens(?:_details)?$|tokens?_(?:count|usage|limit)$", re.IGNORECASE)
_VALUE_CHAR = r"[^\s\"',;&{}\[\]]"
_NOT_A_COUNTER = r"(?<!tokens)(?<!_details)(?<!_count)(?<!_usage)(?<!_limit)"
_SEPARATOR = r"(?:[\"']?\s*[:=]\s*|[\"']\s*,\s*)(?:(?-i:b)?[\"'])?(?:(?:Bearer|Basic)\s+)?"
# In free text: ``name: value`` / ``"name": "value"`` / ``name=value`` / ``(b'name', b'value')`` for a
# secret-bearing name (a header dump, a repr, a JSON fragment; a bare number is left alone)...
NAMED_SECRETS = re.compile(
    rf"((?<![\w-]){_SECRET_NAME}{_NOT_A_COUNTER}{_SEPARATOR})(?![0-9.]+(?!{_VALUE_CHAR})){_VALUE_CHAR}+",
    re.IGNORECASE,
)
# ...and secret-looking values anywhere: Bearer/Basic credentials, Anthropic and OpenAI keys and tokens, JWTs.
SECRET_VALUES = re.compile(
    r"((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|sk-[A-Za-z0-9_-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
    re.IGNORECASE,
)


def _mask(m: re.Match[str]) -> str:
    return (m.group(1) or "") + "***"


def redact_text(text: str) -> str:
    if ":" in text or "=" in text or "," in text:  # no separator, no ``name: value`` (the common case)
        text = NAMED_SECRETS.sub(_mask, text)
    return SECRET_VALUES.sub(_mask, text)


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a header, field or log key names a secret (``x-api-key``, ``refresh_token``), not a counter."""
    return SECRET_KEYS.match(name) is not None and COUNTER_KEYS.search(name) is None


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secret-looking keys masked and secret-looking strings scrubbed."""
    if key and is_secret_name(key) and value not in (None, "", False):
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if is_secret_name(k) else redact_text(v)) for k, v in headers.items()}


def _redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key in ("level", "timestamp", "logger"):
            continue  # ours, never a secret
        if key == "event":
            if isinstance(value, str):
                event[key] = redact_text(value)
            continue
        event[key] = redact(value, key)
    return event


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test capture and redirection keep working)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# Whether per-request debug lines are wanted: the data path checks this flag before building a debug
# event, so at info level a request pays one attribute read, not a logger call.
DEBUG = False


def configure(level: str = "info", fmt: str = "auto") -> None:
    """One pipeline: structlog events and stdlib records (uvicorn's included) share the level, the
    redaction and the renderer (readable on a terminal, one JSON object per line otherwise)."""
    global DEBUG
    DEBUG = level.lower() == "debug"
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True) if use_console else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Stdlib loggers (uvicorn, websockets, asyncio): same fields, redaction and renderer as structlog's.
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ccproxy", False)]:
        root.removeHandler(old)
    handler._ccproxy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.setLevel(logging.NOTSET)  # the root's level
        uvicorn_logger.disabled = False
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the access line is ours (ccproxy.access)


def ensure_configured() -> None:
    """Logs go to stderr, redacted, even when a command logs before the settings are read."""
    if not structlog.is_configured():
        configure()
