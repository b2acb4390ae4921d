"""Claude SDK mode (``/claude``): the local Claude Code agent, through ``claude-agent-sdk``, behind the
Anthropic Messages, Chat Completions and Responses APIs.

Requests go through the shared data path (``ccproxy.proxy``) like every provider's: the translation core
turns Chat/Responses bodies into Anthropic ones and the agent's Anthropic stream events back, errors are
answered in the caller's format, lifecycle hooks see usage and cost. Only the "upstream" differs: instead
of an HTTP call, ``AgentTransport`` runs a turn of a live agent conversation (``sessions``) and hands its
events over as an upstream response.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog
from pydantic import Field, SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Receive, Scope, Send

from ccproxy.config import SECTIONS
from ccproxy.errors import ProxyError, error_response, format_for
from ccproxy.formats.base import Format
from ccproxy.formats.errors import ErrorInfo
from ccproxy.plugins import HealthCheck, Plugin, PluginContext, PluginSettings
from ccproxy.providers.models import CLAUDE_MODELS, ModelCatalog, ModelInfo, model_routes
from ccproxy.proxy import Call, Outbound, Proxy, _read_body
from ccproxy.responses_store import ResponseStore

log = structlog.get_logger("ccproxy.claude_sdk")

PREFIX = "/claude"
INSTALL_HINT = "SDK mode needs claude-agent-sdk: pip install 'ccproxy-api[sdk]'"
SESSION_HEADERS = ("x-claude-code-session-id", "session_id", "session-id")
OFFLINE_KEY = "sk-ant-api03-ccproxy-offline-mode-dummy-key"
HYGIENE = {
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
}


class ClaudeSDKSettings(PluginSettings):
    cwd: str | None = Field(None, description="The agent's working directory (default: ccproxy's own)")
    base_url: str = Field(
        "", description="ANTHROPIC_BASE_URL for the agent; empty: the CLI's own endpoint and login"
    )
    api_key: SecretStr | None = Field(
        None, description="ANTHROPIC_API_KEY for the agent (offline mode sets one)"
    )
    cli_path: str | None = Field(
        None, description="The claude binary (default: the one bundled with the SDK)"
    )
    model: str | None = Field(None, description="Always use this model (default: the request's model)")
    permission_mode: Literal["default", "acceptEdits", "plan", "bypassPermissions"] = Field(
        "default", description="Claude Code permission mode; 'default' asks the permission service"
    )
    allowed_tools: list[str] = Field(
        default_factory=list, description="Tools the agent may use without asking"
    )
    disallowed_tools: list[str] = Field(default_factory=list, description="Tools the agent may never use")
    mcp_servers: dict[str, Any] = Field(default_factory=dict, description="MCP servers given to the agent")
    max_turns: int | None = Field(None, ge=1, description="Most model calls per request")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the agent")
    system_prompt_mode: Literal["append", "replace"] = Field(
        "append", description="append: the caller's system prompt follows Claude Code's own; replace: only it"
    )
    tool_display: Literal["text", "none"] = Field(
        "text", description="How the agent's tool calls and results appear in answers: text blocks, or not"
    )
    tool_result_chars: int = Field(2000, ge=0, description="Longest tool-result excerpt shown in answers")
    first_event_timeout: float = Field(120.0, gt=0, description="Seconds to the agent's first event")
    idle_timeout: float = Field(
        300.0, gt=0, description="Seconds between events (not while a person decides)"
    )
    interrupt_grace: float = Field(
        10.0, gt=0, description="Seconds an interrupted agent gets before it is killed"
    )
    max_sessions: int = Field(16, ge=1, description="Live sessions at most (least recently used evicted)")
    session_idle_seconds: float = Field(1800.0, gt=0, description="A session idle this long is closed")
    session_wait_seconds: float = Field(
        30.0, ge=0, description="A request to a busy session waits this long, then gets a 409"
    )
    throwaway_home: bool = Field(
        False, description="Give the agent a fresh HOME/CLAUDE_CONFIG_DIR (offline mode sets it)"
    )
    models: list[ModelInfo] = Field(
        default_factory=lambda: list(CLAUDE_MODELS), description="Catalog served by /claude/v1/models"
    )


def sdk_available() -> bool:
    """Whether claude-agent-sdk is installed, without importing it (that takes seconds)."""
    try:
        return importlib.util.find_spec("claude_agent_sdk") is not None
    except (ImportError, ValueError):
        return False


@dataclass(slots=True)
class Job:
    prompt: Any
    key: str | None
    model: str | None
    stream: bool
    event: Any


class AgentUpstream:
    """The ``ccproxy.proxy.Provider`` of SDK mode: no credentials, no HTTP; the turn is planned here."""

    upstream_format = Format.ANTHROPIC
    retry_attempts = 0
    retry_max_wait = 0.0

    def __init__(self, name: str, settings: ClaudeSDKSettings) -> None:
        self.name = name
        self.settings = settings
        self.jobs: dict[str, Job] = {}
        self._seq = 0

    async def prepare(self, call: Call) -> Outbound:
        from ccproxy.providers.claude_sdk.prompt import read_request

        prompt = read_request(call.body)
        event = call.state.get("event")
        if event is not None:
            event.session_id = call.session_id
        self._seq += 1
        url = f"claude-sdk:{self._seq}"
        model = self.settings.model or call.client_model
        self.jobs[url] = Job(prompt, call.session_id, model, call.stream, event)
        return Outbound(url, {}, b"")

    async def unauthorized(self, call: Call, failed: Outbound) -> Outbound | None:
        return None

    def observe(self, call: Call, resp: Any) -> None:
        return None  # the agent's answers carry no rate-limit headers

    async def failover(self, call: Call, resp: Any) -> Outbound | None:
        return None

    # The agent keeps its own conversations (sessions); no Responses are kept for previous_response_id.
    responses: ResponseStore | None = None

    def model_help(self) -> str:
        names = ", ".join(m.id for m in self.settings.models)
        return f"SDK mode serves {names} (plugins.claude_sdk.models / plugins.claude_sdk.model)"


class AgentTransport:
    """Stands where the shared data path's HTTP client stands: runs the turn ``prepare`` planned."""

    def __init__(self, upstream: AgentUpstream, ctx: PluginContext) -> None:
        self.upstream = upstream
        self.ctx = ctx

    async def send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        job = self.upstream.jobs.pop(url)
        pool = self.ctx.state.get("pool") or await _start_pool(self.ctx)
        return await pool.open(job.prompt, job.key, job.model, job.stream, job.event)


