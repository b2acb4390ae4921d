"""Protocol-faithful fake upstreams for tests, benchmarks and the offline mode (``ccproxy serve --mock``).

Combined app (``create_fake_upstreams()``, served by ``ccproxy dev fake-upstream --port N`` through
``run_fake_upstreams``), one port:

====================================  =============================================================
path                                  served by
====================================  =============================================================
``POST /v1/messages[?beta=true]``     fake Anthropic Messages (JSON or SSE) — ``fake_anthropic``
``POST /v1/messages/count_tokens``    fake Anthropic
``GET  /v1/models``, ``/v1/models/{id}``  fake Anthropic
``POST /backend-api/codex/responses``  fake ChatGPT Codex backend (SSE only) — ``fake_codex``
``GET  /backend-api/wham/usage``       fake Codex plan usage; ``/wham/accounts/check`` its workspace
``GET  /api/oauth/usage``              fake Claude plan usage (both: ``FakeUpstream.plan_usage``)
OAuth token/profile paths             ``ccproxy.testing.fake_oauth.create_app()``, when that module
                                      exists, at the paths its own routes declare
``GET|POST /corpus/cases/{case_id}``  any conformance-corpus case, as recorded — ``corpus``
====================================  =============================================================

So a proxy under test points its Claude upstream at ``<url>`` and its Codex upstream at
``<url>/backend-api/codex``. The app's recorders are ``app.state.anthropic`` and ``app.state.codex``.

Scripting a test (see ``scripting`` for the reply types and the default rules)::

    with running_fake_upstreams() as fakes:
        fakes.anthropic.reply_text("hello", thinking="hmm")
        fakes.codex.reply_tool_call("exec_command", {"cmd": "ls"})
        ...  # drive the proxy/SDK at fakes.url
        assert fakes.anthropic.last_request.json["model"] == "claude-sonnet-4-5"
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from ccproxy.testing import corpus, fake_anthropic, fake_codex
from ccproxy.testing.scripting import (
    Completion,
    Conversation,
    CorpusReply,
    ErrorReply,
    FakeUpstream,
    PlanUsage,
    RawReply,
    RecordedRequest,
    Reply,
    StreamErrorReply,
    ToolCall,
    default_text,
    tool_output_text,
)
from ccproxy.testing.server import BackgroundServer, serve_app

__all__ = [
    "BackgroundServer",
    "Completion",
    "Conversation",
    "CorpusReply",
    "ErrorReply",
    "FakeUpstream",
    "PlanUsage",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "RunningFakes",
    "StreamErrorReply",
    "ToolCall",
    "create_fake_upstreams",
    "default_text",
    "run_fake_upstreams",
    "running_fake_upstreams",
    "serve_app",
    "tool_output_text",
]


def _oauth_routes() -> list[BaseRoute]:
    """Routes forwarding the fake OAuth app's own paths to it unchanged (it sees the full path)."""
    try:
        module = importlib.import_module("ccproxy.testing.fake_oauth")
    except ModuleNotFoundError as exc:
        if exc.name == "ccproxy.testing.fake_oauth":
            return []
        raise
    create_app = getattr(module, "create_app", None)
    if create_app is None:
        return []
    app = create_app()
    routes: list[BaseRoute] = []
    for route in getattr(app, "routes", []):
        if isinstance(route, Mount):
            routes.append(Route(route.path + "/{rest:path}", app))
        elif isinstance(route, Route | WebSocketRoute):
            routes.append(
                Route(route.path, app) if isinstance(route, Route) else WebSocketRoute(route.path, app)
            )
    return routes


def create_fake_upstreams(
    anthropic: FakeUpstream | None = None, codex: FakeUpstream | None = None
) -> Starlette:
    """All fakes on one app (layout in the module docstring)."""
    claude = fake_anthropic.AnthropicFake(anthropic)
    backend = fake_codex.create_app(codex)
    app = Starlette(
        routes=[
            Mount("/backend-api/codex", app=backend),
            Route("/backend-api/wham/{rest:path}", backend),  # it sees the full path
            Mount("/corpus", app=corpus.create_app()),
            *_oauth_routes(),
            *claude.routes,
        ]
    )
    app.state.anthropic = claude.upstream
    app.state.codex = backend.state.upstream
    return app


def run_fake_upstreams(host: str = "127.0.0.1", port: int = 8765, **uvicorn_options: Any) -> None:
    """Serve the combined fake app in the foreground (for ``ccproxy dev fake-upstream``)."""
    import uvicorn

    uvicorn.run(create_fake_upstreams(), host=host, port=port, **uvicorn_options)


@dataclass(frozen=True)
class RunningFakes:
    url: str  # Anthropic base URL; the Codex backend is at codex_url
    anthropic: FakeUpstream
    codex: FakeUpstream

    @property
    def codex_url(self) -> str:
        return self.url + "/backend-api/codex"

    def reset(self) -> None:
        self.anthropic.reset()
        self.codex.reset()


@contextmanager
def running_fake_upstreams() -> Iterator[RunningFakes]:
    """The combined fake app on a free loopback port."""
    anthropic, codex = FakeUpstream("anthropic"), FakeUpstream("codex")
    with serve_app(create_fake_upstreams(anthropic, codex)) as url:
        yield RunningFakes(url, anthropic, codex)
