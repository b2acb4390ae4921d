"""What every provider shares: settings, credentials, health, routes onto the shared data path.

A provider subclasses ``ProviderPlugin`` and supplies only what is its own: the upstream format, the
credential spec, how to build one authorised upstream request (``build``), its routes and its offline-mode
settings. Token caching, refresh, 401 retry, errors and streaming all live in ``ccproxy.auth`` and
``ccproxy.proxy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ccproxy.accounts import Account, Accounts, AccountSettings, account_store, named_accounts, state_file
from ccproxy.auth.credential import Credential, CredentialError
from ccproxy.auth.manager import ProviderName, TokenManager
from ccproxy.auth.oauth import OAuthSettings, default_settings
from ccproxy.errors import ProxyError, error_response
from ccproxy.formats.aliases import AliasRule, resolve_model
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo
from ccproxy.meter import session_header
from ccproxy.network import check_ca_bundle
from ccproxy.plugins import HealthCheck, Plugin, PluginContext, PluginSettings
from ccproxy.providers.models import ModelCatalog, ModelInfo
from ccproxy.proxy import Call, Outbound, Proxy
from ccproxy.responses_store import ResponseStore, ResponseStoreSettings, SQLitePersistence
from ccproxy.upstream import UpstreamResponse

# Never forwarded upstream: hop-by-hop, client credentials, proxy/CDN metadata, and encodings we could
# not decode (upstreams.md §3.4).
DROP_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
        "accept-encoding",
        "content-encoding",
        "origin",
        "referer",
        "authorization",
        "x-api-key",
        "content-length",
        "cdn-loop",
        "cookie",
        "x-request-id",
    }
)
_DROP_PREFIXES = ("access-control-", "cf-", "sec-")
_MAX_LIST_BYTES = 4 << 20


def forwardable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in DROP_HEADERS and not k.startswith(_DROP_PREFIXES)}


class ProviderSettings(PluginSettings):
    base_url: str = ""
    oauth: OAuthSettings | None = None
    access_token: SecretStr | None = Field(
        None, description="Use this access token instead of stored logins (no refresh); offline mode sets it"
    )
    refresh_grace_seconds: float = Field(120.0, ge=0, description="Refresh this long before expiry")
    retry_attempts: int = Field(
        0, ge=0, le=5, description="Retries of a 429/529 before the first byte reached the client"
    )
    retry_max_wait: float = Field(10.0, ge=0, description="Longest retry-after honoured by a retry")
    aliases: list[AliasRule] = Field(
        default_factory=list, description="Model aliases (exact / prefix / regex), first match wins"
    )
    ca_bundle: str | None = Field(
        None,
        description="CA file or directory trusted for this provider's upstream and OAuth calls "
        "(replaces SSL_CERT_FILE / the OS store)",
    )
    models: list[ModelInfo] = Field(
        default_factory=list, description="Built-in model list, served while the upstream's cannot be fetched"
    )
    extra_models: list[ModelInfo] = Field(
        default_factory=list, description="Models added to the upstream's list (e.g. ones it does not list)"
    )
    models_refresh_seconds: float = Field(
        3600.0, ge=0, description="How often the upstream's model list is refreshed (0: built-in list only)"
    )
    responses: ResponseStoreSettings = Field(
        ResponseStoreSettings.model_validate({}),
        description="Responses kept for previous_response_id and GET/DELETE /v1/responses/{id}",
    )
    accounts: AccountSettings = Field(
        AccountSettings.model_validate({}),
        description="How one of several logins (`ccproxy auth login --account NAME`) is chosen per request",
    )

    # Which provider's OAuth defaults fill in a partial `oauth` table; set by each subclass.
    oauth_provider: ClassVar[ProviderName]

    @field_validator("oauth", mode="before")
    @classmethod
    def _merge_oauth(cls, value: Any) -> Any:
        # A user sets single keys (PLUGINS__CLAUDE_API__OAUTH__TOKEN_URL); the rest keep the defaults.
        defaults = default_settings(cls.oauth_provider).model_dump()
        if value is None:
            return defaults
        if isinstance(value, dict):
            return {**defaults, **value}
        return value

    @model_validator(mode="after")
    def _check_ca_bundle(self) -> ProviderSettings:
        if self.ca_bundle is not None:
            check_ca_bundle(self.ca_bundle, {})
            if self.oauth is not None and self.oauth.ca_bundle is None:  # the OAuth calls trust it too
                self.oauth = self.oauth.model_copy(update={"ca_bundle": self.ca_bundle})
        return self


class _Upstream:
    """Binds a provider plugin to its context, as the ``ccproxy.proxy.Provider`` the data path calls."""

    def __init__(self, plugin: ProviderPlugin, ctx: PluginContext) -> None:
        self.plugin = plugin
        self.ctx = ctx
        self.name = ctx.name
        self.upstream_format = plugin.upstream_format
        self.retry_attempts = ctx.settings.retry_attempts
        self.retry_max_wait = ctx.settings.retry_max_wait
        stored: ResponseStoreSettings = ctx.settings.responses
        persistence = SQLitePersistence(stored.database) if stored.database is not None else None
        ledger = ctx.config.settings.ledger
        if persistence is None and ledger.enabled and ledger.url.startswith("sqlite:///"):
            # A ledger database the user configured also keeps the responses (table ccproxy_responses), so
            # a restart does not break a previous_response_id chain. Not by default: a write per response
            # (~0.4M instructions in a worker thread) is too much for the default hot path.
            persistence = SQLitePersistence(Path(ledger.url.removeprefix("sqlite:///")))
        self.responses: ResponseStore | None = ResponseStore(ctx.name, stored, persistence)
        settings: ProviderSettings = ctx.settings

        async def fetch() -> list[ModelInfo]:
            return await plugin.fetch_models(ctx)

        self.catalog = ModelCatalog(
            settings.models,
            settings.extra_models,
            fetch,
            settings.models_refresh_seconds,
            plugin.model_families,
        )

    async def prepare(self, call: Call) -> Outbound:
        credential = await self.plugin.account_credential(self.ctx, call)
        model = call.body.get("model")
        if isinstance(model, str):
            aliases = self.ctx.settings.aliases
            resolved = resolve_model(model, aliases) if aliases else model
            if resolved in self.catalog.families:  # sonnet / opus / haiku: the newest in the catalog
                resolved = await self.catalog.resolve_family(resolved)
            if resolved != model:
                call.body["model"] = resolved
        return self.plugin.build(self.ctx, call, credential)

    def model_help(self) -> str:
        settings = self.ctx.settings
        models = ", ".join(m.id for m in self.catalog.models) or "none listed"
        rules = [f"{r.match}{'*' if r.kind == 'prefix' else ''} -> {r.target}" for r in settings.aliases]
        newest = [f"{family} -> {self.catalog.newest(family)}" for family in sorted(self.catalog.families)]
        aliases = ", ".join([*rules, *newest])
        where = f"plugins.{self.name}.aliases (or plugins.{self.name}.models for the catalog)"
        return (
            f"The {self.name} provider knows {models}; aliases: {aliases or 'none'}. Add more under {where}."
        )

    def observe(self, call: Call, resp: UpstreamResponse) -> None:
        account: Account | None = call.state.get("account")
        if account is not None:
            self.ctx.state["accounts"].observe(account, resp.status, resp.headers)

    async def failover(self, call: Call, resp: UpstreamResponse | None) -> Outbound | None:
        """Before the first byte: the same request on the next account with room, or ``None`` (only one,
        or ``max_attempts`` tried). Raises the all-limited 429 when every account is resting."""
        accounts: Accounts | None = self.ctx.state.get("accounts")
        account: Account | None = call.state.get("account")
        if accounts is None or accounts.single or account is None:
            return None
        if resp is not None and resp.status == 401:
            accounts.login_needed(account)  # its token was refused even after a refresh
        tried: tuple[Account, ...] = (*call.state.get("tried", ()), account)
        call.state["tried"] = tried
        if len(tried) >= accounts.settings.max_attempts:
            return None
        status = resp.status if resp is not None else 0
        try:
            credential = await self.plugin.account_credential(self.ctx, call, tried)
        except ProxyError:
            if status == 429:
                raise  # every account is limited: one 429 naming the windows and the earliest reset
            return None  # a 529, a refused token, no connection: the upstream's own answer or error stands
        accounts.failing_over(account, status)
        return self.plugin.build(self.ctx, call, credential)

    async def unauthorized(self, call: Call, failed: Outbound) -> Outbound | None:
        account: Account | None = call.state.get("account")
        tokens = account.tokens if account is not None else None
        if tokens is None:
            return None
        used = failed.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            credential = await tokens.refresh_after_unauthorized(used)
        except CredentialError:
            return None  # the upstream's own 401 then reaches the client
        return self.plugin.build(self.ctx, call, credential)


class ProviderPlugin(Plugin):
    upstream_format: ClassVar[Format]
    auth_provider: ClassVar[ProviderName]
    login_command: ClassVar[str]
    model_families: ClassVar[tuple[str, ...]] = ()  # alias names that follow the newest model of a family

    def build(self, ctx: PluginContext, call: Call, credential: Credential) -> Outbound:
        raise NotImplementedError

    async def fetch_models(self, ctx: PluginContext) -> list[ModelInfo]:
        """The upstream's own model list (``ModelCatalog`` calls it in the background)."""
        raise NotImplementedError

    async def upstream_json(self, ctx: PluginContext, url: str, headers: dict[str, str]) -> Any:
        """``GET url`` on the shared upstream client; the parsed JSON of a 200, else an exception."""
        assert ctx.http is not None
        resp = await ctx.http.send("GET", url, headers)
        try:
            if resp.status != 200:
                raise ValueError(f"upstream answered {resp.status}")
            data = await resp.read(limit=_MAX_LIST_BYTES)
        except BaseException:
            resp.close()
            raise
        resp.release()
        return orjson.loads(data)

    quota_headers: ClassVar[tuple[str, ...]] = ()  # the rate-limit headers ``parse_quota`` reads

    def parse_quota(self, headers: Any, now: float) -> Any:
        """The provider's rate-limit headers as an ``accounts.Quota`` (None: they say nothing)."""
        return None

    async def startup(self, ctx: PluginContext) -> None:
        settings: ProviderSettings = ctx.settings
        provider = self.auth_provider
        if settings.access_token is not None:
            token = settings.access_token.get_secret_value()
            accounts = [Account(None, static=static_credential(token, provider))]
        else:
            # No shared session: a refresh is rare (hours apart) and opens its own short-lived one.
            hooks, name, spec = ctx.hooks, ctx.name, _spec(provider, settings.oauth)

            def manager(account: str | None) -> TokenManager:
                return TokenManager(
                    spec,
                    grace_seconds=settings.refresh_grace_seconds,
                    sources=None if account is None else [account_store(provider, account)],
                    on_refresh=lambda outcome: hooks.credential_refreshed(name, account, outcome),
                )

            ctx.state["tokens"] = default = manager(None)
            named = [Account(n, tokens=manager(n)) for n in named_accounts(provider)]
            # The usual login (ccproxy's store, else the CLI's file) comes first; with named accounts
            # and no such login it is left out, so one named account behaves as a single login.
            # Loaded now (not on the first request) so its name, and the state kept under it, are known.
            usual = (await default.status())["state"] != "missing" or not named
            accounts = [Account(None, tokens=default)] * usual + named
        registry = Accounts(
            provider,
            accounts,
            settings.accounts,
            self.parse_quota,
            headers=self.quota_headers,
            allow_overage=ctx.config.settings.billing.allow_overage,
            state_path=None if ctx.mock else state_file(),
        )
        registry.load_state()
        ctx.state["accounts"] = registry

    async def shutdown(self, ctx: PluginContext) -> None:
        registry: Accounts | None = ctx.state.get("accounts")
        if registry is not None:
            await registry.close()
        upstream: _Upstream | None = ctx.state.get("upstream")
        if upstream is not None:
            await upstream.catalog.close()
            if upstream.responses is not None:
                await upstream.responses.close()

    async def credential(self, ctx: PluginContext) -> Credential:
        """The credential of the account a request without a session would use (model lists)."""
        return await self.account_credential(ctx, None)

    async def account_credential(
        self,
        ctx: PluginContext,
        call: Call | None,
        tried: tuple[Account, ...] = (),
        *,
        session: str | None = None,
        chosen: dict[str, Any] | None = None,
    ) -> Credential:
        """Choose the account for ``call`` (kept in ``call.state["account"]``) and return its credential.

        Without a call (a side request such as plan usage), ``session`` picks the account that session's
        model requests use, and ``chosen["account"]`` receives it. An account whose login is unusable is
        skipped while others remain; with a single account the error is the one a single login has always
        given."""
        accounts: Accounts | None = ctx.state.get("accounts")
        if accounts is None:
            raise ProxyError(503, f"{ctx.name} is not started")
        if call is not None and not accounts.single:
            session = affinity_key(call)
        failure: CredentialError | None = None
        while True:
            try:
                account = accounts.choose(session, tried, rotate=call is not None)
            except ProxyError:
                if failure is None:
                    raise
                break
            try:
                credential = await account.credential()
            except CredentialError as exc:
                failure = exc
                if accounts.single:
                    break
                accounts.login_needed(account)
                tried = (*tried, account)
                continue
            if chosen is not None:  # a side request that wants the account too (plan usage)
                chosen["account"] = account
            if call is not None:
                call.state["account"] = account
                event = call.state.get("event")
                if event is not None:
                    event.account = account.name
                    if not accounts.single and "scope" in call.state:
                        call.state["scope"]["account"] = account.name  # for the access log
            return credential
        raise ProxyError(
            401,
            f"{failure.message} (log in with `{self.login_command}`)"
            if self.login_command not in failure.message
            else failure.message,
            error_type="authentication_error",
        ) from None

    async def health(self, ctx: PluginContext) -> list[HealthCheck]:
        settings: ProviderSettings = ctx.settings
        if settings.access_token is not None:
            return [
                HealthCheck("credentials", "pass", "static access token configured", {"source": "config"})
            ]
        tokens: TokenManager | None = ctx.state.get("tokens")
        if tokens is None:
            return [HealthCheck("credentials", "warn", "not started")]
        info = await tokens.status()
        state = info["state"]
        status: Literal["pass", "warn"] = "pass" if state == "valid" else "warn"
        output = {
            "valid": f"logged in via {info['source']}",
            "expired": f"credentials expired; refreshed on the next request, or run `{self.login_command}`",
            "missing": f"no credentials; run `{self.login_command}`",
            "invalid": f"credentials unusable: {info.get('error') or 'invalid'}; run `{self.login_command}`",
        }[state]
        details = {
            k: info.get(k) for k in ("state", "source", "plan", "expires_at") if info.get(k) is not None
        }
        return [HealthCheck("credentials", status, output, details)]

    def upstream(self, ctx: PluginContext) -> _Upstream:
        if "upstream" not in ctx.state:
            ctx.state["upstream"] = _Upstream(self, ctx)
        upstream: _Upstream = ctx.state["upstream"]
        return upstream

    def endpoint(self, ctx: PluginContext, client: Format, upstream_path: str) -> ASGIApp:
        """A raw ASGI route app that sends ``client``-format requests through the shared data path."""
        proxy = ctx.proxy
        assert proxy is not None
        return _Endpoint(proxy, self.upstream(ctx), client, upstream_path)

    def response_routes(self, ctx: PluginContext, path: str) -> list[Route]:
        """``GET`` and ``DELETE {path}/{response_id}``: the responses kept for ``previous_response_id``."""
        store = self.upstream(ctx).responses
        assert store is not None

        def not_found(response_id: str) -> Response:
            info = ErrorInfo(
                404, "invalid_request_error", f"Response with id '{response_id}' not found.", "response_id"
            )
            return error_response(Format.RESPONSES, info)

        async def get_response(request: Request) -> Response:
            response_id = request.path_params["response_id"]
            kept = await store.get(response_id)
            if kept is None:
                return not_found(response_id)
            return Response(orjson.dumps(kept.decode()["response"]), media_type="application/json")

        async def delete_response(request: Request) -> Response:
            response_id = request.path_params["response_id"]
            if not await store.delete(response_id):
                return not_found(response_id)
            body = {"id": response_id, "object": "response", "deleted": True}
            return Response(orjson.dumps(body), media_type="application/json")

        return [
            Route(path + "/{response_id}", get_response, methods=["GET"]),
            Route(path + "/{response_id}", delete_response, methods=["DELETE"]),
        ]