class Entry:
    """Route app: refuses server-only fields, finds the session id, then runs the shared data path."""

    __slots__ = ("fmt", "path", "proxy", "upstream")

    def __init__(self, proxy: Proxy, upstream: AgentUpstream, fmt: Format, path: str) -> None:
        self.proxy, self.upstream, self.fmt, self.path = proxy, upstream, fmt, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from ccproxy.providers.claude_sdk.prompt import refuse_server_options

        raw = await _read_body(receive)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None  # the data path answers it
        params = scope.setdefault("path_params", {})
        if isinstance(body, dict):
            try:
                refuse_server_options(body)
            except ProxyError as exc:
                await error_response(self.fmt, exc.info)(scope, receive, send)
                return
            if "session_id" in body:
                value = body.pop("session_id")
                if not params.get("session_id") and isinstance(value, str) and value:
                    params["session_id"] = value
                raw = orjson.dumps(body)
        if not params.get("session_id"):
            sid = _session_from(scope)
            if sid:
                params["session_id"] = sid
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            message: Message = await receive()
            return message

        await self.proxy.serve(scope, replay, send, self.upstream, self.fmt, self.path)


def _session_from(scope: Scope) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    if "session_id=" in query:
        from urllib.parse import parse_qs

        values: list[str] = parse_qs(query).get("session_id") or []
        if values and values[0]:
            return values[0]
    for name, value in scope.get("headers", ()):
        if name.decode("latin-1") in SESSION_HEADERS and value:
            return str(value.decode("latin-1"))
    return None


