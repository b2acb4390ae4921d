"""``/mcp``: the permission service as an MCP tool (official ``mcp`` SDK, streamable HTTP, stateless).

Any Claude Code instance can send its approvals here::

    claude -p "..." --permission-prompt-tool mcp__ccproxy__check_permission \\
        --mcp-config '{"mcpServers":{"ccproxy":{"type":"http","url":"http://127.0.0.1:8000/mcp"}}}'

Claude Code calls ``check_permission`` with ``{tool_name, input, tool_use_id}`` and reads the text result,
``{"behavior":"allow","updatedInput":{...}}`` or ``{"behavior":"deny","message":"..."}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ccproxy.permissions import Decision, PermissionService

log = structlog.get_logger("ccproxy.permissions")
TOOL_NAME = "check_permission"
SERVER_NAME = "ccproxy"
INSTALL_HINT = "the /mcp permission server needs the `mcp` package: pip install 'ccproxy-api[sdk]'"


def claude_answer(decision: Decision, tool_input: dict[str, Any]) -> str:
    """The text Claude Code's permission-prompt tool protocol expects."""
    if decision.allowed:
        updated = decision.updated_input if decision.updated_input is not None else tool_input
        return orjson.dumps({"behavior": "allow", "updatedInput": updated}).decode()
    return orjson.dumps({"behavior": "deny", "message": decision.message}).decode()


def build_mcp(
    service: PermissionService,
) -> tuple[ASGIApp, Callable[[], AbstractAsyncContextManager[None]]]:
    """The ``/mcp`` ASGI app and the lifespan it needs; a 503 answer when ``mcp`` is not installed."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
        from mcp.server.transport_security import TransportSecuritySettings
    except ImportError:
        return _missing, _nothing

    server: Any = MCPServer(SERVER_NAME, instructions="ccproxy's tool-use approvals")

    @server.tool(  # type: ignore[untyped-decorator]
        name=TOOL_NAME,
        description="Ask the person behind ccproxy whether a tool may run; returns allow or deny as JSON",
        structured_output=False,
    )
    async def check_permission(tool_name: str, input: dict[str, Any], tool_use_id: str | None = None) -> str:
        decision = await service.ask(tool_name, input, source="mcp", tool_use_id=tool_use_id)
        return claude_answer(decision, input)

    # Host/Origin checks are done by ccproxy's own middleware in front of every route.
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    del app  # only its session manager is used: the route is ccproxy's own
    manager = server.session_manager

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with manager.run():
            yield

    asgi: ASGIApp = StreamableHTTPASGIApp(manager)
    return asgi, lifespan


async def _missing(scope: Scope, receive: Receive, send: Send) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": INSTALL_HINT}})
    await Response(body, 503, media_type="application/json")(scope, receive, send)


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
