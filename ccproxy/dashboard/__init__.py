"""The web dashboard at ``/dashboard``: one static page (HTML, one JS module, CSS; no CDN, no build step)
that reads the JSON endpoints the proxy already has, plus a live stream of finished requests.

The live table is fed by ``ccproxy_request_finished``, registered only while someone watches: with nobody
watching the dashboard is no listener at all, so it costs the data path nothing (no request events or
usage metering on its account). Each viewer has a bounded queue: a viewer too slow to keep up loses rows
and is told how many, so a slow browser never holds up the proxy. Access rules: ``ccproxy.dashboard.access``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from typing import Any

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ccproxy import __version__
from ccproxy.dashboard.access import PREFIX, DashboardGate, clear_cookie, set_cookie
from ccproxy.errors import error_response
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo
from ccproxy.plugins import Plugin, PluginContext, PluginSettings, RequestEvent, ended_at, hookimpl

_STATIC = files("ccproxy.dashboard") / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}
# No inline script or style anywhere: the page's own files only.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_LOGIN_FAILED_DELAY = 0.5  # seconds: a wrong token answers slowly (guessing stays slow)


class DashboardSettings(PluginSettings):
    session_hours: float = Field(12.0, gt=0, description="how long a dashboard login lasts")
    live_queue: int = Field(
        256, ge=1, description="rows buffered per live viewer; a slower viewer skips rows (and is told)"
    )
    keepalive_seconds: float = Field(15.0, gt=0, description="comment sent on an idle live stream")


class Viewer:
    """One open live stream: a bounded queue of encoded rows and a count of rows it missed."""

    __slots__ = ("dropped", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, data: bytes) -> None:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1


def live_row(event: RequestEvent, now: float) -> dict[str, Any]:
    """What the live table shows of one finished request (never a token, never a body)."""
    u = event.usage
    return {
        "ts": round(now - event.duration, 3),
        "id": event.request_id,
        "client": event.client,
        "provider": event.plugin,
        "route": event.route or event.path,
        "model": event.model_served or event.model,
        "account": event.account,
        "status": event.status,
        "error": event.error_kind,
        "input_tokens": u.input_tokens if u else 0,
        "output_tokens": u.output_tokens if u else 0,
        "cost_usd": event.cost_usd,
        "duration_ms": round(event.duration * 1000, 1),
        "ttfb_ms": round(event.ttfb * 1000, 1),
    }


class LiveFeed:
    """The ``ccproxy_request_finished`` listener, registered while at least one viewer is connected."""

    HOOK_NAME = "dashboard_live"

    def __init__(self) -> None:
        self.viewers: dict[int, Viewer] = {}

    @hookimpl
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        data = orjson.dumps(live_row(event, ended_at(event)))
        for viewer in self.viewers.values():
            viewer.offer(data)


class DashboardPlugin(Plugin):
    name = "dashboard"
    settings_model = DashboardSettings
    prefix = PREFIX

    def __init__(self) -> None:
        self.feed = LiveFeed()
        self.viewers = self.feed.viewers
        self.started = time.time()
        self.gate: DashboardGate | None = None

    def make_gate(self, ctx: PluginContext) -> DashboardGate:
        """The admission rule the core middleware applies to ``/dashboard`` paths (one per app)."""
        token = ctx.config.settings.security.auth_token
        settings: DashboardSettings = ctx.settings
        self.gate = DashboardGate(token.get_secret_value() if token else None, settings.session_hours * 3600)
        return self.gate

    async def startup(self, ctx: PluginContext) -> None:
        self.started = time.time()

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        settings: DashboardSettings = ctx.settings

        async def page(request: Request) -> Response:
            return Response(
                (_STATIC / "index.html").read_bytes(), headers=_PAGE_HEADERS, media_type="text/html"
            )

        async def static(request: Request) -> Response:
            name = request.path_params["name"]
            suffix = name[name.rfind(".") :] if "." in name else ""
            resource = _STATIC / name
            if "/" in name or suffix not in _TYPES or not resource.is_file():
                return _error(404, "not_found_error", f"no dashboard file {name!r}")
            return Response(resource.read_bytes(), headers=_PAGE_HEADERS, media_type=_TYPES[suffix])

        async def login(request: Request) -> Response:
            gate = self.gate
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("token"), str):
                return _error(400, "invalid_request_error", 'send {"token": "<auth token>"}')
            if gate is None or gate.token is None:
                return _error(
                    400, "invalid_request_error", "no auth token is set; the dashboard needs no login"
                )
            made = gate.login(body["token"])
            if made is None:
                await asyncio.sleep(_LOGIN_FAILED_DELAY)
                return _error(401, "authentication_error", "wrong auth token")
            sid, session = made
            return _json({"csrf": session.csrf}, {"set-cookie": set_cookie(sid, gate.session_seconds)})

        async def logout(request: Request) -> Response:
            if self.gate is not None:
                self.gate.logout(dict(request.scope["headers"]))
            return _json({"ok": True}, {"set-cookie": clear_cookie()})

        async def info(request: Request) -> Response:
            gate = self.gate
            session = gate.session(dict(request.scope["headers"])) if gate is not None else None
            return _json(
                {
                    "version": __version__,
                    "started": self.started,
                    "mock": ctx.mock,
                    "auth": gate is not None and gate.token is not None,
                    "csrf": session.csrf if session is not None else None,
                    "viewers": len(self.viewers),
                    "accounts": any(
                        getattr(r, "path", None) == "/accounts" for r in ctx.state.get("app_routes", ())
                    ),
                }
            )

        async def config(request: Request) -> Response:
            from ccproxy.config_cli import effective

            plugin_set = ctx.state.get("plugin_set")
            if plugin_set is None:
                return _error(503, "api_error", "the plugin set is not known yet")
            rows = [{"key": k, "value": v, "source": s} for k, v, s in effective(ctx.config, plugin_set)]
            return _json({"settings": rows})

        async def live(request: Request) -> Response:
            return StreamingResponse(
                self._stream(ctx, settings),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )

        return [
            Route(PREFIX, page, methods=["GET", "HEAD"]),
            Route(PREFIX + "/", page, methods=["GET", "HEAD"]),
            Route(PREFIX + "/static/{name}", static, methods=["GET", "HEAD"]),
            Route(PREFIX + "/login", login, methods=["POST"]),
            Route(PREFIX + "/logout", logout, methods=["POST"]),
            Route(PREFIX + "/info", info, methods=["GET"]),
            Route(PREFIX + "/config", config, methods=["GET"]),
            Route(PREFIX + "/live", live, methods=["GET"]),
        ]

    async def _stream(self, ctx: PluginContext, settings: DashboardSettings) -> AsyncIterator[bytes]:
        viewer = Viewer(settings.live_queue)
        key = id(viewer)
        if not self.viewers:
            ctx.hooks.register(self.feed, LiveFeed.HOOK_NAME)
        self.viewers[key] = viewer
        try:
            yield b": connected\n\n"
            while True:
                if viewer.dropped:
                    dropped, viewer.dropped = viewer.dropped, 0
                    yield b"event: dropped\ndata: " + orjson.dumps({"dropped": dropped}) + b"\n\n"
                try:
                    data = await asyncio.wait_for(viewer.queue.get(), settings.keepalive_seconds)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield b"event: request\ndata: " + data + b"\n\n"
        finally:
            del self.viewers[key]
            if not self.viewers:
                ctx.hooks.unregister(LiveFeed.HOOK_NAME)


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), headers=headers, media_type="application/json")


def _error(status: int, kind: str, message: str) -> Response:
    return error_response(Format.ANTHROPIC, ErrorInfo(status, kind, message))