class ClaudeSDKPlugin(Plugin):
    name = "claude_sdk"
    settings_model = ClaudeSDKSettings
    prefix = PREFIX

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        if not sdk_available():
            log.warning("claude-agent-sdk is not installed; /claude answers 503", hint=INSTALL_HINT)
            return [Mount(PREFIX, app=_unavailable)]
        s: ClaudeSDKSettings = ctx.settings
        assert ctx.proxy is not None
        upstream = AgentUpstream(ctx.name, s)
        proxy = Proxy(AgentTransport(upstream, ctx), ctx, ctx.proxy.recorder)  # type: ignore[arg-type]
        routes: list[BaseRoute] = [
            Route(f"{PREFIX}/sessions", self._list_sessions(ctx), methods=["GET"]),
            Route(f"{PREFIX}/sessions/{{id}}", self._end_session(ctx), methods=["DELETE"]),
        ]
        catalog = ModelCatalog(list(s.models), [], None, 0)
        for base in (PREFIX, f"{PREFIX}/{{session_id}}"):
            for path, fmt in (
                ("/v1/messages", Format.ANTHROPIC),
                ("/v1/chat/completions", Format.CHAT),
                ("/v1/responses", Format.RESPONSES),
            ):
                routes.append(
                    Route(base + path, Entry(proxy, upstream, fmt, "/v1/messages"), methods=["POST"])
                )
            routes.extend(model_routes(base + "/v1/models", catalog, [], "anthropic"))
        return routes

    async def startup(self, ctx: PluginContext) -> None:
        """Only the throwaway home; the SDK (seconds to import) is loaded by the first /claude request."""
        s: ClaudeSDKSettings = ctx.settings
        if ctx.config.settings.server.workers > 1:
            log.warning(
                "SDK mode keeps sessions and permission requests in one process; with several workers a "
                "session id or a permission answer can land on another worker: use server.workers = 1"
            )
        if s.throwaway_home and sdk_available():
            home = Path(tempfile.mkdtemp(prefix="ccproxy-claude-home-"))
            ctx.state["home"] = home
            seed_home(home, s.cwd or os.getcwd(), s.api_key.get_secret_value() if s.api_key else "")

    async def shutdown(self, ctx: PluginContext) -> None:
        pool = ctx.state.pop("pool", None)
        if pool is not None:
            await pool.close_all()
        home = ctx.state.pop("home", None)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)

    async def health(self, ctx: PluginContext) -> list[HealthCheck]:
        if not sdk_available():
            return [HealthCheck("sdk", "warn", f"not installed; {INSTALL_HINT}")]
        sdk_version = importlib.metadata.version("claude-agent-sdk")
        pool = ctx.state.get("pool")
        live = len(pool.sessions) if pool is not None else 0
        return [HealthCheck("sdk", "pass", f"claude-agent-sdk {sdk_version}", {"sessions": live})]

    def mock_settings(self, fake_base_url: str) -> dict[str, Any]:
        return {"base_url": fake_base_url, "api_key": OFFLINE_KEY, "throwaway_home": True}

    @staticmethod
    def _list_sessions(ctx: PluginContext) -> Any:
        async def list_sessions(request: Request) -> Response:
            pool = ctx.state.get("pool")
            sessions = [s.info() for s in pool.sessions.values()] if pool is not None else []
            return Response(orjson.dumps({"sessions": sessions}), media_type="application/json")

        return list_sessions

    @staticmethod
    def _end_session(ctx: PluginContext) -> Any:
        async def end_session(request: Request) -> Response:
            pool = ctx.state.get("pool")
            key = request.path_params["id"]
            if pool is None or not await pool.end(key):
                info = ErrorInfo(404, "not_found_error", f"no live SDK session '{key}'")
                return error_response(Format.ANTHROPIC, info)
            return Response(orjson.dumps({"id": key, "ended": True}), media_type="application/json")

        return end_session


