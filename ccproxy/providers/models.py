"""Model catalogs served by every provider's ``GET .../v1/models``, in the caller's list shape.

Answered locally (no upstream call): the catalog carries the context window and output limit that
clients want and the upstream lists do not all provide."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccproxy.errors import error_response, format_for
from ccproxy.formats.aliases import AliasRule, resolve_model
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo


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
CLAUDE_ALIASES = [
    AliasRule(match="sonnet", target="claude-sonnet-4-5"),
    AliasRule(match="opus", target="claude-opus-4-5"),
    AliasRule(match="haiku", target="claude-haiku-4-5"),
    # OpenAI model names (an OpenAI client's or the Codex CLI's default) on the Claude route.
    AliasRule(match="gpt-", kind="prefix", target="claude-sonnet-4-5"),
]


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


def model_routes(path: str, models: list[ModelInfo], aliases: list[AliasRule], owner: str) -> list[Route]:
    """``GET {path}`` and ``GET {path}/{model_id}``; Anthropic shape for Anthropic callers, else OpenAI."""

    def wants_anthropic(request: Request) -> bool:
        return format_for(request.url.path, dict(request.headers)) is Format.ANTHROPIC

    async def list_models(request: Request) -> Response:
        body = anthropic_list(models) if wants_anthropic(request) else openai_list(models, owner)
        return _json(body)

    async def get_model(request: Request) -> Response:
        wanted = resolve_model(request.path_params["model_id"], aliases)
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
