"""Errors raised anywhere in a request, answered in the caller's own wire format."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher, get_close_matches

import orjson
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo, parse_error, render_error


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


def upstream_error_response(
    client: Format,
    upstream: Format,
    status: int,
    data: bytes,
    request_id: str,
    headers: dict[str, str],
    asked: set[str | None],
    model_help: Callable[[], str],
) -> Response:
    """An upstream's error answer for the client. Same format and the right envelope: handed over untouched.
    Anything else is re-rendered; an error about the model asked for (``asked``) also names the models the
    provider takes (``model_help``)."""
    unknown_model = status in (400, 404) and _names_model(data, asked)
    if client is upstream and not unknown_model and _is_envelope(client, data):
        return Response(data, status, headers=headers, media_type="application/json")
    info = parse_error(status, data)
    if unknown_model:
        info = replace(info, message=f"{info.message}. {model_help()}")
    return error_response(client, info, request_id, headers)


def _names_model(data: bytes, asked: set[str | None]) -> bool:
    """Whether an upstream error is about the model asked for (``model: x``, ``The 'x' model is not ...``)."""
    text = data.decode("utf-8", "replace")
    names = asked - {None, ""}
    return "model" in text.lower() and any(str(name) in text for name in names)


def _is_envelope(fmt: Format, data: bytes) -> bool:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    return body.get("type") == "error" if fmt is Format.ANTHROPIC else True


def failure_reason(status: int, body: bytes) -> str:
    """The message of an error answer, for the access log (any envelope; plain text as is)."""
    return parse_error(status, bytes(body)).message[:500] or f"status {status}"


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


@dataclass(frozen=True)
class _Client:
    """A client recognised by its user agent: what it appends to its base URL and how the user sets it."""

    agents: tuple[str, ...]  # user-agent prefixes, lower case
    name: str
    setting: str  # with {url}
    suffixes: tuple[str, ...]  # longest first
    prefer: str = "/"  # routes under this prefix first (Codex users come for their ChatGPT plan)


_ANTHROPIC_SUFFIXES = ("/v1/messages/count_tokens", "/v1/messages", "/v1/models")
_OPENAI_SUFFIXES = ("/chat/completions", "/responses", "/models")
_CLIENTS = (
    _Client(("anthropic/",), "the Anthropic SDK", 'base_url="{url}"', _ANTHROPIC_SUFFIXES),
    _Client(("openai/",), "the OpenAI SDK", 'base_url="{url}"', _OPENAI_SUFFIXES),
    _Client(("claude-cli/",), "Claude Code", "ANTHROPIC_BASE_URL={url}", _ANTHROPIC_SUFFIXES),
    _Client(
        ("codex_",), "Codex", 'base_url = "{url}" in its model provider', _OPENAI_SUFFIXES, "/api/codex/"
    ),
)
_ANY_CLIENT = _Client((), "your client", "its base URL to {url}", _ANTHROPIC_SUFFIXES + _OPENAI_SUFFIXES)


class RouteGuide:
    """Answers for requests no route takes (the miss path only): an unknown path gets a 404 naming the
    nearest route and the base URL the caller's client wants; a known path with the wrong method gets
    a 405 with ``Allow``; both in the format the path suggests."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes: list[tuple[str, frozenset[str]]] = []
        for route in routes:
            if isinstance(route, Route) and route.methods and "{" not in route.path:
                self.routes.append((route.path, frozenset(route.methods)))

    def method_routes(self, routes: Sequence[BaseRoute]) -> list[Route]:
        """Catch-alls placed after ``routes``: a path that only matched with another method lands here."""
        allowed: dict[str, set[str]] = {}
        for route in routes:
            if isinstance(route, Route) and route.methods:
                allowed.setdefault(route.path, set()).update(route.methods)
        return [Route(path, _WrongMethod(sorted(methods))) for path, methods in allowed.items()]

    def advice(self, method: str, path: str, headers: Mapping[str, str]) -> str:
        agent = headers.get("user-agent", "").lower()
        client = next((c for c in _CLIENTS if agent.startswith(c.agents)), None)
        trimmed = path.rstrip("/") or "/"
        for suffix in (client or _ANY_CLIENT).suffixes:
            candidates = [p for p, _ in self.routes if p.endswith(suffix)]
            if not trimmed.endswith(suffix) or not candidates:
                continue
            who = client or _ANY_CLIENT
            candidates = [p for p in candidates if p.startswith(who.prefer)] or candidates
            base = trimmed.removesuffix(suffix)
            best = max(candidates, key=lambda p: SequenceMatcher(None, base, p.removesuffix(suffix)).ratio())
            url = f"http://{headers.get('host', 'localhost')}{best.removesuffix(suffix)}"
            return (
                f"no route for {method} {path}; the nearest is {best}: "
                f"with {who.name} set {who.setting.format(url=url)}"
            )
        nearest = get_close_matches(trimmed, [p for p, _ in self.routes], n=1, cutoff=0)
        return f"no route for {method} {path}" + (f"; the nearest is {nearest[0]}" if nearest else "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The router's ``default``: nothing matched this path."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "no such WebSocket route"})
            return
        headers = _headers(scope)
        message = self.advice(scope["method"], scope["path"], headers)
        await _answer(scope, receive, send, headers, ErrorInfo(404, "not_found_error", message))


class _WrongMethod:
    __slots__ = ("allowed",)

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = ", ".join(self.allowed)
        message = f"{scope['method']} is not allowed on {scope['path']}; use {allowed}"
        info = ErrorInfo(405, "invalid_request_error", message)
        await _answer(scope, receive, send, _headers(scope), info, {"allow": allowed})


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: Mapping[str, str],
    info: ErrorInfo,
    extra: Mapping[str, str] | None = None,
) -> None:
    request_id = scope.get("state", {}).get("request_id")
    response = error_response(format_for(scope["path"], headers), info, request_id, extra)
    await response(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
