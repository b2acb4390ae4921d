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
from ccproxy.dashboard import DashboardPlugin
from ccproxy.dashboard.access import DashboardGate
from ccproxy.errors import RouteGuide, error_response, format_for
from ccproxy.formats.errors import ErrorInfo
from ccproxy.keys import load_gate
from ccproxy.memory import settle_after_startup
from ccproxy.middleware import TRUSTED, CoreMiddleware
from ccproxy.network import ProxyConfig
from ccproxy.permissions import PermissionService
from ccproxy.permissions.mcp import LazyMCP
from ccproxy.permissions.routes import permission_routes
from ccproxy.plugins import HealthCheck, Hooks, LoadedPlugin, PluginSet, load_plugins
from ccproxy.proxy import Proxy
from ccproxy.recorder import Recorder
from ccproxy.upstream import UpstreamClient, UpstreamResponse

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
    permissions: PermissionService


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


class MockUpstreamClient(UpstreamClient):
    """Offline mode with an auth token: ``/_mock`` is guarded like every route, so the proxy's own calls to
    its in-process fakes carry the token (as ``x-api-key``; the fakes' ``authorization`` is the throwaway
    provider credential)."""

    def __init__(self, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> UpstreamResponse:
        return await super().send(method, url, {**headers, "x-api-key": self.token}, body)


def create_app(config: LoadedConfig, *, mock: bool = False, plugins: PluginSet | None = None) -> App:
    if plugins is None:
        plugins = load_plugins(config, mock=mock, fake_base_url=mock_base_url(config))
    settings = config.settings
    token = settings.security.auth_token
    clients: dict[str | None, UpstreamClient] = {}  # one per CA bundle; pools are per client
    keys = load_gate()
    if keys is not None:
        plugins.hooks.register(keys, "client_keys")
        keys.drain = plugins.hooks.drain
    recorder = Recorder(verbose=settings.logging.verbose_api, hooks=plugins.hooks)
    permissions = PermissionService(settings.permissions)
    mcp = LazyMCP(permissions)
    routes: list[BaseRoute] = [
        Route("/health", _health_endpoint(plugins), methods=["GET", "HEAD"]),
        Route("/accounts", _accounts_endpoint(plugins), methods=["GET"]),
        *permission_routes(permissions),
        Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]),
    ]
    for entry in plugins.plugins:
        if entry.plugin is None or entry.ctx is None:
            continue
        if not entry.enabled:
            if entry.plugin.prefix:
                routes.append(Mount(entry.plugin.prefix, app=_disabled_app(entry)))
            continue
        ca_bundle: str | None = getattr(entry.ctx.settings, "ca_bundle", None)
        http = clients.get(ca_bundle)
        if http is None:
            # Offline mode's upstreams are in this process: a proxy from the environment must not apply.
            proxies = ProxyConfig() if mock else None
            if mock and token:
                http = MockUpstreamClient(token.get_secret_value(), ca_bundle=ca_bundle, proxies=proxies)
            else:
                http = UpstreamClient(ca_bundle=ca_bundle, proxies=proxies)
            clients[ca_bundle] = http
        entry.ctx.http = http
        entry.ctx.proxy = Proxy(http, entry.ctx, recorder)
        entry.ctx.permissions = permissions
        entry.ctx.state["plugin_set"] = plugins  # the dashboard shows the effective config...
        entry.ctx.state["app_routes"] = routes  # ...and reads only endpoints that exist
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
        await _warn_unready(plugins)
        settle_after_startup()
        server = settings.server
        log.info(
            "ccproxy ready",
            url=f"http://{server.host}:{server.port}",
            version=__version__,
            plugins=[p.name for p in plugins.active],
            mock=mock,
        )
        try:
            yield
        finally:
            plugins.hooks.drain()  # the last finished requests reach the ledger before it closes
            for entry in plugins.active:
                assert entry.plugin is not None and entry.ctx is not None
                try:
                    await entry.plugin.shutdown(entry.ctx)
                except Exception as exc:
                    log.error("plugin failed to stop", plugin=entry.name, error=str(exc))
            for client in clients.values():
                await client.close()
            await mcp.close()
            if keys is not None:
                await keys.close()

    for route in routes:
        if isinstance(route, Route) and route.app is not route.endpoint:
            route.app = _observed(route.app, plugins.hooks)
    guide = RouteGuide(routes)  # 404s and 405s that name the right route; only on the miss path
    router = FixedPaths(Router([*routes, *guide.method_routes(routes)], lifespan=lifespan, default=guide))
    loopback_open = frozenset(
        path
        for entry in plugins.active
        if entry.plugin is not None and entry.ctx is not None
        for path in entry.plugin.loopback_open_paths(entry.ctx)
    )
    dashboard: DashboardGate | None = next(
        (
            e.plugin.make_gate(e.ctx)
            for e in plugins.active
            if isinstance(e.plugin, DashboardPlugin) and e.ctx is not None
        ),
        None,
    )
    app = App(
        router,
        auth_token=token.get_secret_value() if token else None,
        security=settings.security,
        limits=settings.limits,
        bind_host=settings.server.host,
        loopback_open=loopback_open,
        keys=keys,
        dashboard=dashboard,
    )
    app.config = config
    app.plugins = plugins
    app.permissions = permissions
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


