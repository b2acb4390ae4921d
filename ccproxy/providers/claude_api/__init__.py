"""Claude API provider (``/api``): the user's Claude subscription behind the Anthropic Messages API,
and, through the translation core, behind Chat Completions and Responses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ccproxy.auth.credential import Credential
from ccproxy.formats.aliases import AliasRule
from ccproxy.formats.base import Format
from ccproxy.plugins import PluginContext
from ccproxy.providers.base import ProviderPlugin, ProviderSettings, forwardable, side_endpoint
from ccproxy.providers.claude_api.rules import (
    QUOTA_HEADERS,
    ensure_identity,
    limit_cache_control,
    merge_betas,
    parse_quota,
    usage_from_quota,
)
from ccproxy.providers.models import CLAUDE_ALIASES, CLAUDE_FAMILIES, CLAUDE_MODELS, ModelInfo, model_routes
from ccproxy.providers.plan_usage import usage_route
from ccproxy.proxy import Call, Outbound

IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."


class ClaudeAPISettings(ProviderSettings):
    oauth_provider: ClassVar[Any] = "claude"

    base_url: str = Field("https://api.anthropic.com", description="Anthropic API base URL")
    anthropic_version: str = Field(
        "2023-06-01", description="anthropic-version sent when the client sends none"
    )
    required_betas: list[str] = Field(
        default_factory=lambda: ["claude-code-20250219", "oauth-2025-04-20"],
        description="Betas an OAuth call needs; merged with the client's own, nothing else is added",
    )
    system_identity: str = Field(
        IDENTITY, description="System block an OAuth call opens with (empty string: do not add)"
    )
    aliases: list[AliasRule] = Field(
        default_factory=lambda: list(CLAUDE_ALIASES), description="Model aliases, first match wins"
    )
    models: list[ModelInfo] = Field(
        default_factory=lambda: list(CLAUDE_MODELS),
        description="Built-in catalog for /api/v1/models, served while Anthropic's list cannot be fetched",
    )


class ClaudeAPIPlugin(ProviderPlugin):
    name = "claude_api"
    settings_model = ClaudeAPISettings
    upstream_format = Format.ANTHROPIC
    auth_provider = "claude"
    login_command = "ccproxy auth login"
    prefix = "/api"
    model_families = CLAUDE_FAMILIES
    parse_quota = staticmethod(parse_quota)
    quota_headers = QUOTA_HEADERS

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        s: ClaudeAPISettings = ctx.settings
        messages = self.endpoint(ctx, Format.ANTHROPIC, "/v1/messages")
        return [
            Route("/api/v1/messages", messages, methods=["POST"]),
            Route(
                "/api/v1/messages/count_tokens",
                self.endpoint(ctx, Format.ANTHROPIC, "/v1/messages/count_tokens"),
                methods=["POST"],
            ),
            Route(
                "/api/v1/chat/completions", self.endpoint(ctx, Format.CHAT, "/v1/messages"), methods=["POST"]
            ),
            Route(
                "/api/v1/responses", self.endpoint(ctx, Format.RESPONSES, "/v1/messages"), methods=["POST"]
            ),
            *self.response_routes(ctx, "/api/v1/responses"),
            *model_routes("/api/v1/models", self.upstream(ctx).catalog, s.aliases, "anthropic"),
            # Claude Code's plan usage (its /status and status line), then its probes and telemetry, on its
            # base URL (ANTHROPIC_BASE_URL=.../api).
            usage_route(
                "/api/api/oauth/usage",
                self,
                ctx,
                Format.ANTHROPIC,
                lambda request, credential: self._usage_target(s, request, credential),
                "Anthropic's plan-usage endpoint",
                lambda quota, now, credential: usage_from_quota(quota, now),
            ),
            Route("/api/api/{rest:path}", side_endpoint, methods=["GET", "HEAD", "POST"]),
        ]

    def build(self, ctx: PluginContext, call: Call, credential: Credential) -> Outbound:
        s: ClaudeAPISettings = ctx.settings
        body = call.body
        changed = body.get("model") != call.client_model  # an alias was applied
        changed |= ensure_identity(body, s.system_identity)
        changed |= limit_cache_control(body)
        if changed:
            # The rules edit call.body in place, so a rebuild (the 401 retry) finds nothing left to change:
            # the client's bytes are stale from now on and must not be sent instead of the edited body.
            call.raw = None
        headers = forwardable(call.headers)
        headers["authorization"] = f"Bearer {credential.access_token}"
        headers["anthropic-version"] = call.headers.get("anthropic-version") or s.anthropic_version
        headers["anthropic-beta"] = merge_betas(call.headers.get("anthropic-beta"), s.required_betas)
        headers["content-type"] = "application/json"
        if call.client_format is not Format.ANTHROPIC:
            # OpenAI SDK headers mean nothing to Anthropic; keep only what identifies the client.
            headers = {k: v for k, v in headers.items() if not k.startswith(("x-stainless-", "openai-"))}
        url = s.base_url.rstrip("/") + call.upstream_path + (f"?{call.query}" if call.query else "")
        return Outbound(url, headers, call.raw if call.raw is not None else orjson.dumps(body))

    def _side_headers(self, s: ClaudeAPISettings, credential: Credential) -> dict[str, str]:
        """What a GET of the account's own data (model list, plan usage) carries."""
        return {
            "authorization": f"Bearer {credential.access_token}",
            "anthropic-version": s.anthropic_version,
            "anthropic-beta": merge_betas(None, s.required_betas),
            "accept": "application/json",
        }

    def _usage_target(
        self, s: ClaudeAPISettings, request: Request, credential: Credential
    ) -> tuple[str, dict[str, str]]:
        query = request.url.query
        url = s.base_url.rstrip("/") + "/api/oauth/usage" + (f"?{query}" if query else "")
        headers = self._side_headers(s, credential)
        if agent := request.headers.get("user-agent"):
            headers["user-agent"] = agent
        return url, headers

    async def fetch_models(self, ctx: PluginContext) -> list[ModelInfo]:
        s: ClaudeAPISettings = ctx.settings
        headers = self._side_headers(s, await self.credential(ctx))
        data = await self.upstream_json(ctx, s.base_url.rstrip("/") + "/v1/models?limit=1000", headers)
        known = {m.id: m for m in s.models}
        return [
            ModelInfo(
                id=m["id"],
                display_name=str(m.get("display_name") or m["id"]),
                context_window=int(m.get("max_input_tokens") or _known(known, m["id"], "context_window")),
                max_output_tokens=int(m.get("max_tokens") or _known(known, m["id"], "max_output_tokens")),
                created_at=str(m.get("created_at") or "1970-01-01T00:00:00Z"),
            )
            for m in data.get("data") or []
            if isinstance(m, dict) and isinstance(m.get("id"), str)
        ]

    def mock_settings(self, fake_base_url: str) -> dict[str, Any]:
        return {
            "base_url": fake_base_url,
            "access_token": "sk-ant-oat01-offline-mode-throwaway-token",
            "oauth": {
                "token_url": f"{fake_base_url}/v1/oauth/token",
                "authorize_url": f"{fake_base_url}/oauth/authorize",
            },
        }


def _known(known: dict[str, ModelInfo], model_id: str, field: str) -> int:
    """A limit the list does not give: the built-in entry's (dated ids match their undated alias)."""
    entry = known.get(model_id) or next((m for i, m in known.items() if model_id.startswith(i + "-")), None)
    value: int = (
        getattr(entry, field) if entry is not None else (200_000 if field == "context_window" else 64_000)
    )
    return value


plugin = ClaudeAPIPlugin()
