"""Model catalogs served by every provider's ``GET .../v1/models``, in the caller's list shape.

Each provider's catalog comes from the upstream's own model list (``ModelCatalog``): fetched on first use,
cached, refreshed in the background when it is older than the refresh interval, with the built-in list as
the fallback while the upstream cannot be reached, plus the configured extra models. The family aliases
(``sonnet``, ``opus``, ``haiku``) follow the newest model of their family in that catalog. Requests never
wait for a refresh except the very first use of a family alias (or list) before any list was loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccproxy.errors import error_response, format_for
from ccproxy.formats.aliases import AliasRule, resolve_model
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo

log = structlog.get_logger("ccproxy.models")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    display_name: str
    context_window: int
    max_output_tokens: int
    created_at: str = "2025-01-01T00:00:00Z"


CLAUDE_MODELS = [
    ModelInfo(
        id="claude-opus-4-5",
        display_name="Claude Opus 4.5",
        context_window=200_000,
        max_output_tokens=64_000,
        created_at="2025-11-24T00:00:00Z",
    ),
    ModelInfo(
        id="claude-sonnet-4-5",
        display_name="Claude Sonnet 4.5",
        context_window=200_000,
        max_output_tokens=64_000,
        created_at="2025-09-29T00:00:00Z",
    ),
    ModelInfo(
        id="claude-haiku-4-5",
        display_name="Claude Haiku 4.5",
        context_window=200_000,
        max_output_tokens=64_000,
        created_at="2025-10-15T00:00:00Z",
    ),
    ModelInfo(
        id="claude-opus-4-1",
        display_name="Claude Opus 4.1",
        context_window=200_000,
        max_output_tokens=32_000,
        created_at="2025-08-05T00:00:00Z",
    ),
    ModelInfo(
        id="claude-sonnet-4",
        display_name="Claude Sonnet 4",
        context_window=200_000,
        max_output_tokens=64_000,
        created_at="2025-05-22T00:00:00Z",
    ),
]
CLAUDE_FAMILIES = ("sonnet", "opus", "haiku")
CLAUDE_ALIASES = [
    # OpenAI model names (an OpenAI client's or the Codex CLI's default) on the Claude route: the newest
    # Sonnet (a family name as a target is resolved through the catalog).
    AliasRule(match="gpt-", kind="prefix", target="sonnet"),
]
_FAMILY = re.compile(r"claude-(?:\d+-\d+-)?([a-z]+)-")
FIRST_LOAD_WAIT = 5.0  # seconds a first use waits for the first list before the fallback answers
RETRY_AFTER_FAILURE = 60.0


class ModelCatalog:
    """One provider's model list: live from the upstream, else built in, plus configured extras."""

    def __init__(
        self,
        builtin: list[ModelInfo],
        extra: list[ModelInfo],
        fetch: Callable[[], Awaitable[list[ModelInfo]]] | None,
        refresh_seconds: float,
        families: tuple[str, ...] = (),
    ) -> None:
        self.builtin = builtin
        self.extra = extra
        self.fetch = fetch if refresh_seconds > 0 else None
        self.refresh_seconds = refresh_seconds
        self.families = frozenset(families)
        self.live: list[ModelInfo] | None = None
        self.source = "built-in"
        self._task: asyncio.Task[None] | None = None
        self._next = 0.0
        self._newest: dict[str, str] = {}
        self._rebuild()

    @property
    def models(self) -> list[ModelInfo]:
        return self._models

    async def current(self) -> list[ModelInfo]:
        """The catalog, starting a background refresh when it is due (waits only for a first load)."""
        await self._refresh_if_due(wait=self.live is None)
        return self._models

    def newest(self, family: str) -> str:
        """The newest model of ``family`` in the catalog as it stands (no refresh)."""
        return self._newest.get(family, family)

    async def resolve_family(self, name: str) -> str:
        """``sonnet`` → the newest Sonnet in the catalog; any other name unchanged."""
        if name not in self.families:
            return name
        await self._refresh_if_due(wait=self.live is None)
        return self.newest(name)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_if_due(self, wait: bool) -> None:
        if self.fetch is None:
            return
        if (self._task is None or self._task.done()) and time.monotonic() >= self._next:
            self._task = asyncio.ensure_future(self._refresh())
        if wait and self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), FIRST_LOAD_WAIT)

    async def _refresh(self) -> None:
        assert self.fetch is not None
        try:
            models = await self.fetch()
        except Exception as exc:  # unreachable, not logged in, a list we cannot read: keep what we have
            log.info("model list not refreshed; serving the cached or built-in list", error=str(exc)[:200])
            self._next = time.monotonic() + min(RETRY_AFTER_FAILURE, self.refresh_seconds)
            return
        self._next = time.monotonic() + self.refresh_seconds
        if models:
            self.live, self.source = models, "upstream"
            self._rebuild()

    def _rebuild(self) -> None:
        base = self.live if self.live is not None else self.builtin
        seen = {m.id for m in base}
        self._models = [*base, *(m for m in self.extra if m.id not in seen)]
        newest: dict[str, ModelInfo] = {}
        for model in self._models:
            family = family_of(model.id)
            if family in self.families and (
                family not in newest or model.created_at > newest[family].created_at
            ):
                newest[family] = model
        self._newest = {family: model.id for family, model in newest.items()}