def _observed(app: ASGIApp, hooks: Hooks) -> ASGIApp:
    """An endpoint that answers from the server's own state (/metrics, /usage, /health, a plugin's page):
    the finished requests still waiting for their observers reach them first (``plugins.Hooks``). The
    proxied routes are raw ASGI apps and are not wrapped."""

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        hooks.drain()
        await app(scope, receive, send)

    return observed


def _accounts_endpoint(plugins: PluginSet) -> Any:
    """``GET /accounts``: every provider's accounts, windows and state (docs/accounts.md); no tokens."""

    async def accounts(request: Request) -> Response:
        providers: dict[str, Any] = {}
        for entry in plugins.active:
            registry = entry.ctx.state.get("accounts") if entry.ctx is not None else None
            if registry is not None and registry.provider not in providers:
                providers[registry.provider] = await registry.snapshot()
        return Response(orjson.dumps({"providers": providers}), media_type="application/json")

    return accounts


def _health_endpoint(plugins: PluginSet) -> Any:
    async def health(request: Request) -> Response:
        # Account names, plans and expiry only for a loopback caller with the auth token (when one is set).
        trusted = bool(request.scope.get("state", {}).get(TRUSTED))
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
                if result.output and trusted:
                    item["output"] = result.output
                if trusted:
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


async def _warn_unready(plugins: PluginSet) -> None:
    """At start, a warning per check that is not passing: e.g. a provider without credentials, with the
    command that logs in (the first request's 401 should not be the first the user hears of it)."""
    for entry in plugins.active:
        assert entry.plugin is not None and entry.ctx is not None
        if entry.error:
            continue  # already logged when it failed
        try:
            results = await entry.plugin.health(entry.ctx)
        except Exception as exc:
            log.warning("plugin health check failed", plugin=entry.name, error=f"{type(exc).__name__}: {exc}")
            continue
        for result in results:
            if result.status != "pass":
                log.warning(f"{entry.name}: {result.output}", plugin=entry.name, check=result.name)


def _worse(a: str, b: str) -> str:
    order = {"pass": 0, "warn": 1, "fail": 2}
    return a if order[a] >= order[b] else b


def _disabled_app(entry: LoadedPlugin) -> Any:
    assert entry.plugin is not None
    message = f"the {entry.name} provider is disabled; {entry.plugin.how_to_enable()}"

    async def disabled(scope: Any, receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        fmt = format_for(scope.get("path", ""), headers)
        await error_response(fmt, ErrorInfo(404, "not_found_error", message))(scope, receive, send)

    return disabled