async def _start_pool(ctx: PluginContext) -> Any:
    lock: asyncio.Lock = ctx.state.setdefault("pool_lock", asyncio.Lock())
    async with lock:
        if "pool" not in ctx.state:
            s: ClaudeSDKSettings = ctx.settings
            # Imported here, once: claude-agent-sdk (and mcp) take seconds to import, in a thread so the
            # server keeps answering meanwhile.
            sessions = await asyncio.to_thread(
                importlib.import_module, "ccproxy.providers.claude_sdk.sessions"
            )
            env = agent_env(s, ctx.state.get("home"), os.environ)
            pool = sessions.SessionPool(s, _options_factory(s, env), ctx.permissions)
            pool.spawn(pool.reap())
            ctx.state["pool"] = pool
            log.info("SDK mode ready", sdk=importlib.metadata.version("claude-agent-sdk"))
    return ctx.state["pool"]


def agent_env(s: ClaudeSDKSettings, home: Path | None, environ: Any) -> dict[str, str]:
    """What the agent's process gets on top of ccproxy's environment (the SDK merges it over os.environ).

    ccproxy's own variables (``CCPROXY_*``, ``SECURITY__*``, ``PLUGINS__*``, ...) are blanked so no
    secret of the proxy reaches the agent; with ``api_key`` set (offline mode) the user's own Claude
    credentials are blanked too, so they can never go to the configured ``base_url``.
    """
    env = {k: "" for k in environ if _ccproxy_owned(k)}
    env["DISABLE_AUTOUPDATER"] = "1"
    if s.base_url:
        env.update(HYGIENE)
        env["ANTHROPIC_BASE_URL"] = s.base_url
    if s.api_key is not None:
        env.update(
            ANTHROPIC_API_KEY=s.api_key.get_secret_value(),
            ANTHROPIC_AUTH_TOKEN="",
            CLAUDE_CODE_OAUTH_TOKEN="",
        )
    if home is not None:
        env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    env.update(s.env)
    return env


def _ccproxy_owned(name: str) -> bool:
    if name.startswith("CCPROXY_"):
        return True
    head, sep, _ = name.partition("__")
    return bool(sep) and head.lower() in SECTIONS


def seed_home(home: Path, cwd: str, api_key: str) -> None:
    """A throwaway HOME the CLI accepts offline (upstreams.md §8.1): onboarding done, key and cwd trusted."""
    config_dir = home / ".claude"
    config_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": [api_key.strip()[-20:]] if api_key else [], "rejected": []},
        "projects": {str(Path(cwd).resolve()): {"hasTrustDialogAccepted": True, "allowedTools": []}},
    }
    for path in (home / ".claude.json", config_dir / ".claude.json"):
        path.write_text(json.dumps(state), encoding="utf-8")
        path.chmod(0o600)


def _options_factory(s: ClaudeSDKSettings, env: dict[str, str]) -> Any:
    from claude_agent_sdk import ClaudeAgentOptions

    cwd = s.cwd or os.getcwd()

    def stderr(line: str) -> None:
        log.debug("claude stderr", line=line[:500])

    def options(system: str | None, model: str | None, can_use_tool: Any) -> ClaudeAgentOptions:
        prompt: Any
        if s.system_prompt_mode == "replace":
            prompt = system or ""
        elif system:
            prompt = {"type": "preset", "preset": "claude_code", "append": system}
        else:
            prompt = {"type": "preset", "preset": "claude_code"}
        return ClaudeAgentOptions(
            cwd=cwd,
            cli_path=s.cli_path,
            env=dict(env),
            model=model,
            permission_mode=s.permission_mode,
            allowed_tools=list(s.allowed_tools),
            disallowed_tools=list(s.disallowed_tools),
            mcp_servers=dict(s.mcp_servers),
            max_turns=s.max_turns,
            system_prompt=prompt,
            include_partial_messages=True,
            can_use_tool=can_use_tool,
            stderr=stderr,
        )

    return options


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    fmt = format_for(scope.get("path", ""), headers)
    await error_response(fmt, ErrorInfo(503, "api_error", INSTALL_HINT))(scope, receive, send)


plugin = ClaudeSDKPlugin()
