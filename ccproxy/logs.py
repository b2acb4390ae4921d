"""Structured logging (structlog) with secrets redacted from every event."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

SECRET_KEYS = re.compile(
    r"(authorization|api[-_]?key|token|secret|password|cookie|code_verifier|^code$)", re.IGNORECASE
)
# Bearer values, Anthropic keys/OAuth tokens, OpenAI keys, JWTs.
SECRET_VALUES = re.compile(
    r"((?:authorization|x-api-key|cookie)[\"']?\s*[:=]\s*[\"']?(?:Bearer\s+)?)[^\s\"',]+"
    r"|(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|sk-[A-Za-z0-9_-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    return SECRET_VALUES.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secret-looking keys masked and secret-looking strings scrubbed."""
    if key and SECRET_KEYS.search(key) and value not in (None, "", False):
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if SECRET_KEYS.search(k) else redact_text(v)) for k, v in headers.items()}


def _redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key in ("event", "level", "timestamp", "logger"):
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


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Stdlib loggers (uvicorn, aiohttp) share the level and the redaction; their access log is ours instead.
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_redact_record)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ccproxy", False)]:
        root.removeHandler(old)
    handler._ccproxy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def _redact_record(record: logging.LogRecord) -> bool:
    """Scrub secrets from stdlib records (e.g. uvicorn's debug dump of WebSocket handshake headers)."""
    message = record.getMessage()
    cleaned = redact_text(message)
    if record.exc_info and record.exc_info[1] is not None:
        cleaned += "\n" + redact_text(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
        record.exc_text = None
    record.msg, record.args = cleaned, None
    return True


def ensure_configured() -> None:
    """Logs go to stderr, redacted, even when a command logs before the settings are read."""
    if not structlog.is_configured():
        configure()
