"""Token usage and the served model, read off an answer as it passes; built only when a plugin listens.

A translated answer is parsed anyway, so the meter reads the parsed events and bodies. A passthrough
answer is never parsed: the meter finds the ``"usage":{...}`` object (and the first ``"model":"..."``)
in the raw bytes and parses only those few hundred bytes. In JSON a ``"`` inside a string is always
escaped, so ``"usage":{`` in the raw bytes is a key, never text; the top-level usage is the last one (it
follows the content and tool inputs in both upstream formats). Anything unexpected falls back to a full
parse, so the figures never depend on the shortcut (``tests/core/test_meter.py`` checks both ways agree
on every recorded answer).

``settle`` is the first observer of every finished request (``plugins.Hooks``): what the request path
only kept (a passthrough answer, the request's headers) is read there, in the observers' batch: the
usage, the session the request named and the client's product name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import orjson

from ccproxy.formats.base import Format
from ccproxy.plugins import RequestEvent, Usage

# The events that carry usage or the served model; the meter sees no other.
USAGE_EVENTS = frozenset(
    {"message_start", "message_delta", "response.completed", "response.incomplete", "response.failed"}
)
_USAGE = b'"usage":'
_MODEL = b'"model":'
_COMPACT_MODEL = b'"model":"'
_SPACE = b" \t\r\n"
# message_delta's usage holds these (cumulative) in today's API: message_start's is then not needed
_COMPLETE_ANTHROPIC = frozenset({"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"})
# Client headers naming one conversation (Claude Code sends the last one); the path's {session_id} wins.
SESSION_HEADERS = ("session_id", "session-id", "x-session-id", "x-claude-code-session-id")
_PARSE_BELOW = 2048  # smaller answers: one full parse is cheaper than the scan
_LATER_BELOW = 65536  # answers read in the observers' batch (at most FINISH_BATCH of them wait)


class UsageMeter:
    __slots__ = ("event", "fmt", "head", "usage")

    def __init__(self, fmt: Format, event: RequestEvent) -> None:
        self.fmt = fmt
        self.event = event
        self.head = b""  # a passthrough stream's first frame, read only if its last usage is partial
        event.usage = self.usage = Usage()  # filled in as the answer passes

    def observe(self, name: str | None, data: dict[str, Any]) -> None:
        """One parsed upstream event."""
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.event.model_served = message.get("model") or self.event.model_served
            self._anthropic(message.get("usage") or {})
        elif kind == "message_delta":
            self._anthropic(data.get("usage") or {})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = data.get("response") or {}
            self.event.model_served = response.get("model") or self.event.model_served
            self._responses(response.get("usage") or {})

    def observe_text(self, name: str | None, data: str) -> None:
        """One upstream SSE event as received (its ``data`` unparsed)."""
        if name in USAGE_EVENTS:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.observe(name, orjson.loads(data))

    def observe_head(self, out: bytes) -> None:
        """The first frames of a passthrough stream: the first one (message_start, response.created)
        names the served model. Anthropic's also carries the input usage, but message_delta repeats it
        (its counts are cumulative), so it is kept and read only when the end of the stream does not."""
        end = out.find(b"\n\n")
        end = len(out) if end < 0 else end
        model = _first_model(out, 0, end)
        if model is not None:
            self.event.model_served = model
        if self.fmt is Format.ANTHROPIC:
            self.head = out[:end] if end < len(out) else out

    def observe_tail(self, last: bytes, before: bytes) -> None:
        """The last two pieces of a passthrough stream (whole frames): the final usage (message_delta,
        response.completed) is the last usage object, found by searching back from the end. Also called
        when the stream broke or the client left, so what was known (the input usage) is kept."""
        if self.fmt is not Format.ANTHROPIC:
            for piece in (last, before):
                usage = _usage_object(piece, 0, len(piece))
                if usage is not None:
                    self._responses(usage)
                    return
            return
        usage = None
        for piece in (last, before):
            usage = _usage_object(piece, 0, len(piece), True)  # message_delta ends with its usage
            if usage is not None:
                break
        if usage is None or not _COMPLETE_ANTHROPIC.issubset(usage):  # an older shape, or no end at all
            head = self.head
            first = _usage_object(head, 0, len(head)) if head else None
            if first is not None:
                self._anthropic(first)
        if usage is not None:
            self._anthropic(usage)

    def _anthropic(self, usage: dict[str, Any]) -> None:
        u = self.usage
        u.input_tokens = usage.get("input_tokens") or u.input_tokens
        u.output_tokens = usage.get("output_tokens") or u.output_tokens
        u.cache_read_tokens = usage.get("cache_read_input_tokens") or u.cache_read_tokens
        u.cache_write_tokens = usage.get("cache_creation_input_tokens") or u.cache_write_tokens

    def _responses(self, usage: dict[str, Any]) -> None:
        u = self.usage
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        u.input_tokens = (usage.get("input_tokens") or 0) - cached
        u.cache_read_tokens = cached
        u.output_tokens = usage.get("output_tokens") or 0
        u.reasoning_tokens = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0


def observe_body(event: RequestEvent, fmt: Format, body: Any) -> None:
    """A parsed upstream JSON answer: its served model and usage onto the event."""
    if not isinstance(body, dict):
        return
    model = body.get("model")
    if isinstance(model, str):
        event.model_served = model
    usage = body.get("usage")
    event.usage = _usage_of(fmt, usage if isinstance(usage, dict) else {})


def observe_later(event: RequestEvent, fmt: Format, content: bytes) -> None:
    """``observe_raw_body`` when the event reaches its observers (``settle``, in their batch), not on the
    request path; a large answer is read now, so a batch of waiting events holds little memory."""
    if len(content) <= _LATER_BELOW:
        event.answer = (fmt, content)
    else:
        observe_raw_body(event, fmt, content)


def settle(event: RequestEvent) -> None:
    """The first observer of every finished request (``plugins.Hooks``): a kept answer's usage, and the
    session and client read from the request's headers."""
    answer = event.answer
    if answer is not None:
        event.answer = None
        observe_raw_body(event, answer[0], answer[1])
    headers = event.headers
    if headers is not None:
        event.headers = None
        if event.session_id is None:
            event.session_id = session_header(headers)
        if event.client is None:
            event.client = client_name(headers.get("user-agent"))


