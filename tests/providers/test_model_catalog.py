"""Issue 12 item 4: a live model catalog per provider (the upstream's own list, cached, refreshed in the
background, a built-in fallback, configured extras), family aliases following the newest model, and
``GET /v1/models/{id}`` for every listed id."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from ccproxy.providers.models import ModelCatalog, ModelInfo, family_of
from ccproxy.testing.fake_anthropic import MODELS as FAKE_CLAUDE_MODELS
from ccproxy.testing.fake_codex import MODELS as FAKE_CODEX_MODELS

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, Fakes, MakeProxy

TOKENS = {"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN}
EXTRA = {
    "id": "claude-private-preview",
    "display_name": "Preview",
    "context_window": 1000,
    "max_output_tokens": 10,
}


def test_claude_catalog_is_the_upstreams_list(proxy: str, fakes: Fakes) -> None:
    claude = anthropic.Anthropic(base_url=proxy + "/api", api_key="x", max_retries=0)
    ids = [m.id for m in claude.models.list(limit=1000).data]
    assert ids == [m["id"] for m in FAKE_CLAUDE_MODELS]
    for model_id in ids:  # every listed id answers
        assert claude.models.retrieve(model_id).id == model_id
    # the family aliases follow the newest model of the family in that list
    assert claude.models.retrieve("opus").id == "claude-opus-5-5"
    message = claude.messages.create(
        model="opus", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.model == "opus"
    assert fakes.anthropic.last_request.json["model"] == "claude-opus-5-5"
    oai = openai.OpenAI(base_url=proxy + "/api/v1", api_key="x", max_retries=0)
    assert [m.id for m in oai.models.list().data] == ids
    assert oai.models.retrieve("haiku").id == "claude-haiku-4-5-20251001"


def test_codex_catalog_is_the_backends_list(proxy: str) -> None:
    client = openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="x", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert ids == [m["slug"] for m in FAKE_CODEX_MODELS]
    for model_id in ids:
        assert client.models.retrieve(model_id).id == model_id


def test_fallback_and_extra_models_when_the_upstream_is_unreachable(
    make_proxy: MakeProxy, closed_port: int
) -> None:
    settings = {
        **TOKENS,
        "plugins.claude_api.base_url": f"http://127.0.0.1:{closed_port}",
        "plugins.codex.base_url": f"http://127.0.0.1:{closed_port}/backend-api/codex",
        "plugins.claude_api.extra_models": [EXTRA],
    }
    with make_proxy(**settings) as url:
        claude = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
        ids = [m.id for m in claude.models.list().data]
        assert ids[:2] == ["claude-opus-4-5", "claude-sonnet-4-5"] and ids[-1] == EXTRA["id"]
        assert claude.models.retrieve("sonnet").id == "claude-sonnet-4-5"
        assert claude.models.retrieve(EXTRA["id"]).id == EXTRA["id"]
        codex = openai.OpenAI(base_url=url + "/api/codex/v1", api_key="x", max_retries=0)
        assert "gpt-5.5" in [m.id for m in codex.models.list().data]


def test_extra_models_join_the_live_list(make_proxy: MakeProxy) -> None:
    with make_proxy(**TOKENS, **{"plugins.claude_api.extra_models": [EXTRA]}) as url:
        client = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        ids = [m.id for m in client.models.list(limit=1000).data]
        assert "claude-opus-5-5" in ids and ids[-1] == EXTRA["id"]


def _model(model_id: str, created: str) -> ModelInfo:
    return ModelInfo(
        id=model_id, display_name=model_id, context_window=1, max_output_tokens=1, created_at=created
    )


def test_family_of() -> None:
    assert family_of("claude-sonnet-4-5-20250929") == "sonnet"
    assert family_of("claude-3-5-haiku-20241022") == "haiku"
    assert family_of("gpt-5.5") is None


def test_catalog_refreshes_in_the_background_and_keeps_the_last_good_list() -> None:
    builtin = [_model("claude-sonnet-4", "2025-01-01T00:00:00Z")]
    lists = [
        [_model("claude-sonnet-5", "2026-01-01T00:00:00Z")],
        RuntimeError("unreachable"),
        [
            _model("claude-sonnet-6", "2027-01-01T00:00:00Z"),
            _model("claude-sonnet-5", "2026-01-01T00:00:00Z"),
        ],
    ]
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> list[ModelInfo]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await gate.wait()
        result = lists[calls - 1]
        if isinstance(result, Exception):
            raise result
        return result

    async def scenario() -> None:
        catalog = ModelCatalog(builtin, [], fetch, refresh_seconds=0.05, families=("sonnet",))
        assert [m.id for m in catalog.models] == ["claude-sonnet-4"]  # nothing fetched before first use
        assert await catalog.resolve_family("sonnet") == "claude-sonnet-5"  # the first use waits once
        await asyncio.sleep(0.06)
        # Due: a refresh starts in the background; the answer does not wait for it.
        assert [m.id for m in await catalog.current()] == ["claude-sonnet-5"]
        gate.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert catalog.source == "upstream" and calls == 2  # the failed refresh kept the last good list
        assert await catalog.resolve_family("sonnet") == "claude-sonnet-5"
        catalog._next = 0.0  # the retry is due
        await catalog.current()
        assert catalog._task is not None
        await catalog._task
        assert await catalog.resolve_family("sonnet") == "claude-sonnet-6"
        assert await catalog.resolve_family("gpt-5") == "gpt-5"
        await catalog.close()

    asyncio.run(scenario())


def test_refresh_zero_serves_the_builtin_list_only() -> None:
    async def fetch() -> list[ModelInfo]:
        raise AssertionError("must not fetch")

    async def scenario() -> None:
        catalog = ModelCatalog(
            [_model("claude-opus-4", "2025")], [], fetch, refresh_seconds=0, families=("opus",)
        )
        assert await catalog.resolve_family("opus") == "claude-opus-4"

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/codex/v1/models"])
def test_model_routes_stay_behind_the_auth_token(make_proxy: MakeProxy, path: str) -> None:
    import httpx

    with make_proxy(**TOKENS, **{"security.auth_token": "s3cret"}) as url:
        assert httpx.get(url + path).status_code == 401
        assert httpx.get(url + path, headers={"authorization": "Bearer s3cret"}).status_code == 200
