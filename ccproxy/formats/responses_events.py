"""The part every translation of a Responses stream shares: dispatch of each event to its handler in the
subclass's ``_HANDLERS`` table, and the terminal bookkeeping around it. Subclasses render the target
format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ccproxy.formats.base import JSON, TranslationContext
from ccproxy.formats.errors import log_late_error


class ResponsesEventStream:
    __slots__ = ("_done", "_failed", "_model")

    # event type → handler; one table per class, not bound methods per instance (those would make a
    # reference cycle per stream). The handler of "error" is the one a late error is recognised by.
    _HANDLERS: ClassVar[dict[str, Callable[[Any, JSON], bytes]]] = {}

    def __init__(self, ctx: TranslationContext) -> None:
        self._model = ctx.model
        self._done = False  # a terminal event closed the answer
        self._failed = False  # an error frame was written: nothing may follow

    def feed(self, event: str | None, data: JSON) -> bytes:
        kind = data.get("type") or event
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None or self._failed:
            return b""  # unknown and uninteresting events (web_search_call.*, annotations, …) are tolerated
        if self._done:
            if handler is self._HANDLERS["error"]:
                log_late_error(data)  # the terminal event already closed the answer
            return b""
        return handler(self, data)
