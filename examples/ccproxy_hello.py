"""A complete, tiny ccproxy plugin (see docs/plugins.md); the test suite installs and loads it.

It adds a route, owns a settings section (``plugins.hello``), reports health, and listens to the
request lifecycle to count proxied tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ccproxy.plugins import HealthCheck, Plugin, PluginContext, PluginSettings, RequestEvent, hookimpl


class HelloSettings(PluginSettings):
    greeting: str = Field("hello", description="What GET /hello answers")


class HelloPlugin(Plugin):
    name = "hello"
    settings_model = HelloSettings

    def __init__(self) -> None:
        self.finished: list[RequestEvent] = []

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        greeting = ctx.settings.greeting

        async def hello(request: Request) -> Response:
            body = {"greeting": greeting, "requests_seen": len(self.finished)}
            return Response(orjson.dumps(body), media_type="application/json")

        return [Route("/hello", hello, methods=["GET"])]

    async def health(self, ctx: PluginContext) -> list[HealthCheck]:
        return [HealthCheck("ready", "pass", f"{len(self.finished)} requests seen")]

    @hookimpl
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        # Runs on the event loop with the other requests that ended in the last 50 ms: keep it this cheap.
        self.finished.append(event)


plugin = HelloPlugin()
