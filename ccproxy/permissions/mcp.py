"""``/mcp``: the permission service as an MCP tool (official ``mcp`` SDK, streamable HTTP, stateless).

Any Claude Code instance can send its approvals here::

    claude -p "..." --permission-prompt-tool mcp__ccproxy__check_permission \\
        --mcp-config '{"mcpServers":{"ccproxy":{"type":"http","url":"http://127.0.0.1:8000/mcp"}}}'

Claude Code calls ``check_permission`` with ``{tool_name, input, tool_use_id}`` and reads the text result,
``{"behavior":"allow","updatedInput":{...}}`` or ``{"behavior":"deny","message":"..."}``.

The ``mcp`` package takes seconds to import, so the server is built on the first ``/mcp`` request, not at
start-up; its session manager then runs in a task of its own until the app shuts down.
"""

from __future__ import annotations

import asyncio
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


class LazyMCP:
    """The ``/mcp`` route app."""

    def __init__(self, service: PermissionService) -> None:
        self.service = service
        self._app: ASGIApp | None = None
        self._lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._start()
        await app(scope, receive, send)

    async def _start(self) -> ASGIApp:
        async with self._lock:
            if self._app is not None:
                return self._app
            try:
                manager, app = build(self.service)
            except ImportError:
                self._app = _missing
                return _missing
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()

            async def run() -> None:
                async with manager.run():
                    ready.set_result(None)
                    assert self._stop is not None
                    await self._stop.wait()

            self._runner = asyncio.create_task(run(), name="mcp-session-manager")
            await ready
            self._app = app
            log.info("MCP permission server started", path="/mcp")
            return app

    async def close(self) -> None:
        if self._stop is not None and self._runner is not None:
            self._stop.set()
            await asyncio.gather(self._runner, return_exceptions=True)


def build(service: PermissionService) -> tuple[Any, ASGIApp]:
    """The MCP server's session manager and ASGI app (raises ``ImportError`` without ``mcp``)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    from mcp.server.transport_security import TransportSecuritySettings

    server: Any = MCPServer(SERVER_NAME, instructions="ccproxy's tool-use approvals")

    @server.tool(  # type: ignore[untyped-decorator]
        name=TOOL_NAME,
        description="Ask the person behind ccproxy whether a tool may run; returns allow or deny as JSON",
        structured_output=False,
    )
    async def check_permission(tool_name: str, input: dict[str, Any], tool_use_id: str | None = None) -> str:
        decision = await service.ask(tool_name, input, source="mcp", tool_use_id=tool_use_id)
        return claude_answer(decision, input)

    # Host/Origin checks are done by ccproxy's own middleware in front of every route; only the session
    # manager of this app is used, under ccproxy's own route.
    server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    app: ASGIApp = StreamableHTTPASGIApp(manager)
    return manager, app


async def _missing(scope: Scope, receive: Receive, send: Send) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": INSTALL_HINT}})
    await Response(body, 503, media_type="application/json")(scope, receive, send)