def family_of(model_id: str) -> str | None:
    """``claude-sonnet-4-5-20250929`` → ``sonnet`` (also the older ``claude-3-5-sonnet-…`` naming)."""
    found = _FAMILY.match(model_id)
    return found.group(1) if found else None


def anthropic_list(models: list[ModelInfo]) -> dict[str, Any]:
    data = [anthropic_model(m) for m in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def anthropic_model(m: ModelInfo) -> dict[str, Any]:
    return {
        "type": "model",
        "id": m.id,
        "display_name": m.display_name,
        "created_at": m.created_at,
        "max_input_tokens": m.context_window,
        "max_tokens": m.max_output_tokens,
    }


def openai_list(models: list[ModelInfo], owner: str) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(m, owner) for m in models]}


def openai_model(m: ModelInfo, owner: str) -> dict[str, Any]:
    from datetime import datetime

    created = int(datetime.fromisoformat(m.created_at.replace("Z", "+00:00")).timestamp())
    return {
        "id": m.id,
        "object": "model",
        "created": created,
        "owned_by": owner,
        "context_window": m.context_window,
        "max_output_tokens": m.max_output_tokens,
    }


def model_routes(path: str, catalog: ModelCatalog, aliases: list[AliasRule], owner: str) -> list[Route]:
    """``GET {path}`` and ``GET {path}/{model_id}``; Anthropic shape for Anthropic callers, else OpenAI."""

    def wants_anthropic(request: Request) -> bool:
        return format_for(request.url.path, dict(request.headers)) is Format.ANTHROPIC

    async def list_models(request: Request) -> Response:
        models = await catalog.current()
        body = anthropic_list(models) if wants_anthropic(request) else openai_list(models, owner)
        return _json(body)

    async def get_model(request: Request) -> Response:
        models = await catalog.current()
        wanted = await catalog.resolve_family(resolve_model(request.path_params["model_id"], aliases))
        found = next((m for m in models if m.id == wanted), None)
        fmt = Format.ANTHROPIC if wants_anthropic(request) else Format.CHAT
        if found is None:
            info = ErrorInfo(404, "not_found_error", f"model '{request.path_params['model_id']}' not found")
            return error_response(fmt, info)
        return _json(anthropic_model(found) if fmt is Format.ANTHROPIC else openai_model(found, owner))

    return [
        Route(path, list_models, methods=["GET"]),
        Route(path + "/{model_id:path}", get_model, methods=["GET"]),
    ]


def _json(body: Any) -> Response:
    import orjson

    return Response(orjson.dumps(body), media_type="application/json")