class _Endpoint:
    """Mounted as a Starlette route's app: no Request object or exception wrapper per call."""

    __slots__ = ("client", "path", "provider", "proxy")

    def __init__(self, proxy: Proxy, provider: _Upstream, client: Format, path: str) -> None:
        self.proxy, self.provider, self.client, self.path = proxy, provider, client, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.proxy.serve(scope, receive, send, self.provider, self.client, self.path)


def _spec(provider: ProviderName, settings: OAuthSettings | None) -> Any:
    if provider == "claude":
        from ccproxy.auth.claude import claude_provider

        return claude_provider(settings)
    from ccproxy.auth.codex import codex_provider

    return codex_provider(settings)


def affinity_key(call: Call) -> str | None:
    """The conversation a request belongs to (path, session headers, ``prompt_cache_key``), or None."""
    session = call.session_id or session_header(call.headers)
    if session:
        return session
    key = call.body.get("prompt_cache_key")
    return key if isinstance(key, str) and key else None


def static_credential(token: str, provider: ProviderName) -> Credential:
    return Credential(access_token=token, source="config", account_id=f"{provider}-static")


async def side_endpoint(request: Request) -> Response:
    """Claude Code's telemetry and probes on its base URL: answered here, never forwarded anywhere."""
    return Response(b"{}", media_type="application/json")
