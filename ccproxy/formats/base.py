"""The contract every translation implements, and the registry that routes use to find one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

JSON = dict[str, Any]


class Format(StrEnum):
    ANTHROPIC = "anthropic"
    CHAT = "openai_chat"
    RESPONSES = "openai_responses"


class TranslationError(Exception):
    """A request that cannot be carried to the target format; answered as a 400 naming the parameter."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclass
class TranslationContext:
    """What a response or stream translator needs to know about the request it answers.

    ``model`` is the name the client asked for (aliases are restored to it in responses);
    ``request`` is the client's original body (e.g. ``stream_options``), never mutated.
    """

    model: str
    request: JSON = field(default_factory=dict)

    @property
    def include_usage(self) -> bool:
        options = self.request.get("stream_options")
        return bool(isinstance(options, dict) and options.get("include_usage"))


class StreamTranslator(Protocol):
    """Incremental stream conversion: constant work per upstream event.

    ``feed`` takes one parsed upstream event (SSE event name, decoded ``data`` object) and returns the
    complete, blank-line-terminated client frames it produces (``b""`` when none). ``finish`` is called
    once when the upstream ends, normally or abruptly, and returns whatever the client still needs for a
    well-formed ending (e.g. ``message_stop`` or ``[DONE]``); it must be safe after a terminal event.
    ``fail`` reports an error that happened outside the stream (connection dropped, timeout) as the
    target format's in-band error, then ends the stream.
    """

    def feed(self, event: str | None, data: JSON) -> bytes: ...

    def finish(self) -> bytes: ...

    def fail(self, status: int, error_type: str, message: str) -> bytes: ...


@dataclass(frozen=True)
class Translation:
    """Everything a route needs to serve ``client`` format on top of an ``upstream`` format."""

    client: Format
    upstream: Format
    request: Callable[[JSON], JSON]
    response: Callable[[JSON, TranslationContext], JSON]
    stream: Callable[[TranslationContext], StreamTranslator]


_REGISTRY: dict[tuple[Format, Format], Translation] = {}


def register(translation: Translation) -> Translation:
    _REGISTRY[(translation.client, translation.upstream)] = translation
    return translation


def get_translation(client: Format, upstream: Format) -> Translation:
    """The translation from ``client`` to ``upstream``; raises ``KeyError`` when none is registered."""
    found = _REGISTRY.get((client, upstream))
    if found is None:
        # Registers the built-in translations (a test may have imported only one of them before).
        import ccproxy.formats.registry  # noqa: F401

        found = _REGISTRY[(client, upstream)]
    return found
