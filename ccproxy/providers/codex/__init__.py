"""Codex provider (``/api/codex``): a ChatGPT subscription behind the Responses, Chat Completions and
Anthropic Messages APIs, through the ChatGPT Codex backend (which only streams)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import orjson
import structlog
from pydantic import Field
from starlette.requests import Request
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from ccproxy.accounts import Quota
from ccproxy.auth.codex import CodexClaims
from ccproxy.auth.credential import Credential
from ccproxy.errors import ProxyError
from ccproxy.formats.aliases import AliasRule
from ccproxy.formats.base import Format
from ccproxy.plugins import PluginContext
from ccproxy.providers.base import ProviderPlugin, ProviderSettings, affinity_key, side_endpoint
from ccproxy.providers.codex.rules import QUOTA_HEADERS, backend_body, parse_quota, usage_from_quota
from ccproxy.providers.models import ModelInfo, model_routes
from ccproxy.providers.plan_usage import usage_route
from ccproxy.proxy import Call, Outbound

log = structlog.get_logger("ccproxy.codex")
CODEX_VERSION = "0.169.0"


def _gpt(model_id: str, name: str) -> ModelInfo:
    return ModelInfo(id=model_id, display_name=name, context_window=272_000, max_output_tokens=128_000)


CODEX_MODELS = [
    _gpt("gpt-5.5", "GPT-5.5"),
    _gpt("gpt-5.4", "GPT-5.4"),
    _gpt("gpt-5.3-codex", "GPT-5.3 Codex"),
    _gpt("gpt-5.2-codex", "GPT-5.2 Codex"),
    _gpt("gpt-5.2", "GPT-5.2"),
]


class CodexSettings(ProviderSettings):
    oauth_provider: ClassVar[Any] = "codex"

    base_url: str = Field("https://chatgpt.com/backend-api/codex", description="Codex backend base URL")
    originator: str = Field("codex_cli_rs", description="originator header (Codex client identity)")
    client_version: str = Field(CODEX_VERSION, description="version header; keep it a current Codex CLI")
    user_agent: str = Field(
        f"codex_cli_rs/{CODEX_VERSION} (Debian 12.0.0; x86_64) xterm-256color",
        description="User agent; the backend gates newer models on a current Codex identity",
    )
    openai_beta: str = Field("responses=experimental", description="OpenAI-Beta header")
    models: list[ModelInfo] = Field(
        default_factory=lambda: list(CODEX_MODELS),
        description="Built-in catalog for /api/codex/v1/models, served while the backend's cannot be fetched",
    )
    # GPT model names are never rewritten (the backend gates them on client identity, not on us); only
    # Claude names, which Claude Code sends by default and the backend cannot serve, get a default.
    aliases: list[AliasRule] = Field(
        default_factory=lambda: [AliasRule(match="claude-", kind="prefix", target="gpt-5.5")],
        description="Model aliases; by default Claude model names map to gpt-5.5",
    )


class CodexPlugin(ProviderPlugin):
    name = "codex"
    settings_model = CodexSettings
    default_enabled = False
    upstream_format = Format.RESPONSES
    auth_provider = "codex"
    login_command = "ccproxy auth login codex"
    prefix = "/api/codex"
    enable_hint = "enable it with `ccproxy config codex --enable` (or PLUGINS__CODEX__ENABLED=true)"
    parse_quota = staticmethod(parse_quota)
    quota_headers = QUOTA_HEADERS

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        s: CodexSettings = ctx.settings
        responses = self.endpoint(ctx, Format.RESPONSES, "/responses")
        chat = self.endpoint(ctx, Format.CHAT, "/responses")
        messages = self.endpoint(ctx, Format.ANTHROPIC, "/responses")
        adapter, proxy = self.upstream(ctx), ctx.proxy
        assert proxy is not None

        async def socket(websocket: WebSocket) -> None:
            from ccproxy.providers.codex.websocket import ResponsesSocket

            await ResponsesSocket(websocket, proxy, adapter).run()

        # Literal paths first: "/api/codex/v1/responses" must not read as session "v1".
        return [
            WebSocketRoute("/api/codex/responses", socket),
            WebSocketRoute("/api/codex/v1/responses", socket),
            *self.response_routes(ctx, "/api/codex/v1/responses"),
            *self.response_routes(ctx, "/api/codex/responses"),
            Route("/api/codex/responses", responses, methods=["POST"]),
            Route("/api/codex/v1/responses", responses, methods=["POST"]),
            Route("/api/codex/chat/completions", chat, methods=["POST"]),
            Route("/api/codex/v1/chat/completions", chat, methods=["POST"]),
            Route("/api/codex/v1/messages", messages, methods=["POST"]),
            *model_routes("/api/codex/v1/models", self.upstream(ctx).catalog, s.aliases, "openai"),
            *self._usage_routes(ctx),
            Route("/api/codex/api/{rest:path}", side_endpoint, methods=["GET", "HEAD", "POST"]),
            Route("/api/codex/{session_id}/responses", responses, methods=["POST"]),
            WebSocketRoute("/api/codex/{session_id}/responses", socket),
            WebSocketRoute("/api/codex/{session_id}/v1/responses", socket),
            Route("/api/codex/{session_id}/chat/completions", chat, methods=["POST"]),
            Route("/api/codex/{session_id}/v1/responses", responses, methods=["POST"]),
            Route("/api/codex/{session_id}/v1/chat/completions", chat, methods=["POST"]),
            Route("/api/codex/{session_id}/v1/messages", messages, methods=["POST"]),
        ]

    def _usage_routes(self, ctx: PluginContext) -> list[Route]:
        """The Codex CLI's plan usage (``/status``) and workspace check, for a ``chatgpt_base_url`` of
        ``…/api/codex/backend-api/`` (its ``/wham/…`` paths) or ``…/api/codex`` (``/api/codex/usage``)."""
        s: CodexSettings = ctx.settings
        backend = s.base_url.rstrip("/").removesuffix("/codex")  # https://chatgpt.com/backend-api

        def target(upstream_path: str) -> Callable[[Request, Credential], tuple[str, dict[str, str]]]:
            def build(request: Request, credential: Credential) -> tuple[str, dict[str, str]]:
                query = request.url.query
                headers = {**self._headers(s, credential), "accept": "application/json"}
                return backend + upstream_path + (f"?{query}" if query else ""), headers

            return build

        what = "the ChatGPT backend's {} endpoint"
        usage, check = target("/wham/usage"), target("/wham/accounts/check")
        routes = []

        def from_headers(quota: Quota, now: float, credential: Credential) -> dict[str, Any]:
            return usage_from_quota(quota, now, credential.plan)

        for path, build, name, fallback in [
            ("/api/codex/backend-api/wham/usage", usage, "plan-usage", from_headers),
            ("/api/codex/wham/usage", usage, "plan-usage", from_headers),
            ("/api/codex/api/codex/usage", usage, "plan-usage", from_headers),
            ("/api/codex/backend-api/wham/accounts/check", check, "accounts/check", None),
            ("/api/codex/wham/accounts/check", check, "accounts/check", None),
        ]:
            routes.append(usage_route(path, self, ctx, Format.RESPONSES, build, what.format(name), fallback))
        return routes

    def build(self, ctx: PluginContext, call: Call, credential: Credential) -> Outbound:
        s: CodexSettings = ctx.settings
        session = _session_id(call)
        body, removed = backend_body(call.body, session)
        if removed:
            log.debug("removed fields the Codex backend rejects", fields=removed, request_id=call.request_id)
        headers = self._headers(s, credential)
        headers.update(
            {"session_id": session, "accept": "text/event-stream", "content-type": "application/json"}
        )
        return Outbound(s.base_url.rstrip("/") + call.upstream_path, headers, orjson.dumps(body))

    def _headers(self, s: CodexSettings, credential: Credential) -> dict[str, str]:
        """The Codex CLI identity and the account every backend call carries."""
        account_id = credential.account_id
        if not account_id or account_id.endswith("-static"):
            account_id = CodexClaims(credential.id_token, credential.access_token).account_id
        if not account_id:
            raise ProxyError(
                401,
                f"the ChatGPT token carries no account id; run `{self.login_command}`",
                error_type="authentication_error",
            )
        return {
            "authorization": f"Bearer {credential.access_token}",
            "chatgpt-account-id": account_id,
            "originator": s.originator,
            "version": s.client_version,
            "openai-beta": s.openai_beta,
            "user-agent": s.user_agent,
        }

    async def fetch_models(self, ctx: PluginContext) -> list[ModelInfo]:
        """The backend's catalog, as the Codex CLI reads it (upstreams.md §6.6): ``{"models": [{slug}]}``."""
        s: CodexSettings = ctx.settings
        headers = {**self._headers(s, await self.credential(ctx)), "accept": "application/json"}
        url = f"{s.base_url.rstrip('/')}/models?client_version={s.client_version}"
        data = await self.upstream_json(ctx, url, headers)
        return [
            ModelInfo(
                id=m["slug"],
                display_name=str(m.get("display_name") or m["slug"]),
                context_window=int(m.get("context_window") or 272_000),
                max_output_tokens=int(m.get("max_output_tokens") or 128_000),
            )
            for m in data.get("models") or []
            if isinstance(m, dict) and isinstance(m.get("slug"), str)
        ]

    def mock_settings(self, fake_base_url: str) -> dict[str, Any]:
        from ccproxy.testing.fake_oauth import make_unsigned_jwt

        token = make_unsigned_jwt(
            {
                "exp": 4102444800,
                "email": "offline@example.invalid",
                "https://api.openai.com/auth": {
                    "chatgpt_account_id": "acct-offline",
                    "chatgpt_plan_type": "pro",
                },
            }
        )
        return {
            "enabled": True,
            "base_url": f"{fake_base_url}/backend-api/codex",
            "access_token": token,
            "oauth": {
                "token_url": f"{fake_base_url}/codex/oauth/token",
                "authorize_url": f"{fake_base_url}/codex/oauth/authorize",
            },
        }


def _session_id(call: Call) -> str:
    """One conversation's stable id: the path's, the client's header, its prompt_cache_key, else new."""
    key = affinity_key(call)
    if key is not None:
        return key
    session: str = call.state.setdefault("session_id", str(uuid.uuid4()))
    return session


plugin = CodexPlugin()