_SESSION_HEADER_SET = frozenset(SESSION_HEADERS)


def session_header(headers: Mapping[str, str]) -> str | None:
    """The session a request names in its headers (``SESSION_HEADERS``), or None."""
    if headers.keys().isdisjoint(_SESSION_HEADER_SET):  # the usual case: four lookups in one C call
        return None
    for name in SESSION_HEADERS:
        if value := headers.get(name):
            return value
    return None


_CLIENT_NAMES: dict[str, str | None] = {}  # user agent → product name; a client sends the same one each time


def client_name(user_agent: str | None) -> str | None:
    """The client's product name from its user agent: ``claude-cli/2.1 (external)`` → ``claude-cli``."""
    if not user_agent:
        return None
    try:
        return _CLIENT_NAMES[user_agent]
    except KeyError:
        name = user_agent.split("/", 1)[0].split(" ", 1)[0][:40] or None
        if len(_CLIENT_NAMES) < 256:  # user agents are client-chosen: the cache stays bounded
            _CLIENT_NAMES[user_agent] = name
        return name


def observe_raw_body(event: RequestEvent, fmt: Format, content: bytes) -> None:
    """An upstream JSON answer as bytes (passthrough): its served model and usage onto the event.

    The usual answer (Anthropic's message) ends with its usage: ``..."usage":{...}}``. When the bytes after
    the last ``"usage":`` key, less the closing brace, parse as one object, that object is the top-level
    usage (a nested one would leave unbalanced braces behind it): a third of the instructions of a full
    parse. Other shapes: a full parse of a small answer, the scan of a large one."""
    at = content.rfind(_USAGE)
    if at > 0 and content[-1] == 125 and content[at - 1] != 92:  # ends with "}"; no backslash before the key
        try:
            usage = orjson.loads(content[at + len(_USAGE) : -1])
        except orjson.JSONDecodeError:
            usage = None
        model = _first_model(content, 0, at) if type(usage) is dict else None
        if model is not None:  # else (no plain model name before the usage): the full parse decides
            event.model_served = model
            event.usage = _usage_of(fmt, usage)
            return
    if len(content) < _PARSE_BELOW:  # one parse of a small answer is cheaper than the scan
        with contextlib.suppress(orjson.JSONDecodeError):
            observe_body(event, fmt, orjson.loads(content))
        return
    found = _usage_object(content, 0, len(content))
    if found is None:
        with contextlib.suppress(orjson.JSONDecodeError):
            observe_body(event, fmt, orjson.loads(content))
        return
    model = _first_model(content, 0, len(content))
    if model is not None:
        event.model_served = model
    event.usage = _usage_of(fmt, found)


