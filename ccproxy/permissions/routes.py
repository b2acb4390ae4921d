"""HTTP surface of the permission service: JSON list, one request, answers, the SSE stream and ``/mcp``.

All of it sits behind the core middleware like every other route (Host/Origin guard, auth token).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ccproxy.errors import error_response
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo
from ccproxy.permissions import AnswerError, PermissionService


def permission_routes(service: PermissionService) -> list[BaseRoute]:
    async def list_all(request: Request) -> Response:
        return _json(service.snapshot())

    async def one(request: Request) -> Response:
        req = service.get(request.path_params["id"])
        if req is None:
            return _error(
                404, f"no permission request with id {request.path_params['id']}", "not_found_error"
            )
        return _json(req.to_json())

    async def respond(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        problem = _check_answer(body)
        if problem is not None:
            return _error(400, problem[1], param=problem[0])
        try:
            req = service.respond(
                request.path_params["id"],
                body["allowed"],
                body.get("message") or "",
                body.get("updated_input"),
            )
        except AnswerError as exc:
            kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
            return _error(exc.status, exc.message, kind)
        return _json(req.to_json())

    async def stream(request: Request) -> Response:
        return StreamingResponse(
            _events(service),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return [
        Route("/permissions", list_all, methods=["GET"]),
        Route("/permissions/stream", stream, methods=["GET"]),
        Route("/permissions/{id}", one, methods=["GET"]),
        Route("/permissions/{id}/respond", respond, methods=["POST"]),
    ]


async def _events(service: PermissionService) -> AsyncIterator[bytes]:
    keepalive = service.settings.keepalive_seconds
    async with service.subscribe() as queue:
        yield b": connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            yield b"event: " + event.kind.encode() + b"\ndata: " + orjson.dumps(event.request) + b"\n\n"


def _check_answer(body: Any) -> tuple[str | None, str] | None:
    if not isinstance(body, dict):
        return None, "request body must be a JSON object"
    if not isinstance(body.get("allowed"), bool):
        return "allowed", "'allowed' is required and must be true or false"
    if body.get("message") is not None and not isinstance(body["message"], str):
        return "message", "'message' must be a string"
    if body.get("updated_input") is not None and not isinstance(body["updated_input"], dict):
        return "updated_input", "'updated_input' must be a JSON object"
    unknown = sorted(set(body) - {"allowed", "message", "updated_input"})
    if unknown:
        return unknown[0], f"unknown field '{unknown[0]}' (expected allowed, message, updated_input)"
    return None


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _error(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> Response:
    return error_response(Format.ANTHROPIC, ErrorInfo(status, kind, message, param))
