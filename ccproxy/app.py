"""The application factory: settings + plugins → one Starlette app with every route mounted up front."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ccproxy import __version__
from ccproxy.config import LoadedConfig, load_config
from ccproxy.errors import error_response, format_for
from ccproxy.formats.errors import ErrorInfo
from ccproxy.keys import load_gate
from ccproxy.memory import settle_after_startup
from ccproxy.middleware import CoreMiddleware
from ccproxy.plugins import HealthCheck, LoadedPlugin, PluginSet, load_plugins
from ccproxy.proxy import Proxy
from ccproxy.recorder import Recorder
from ccproxy.upstream import UpstreamClient

log = structlog.get_logger("ccproxy")
MOCK_PREFIX = "/_mock"
# How `ccproxy serve` hands its resolved command-line layer to worker processes (--workers, --reload).
CLI_ENV = "CCPROXY_CLI_LAYER"


def mock_base_url(config: LoadedConfig) -> str:
    server = config.settings.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    return f"http://{host}:{server.port}{MOCK_PREFIX}"


class App(CoreMiddleware):
    """The ASGI app: the core middleware around a bare router (no Starlette exception layers)."""

    config: LoadedConfig
    plugins: PluginSet


class FixedPaths:
    """Starlette's router with a dict in front: a proxied call to a fixed path skips the route scan.

    Only raw-ASGI routes without path parameters are in the dict, and only when no earlier route would
    match the same path, so the answer is always the one the router would have chosen.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.exact: dict[str, tuple[frozenset[str], ASGIApp]] = {}
        for index, route in enumerate(router.routes):
            if not isinstance(route, Route) or route.param_convertors or route.app is not route.endpoint:
                continue
            methods = frozenset(route.methods or ())
            probe = {"type": "http", "path": route.path, "method": next(iter(methods), "GET")}
            if methods and not any(r.matches(probe)[0] is not Match.NONE for r in router.routes[:index]):
                self.exact.setdefault(route.path, (methods, route.app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = self.exact.get(scope["path"])
            if hit is not None and scope["method"] in hit[0]:
                await hit[1](scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_app(config: LoadedConfig, *, mock: bool = False, plugins: PluginSet | None = None) -> App:
    if plugins is None:
        plugins = load_plugins(config, mock=mock, fake_base_url=mock_base_url(config))
    settings = config.settings
    http = UpstreamClient()
    keys = load_gate()
    if keys is not None:
        plugins.hooks.register(keys, "client_keys")
    recorder = Recorder(verbose=settings.logging.verbose_api, directory=settings.logging.request_log_dir)
    routes: list[BaseRoute] = [Route("/health", _health_endpoint(plugins), methods=["GET", "HEAD"])]
    for entry in plugins.plugins:
        if entry.plugin is None or entry.ctx is None:
            continue
        if not entry.enabled:
            if entry.plugin.prefix:
                routes.append(Mount(entry.plugin.prefix, app=_disabled_app(entry)))
            continue
        entry.ctx.http = http
        entry.ctx.proxy = Proxy(http, entry.ctx, recorder)
        try:
            routes.extend(entry.plugin.routes(entry.ctx))
        except Exception as exc:
            log.error("plugin routes failed; plugin skipped", plugin=entry.name, error=str(exc))
            entry.error, entry.enabled = str(exc), False
    if mock:
        from ccproxy.testing import create_fake_upstreams

        routes.append(Mount(MOCK_PREFIX, app=create_fake_upstreams()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for entry in plugins.active:
            assert entry.plugin is not None and entry.ctx is not None
            try:
                await entry.plugin.startup(entry.ctx)
            except Exception as exc:
                log.error("plugin failed to start", plugin=entry.name, error=f"{type(exc).__name__}: {exc}")
                entry.error = f"startup failed: {exc}"
        settle_after_startup()
        log.info("ccproxy ready", version=__version__, plugins=[p.name for p in plugins.active], mock=mock)
        try:
            yield
        finally:
            for entry in plugins.active:
                assert entry.plugin is not None and entry.ctx is not None
                try:
                    await entry.plugin.shutdown(entry.ctx)
                except Exception as exc:
                    log.error("plugin failed to stop", plugin=entry.name, error=str(exc))
            if keys is not None:
                await keys.close()
            await http.close()

    token = settings.security.auth_token
    router = FixedPaths(Router(routes, lifespan=lifespan))
    app = App(router, auth_token=token.get_secret_value() if token else None, keys=keys)
    app.config = config
    app.plugins = plugins
    return app


def create_app_from_env() -> App:
    """Factory for uvicorn's worker processes: re-reads the config with the parent's CLI layer."""
    from ccproxy.logs import configure

    layer: dict[str, Any] = orjson.loads(os.environ.get(CLI_ENV, "{}"))
    mock = bool(layer.pop("_mock", False))
    config_file = layer.pop("_config_file", None)
    config = load_config(config_file=config_file, cli=layer)
    configure(config.settings.logging.level, config.settings.logging.format)
    return create_app(config, mock=mock)


def _health_endpoint(plugins: PluginSet) -> Any:
    async def health(request: Request) -> Response:
        checks: dict[str, list[dict[str, Any]]] = {}
        worst = "pass"
        for entry in plugins.plugins:
            results: list[HealthCheck] = []
            if entry.error:
                results.append(HealthCheck("plugin", "fail", entry.error))
            elif entry.enabled and entry.plugin is not None and entry.ctx is not None:
                try:
                    results = await entry.plugin.health(entry.ctx)
                except Exception as exc:
                    results = [HealthCheck("plugin", "fail", f"health check failed: {exc}")]
            for result in results:
                item: dict[str, Any] = {"status": result.status}
                if result.output:
                    item["output"] = result.output
                item.update(result.details)
                checks.setdefault(f"{entry.name}:{result.name}", []).append(item)
                worst = _worse(worst, result.status)
        body = {
            "status": worst,
            "version": __version__.split(".")[0],
            "releaseId": __version__,
            "serviceId": "ccproxy",
            "checks": checks,
        }
        status = 503 if worst == "fail" else 200
        return Response(orjson.dumps(body), status, media_type="application/health+json")

    return health


def _worse(a: str, b: str) -> str:
    order = {"pass": 0, "warn": 1, "fail": 2}
    return a if order[a] >= order[b] else b


def _disabled_app(entry: LoadedPlugin) -> Any:
    assert entry.plugin is not None
    message = (
        f"the {entry.name} provider is disabled; {entry.plugin.enable_hint or 'enable it in the config'}"
    )

    async def disabled(scope: Any, receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        fmt = format_for(scope.get("path", ""), headers)
        await error_response(fmt, ErrorInfo(404, "not_found_error", message))(scope, receive, send)

    return disabled