def _usage_of(fmt: Format, usage: dict[str, Any]) -> Usage:
    get = usage.get
    if fmt is Format.ANTHROPIC:
        return Usage(
            get("input_tokens") or 0,
            get("output_tokens") or 0,
            get("cache_read_input_tokens") or 0,
            get("cache_creation_input_tokens") or 0,
        )
    cached = (get("input_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(
        (get("input_tokens") or 0) - cached,
        get("output_tokens") or 0,
        cached,
        0,
        (get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def _usage_object(data: bytes, start: int, end: int, last_member: bool = False) -> dict[str, Any] | None:
    """The last ``"usage":{...}`` object in ``data[start:end]``, parsed; ``None`` if there is none
    (a ``"usage":null`` or ``"usage":"text"`` is passed over) or it does not parse as an object.

    ``last_member``: the usage is likely its event's last member (``..."usage":{...}}`` and the line's
    end), so the bytes up to that closing brace are tried first, without matching braces."""
    at = data.rfind(_USAGE, start, end)
    while at >= 0:
        begin = at + len(_USAGE)
        if begin < end and data[begin] == 123:  # "{" right after the colon (compact JSON)
            break
        begin = _skip_space(data, begin, end)
        if data[begin : begin + 1] == b"{":
            break
        at = data.rfind(_USAGE, start, at)
    else:
        return None
    if last_member:
        stop = data.find(b"\n", begin, end)
        stop = (end if stop < 0 else stop) - 1
        if stop > begin and data[stop] == 125:  # "}": the event's own
            try:
                found = orjson.loads(data[begin:stop])
            except orjson.JSONDecodeError:
                found = None
            if isinstance(found, dict):
                return found
    # Usage holds numbers, short strings and small objects: it ends at the first "}" before which as
    # many "{" as "}" have been seen.
    closes, pos = 0, begin
    while True:
        close = data.find(b"}", pos, end)
        if close < 0:
            return None
        closes += 1
        if data.count(b"{", begin, close) == closes:
            break
        pos = close + 1
    try:
        usage = orjson.loads(data[begin : close + 1])
    except orjson.JSONDecodeError:
        return None
    return usage if isinstance(usage, dict) else None


def _first_model(data: bytes, start: int, end: int) -> str | None:
    """The first ``"model":"..."`` string value (a schema's ``"model": {...}`` is passed over)."""
    at = data.find(_COMPACT_MODEL, start, end)  # what both upstreams send: no space after the colon
    if at >= 0:
        begin = at + len(_COMPACT_MODEL)
        close = data.find(b'"', begin, end)
        if close >= 0 and data.find(b"\\", begin, close) < 0:  # model names hold no escapes
            return data[begin:close].decode("utf-8", "replace")
        return None
    at = data.find(_MODEL, start, end)
    while at >= 0:
        begin = _skip_space(data, at + len(_MODEL), end)
        if data[begin : begin + 1] == b'"':
            close = data.find(b'"', begin + 1, end)
            if close < 0 or data.find(b"\\", begin + 1, close) >= 0:  # model names hold no escapes
                return None
            return data[begin + 1 : close].decode("utf-8", "replace")
        at = data.find(_MODEL, begin, end)
    return None


def _skip_space(data: bytes, at: int, end: int) -> int:
    while at < end and data[at] in _SPACE:
        at += 1
    return at
