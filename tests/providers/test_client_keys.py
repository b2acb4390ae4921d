"""Client keys (issue 15, item 6): who may call, how often, for how much; only hashes are stored."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import websockets
from typer.testing import CliRunner

from ccproxy.app import create_app
from ccproxy.cli import app as cli_app
from ccproxy.keys import (
    KeyFile,
    create_key,
    keys_path,
    load_gate,
    period_bounds,
    revoke_key,
    spend_path,
)
from ccproxy.plugins import RequestEvent, hookimpl
from ccproxy.testing import serve_app

from .conftest import CLAUDE_TOKEN, CODEX_TOKEN, Fakes, proxy_config

USER = [{"role": "user", "content": "hello"}]
SECRET = "ccproxy-local-secret-0123456789"
PRICE = 0.25  # what the stand-in for the pricing plugin charges per request


class FlatPrice:
    """Plays the pricing plugin (issue 14): sets ``cost_usd`` first, so the key gate sees it last."""

    @hookimpl(tryfirst=True)
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        event.cost_usd = PRICE
        self.clients.append(event.client)

    def __init__(self) -> None:
        self.clients: list[str | None] = []


@contextmanager
def keyed_proxy(fakes: Fakes, tmp: Path, price: FlatPrice | None = None, **cli: object) -> Iterator[str]:
    config = proxy_config(
        fakes,
        tmp,
        **{"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN},
        # a flat stand-in price makes the budget arithmetic exact; the shipped table would price by tokens
        **({"plugins.pricing.enabled": False} if price is not None else {}),
        **cli,
    )
    app = create_app(config)
    if price is not None:
        app.plugins.hooks.register(price, "flat_price")
    with serve_app(app) as url:
        yield url


def claude(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url + "/api", api_key=key, max_retries=0)


def ask(url: str, key: str) -> httpx.Response:
    body = {"model": "sonnet", "max_tokens": 5, "messages": USER}
    return httpx.post(url + "/api/v1/messages", json=body, headers={"x-api-key": key})


def test_key_admits_and_names_the_client_and_stays_local(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "laptop")
    price = FlatPrice()
    with keyed_proxy(fakes, tmp_path, price) as url:
        assert claude(url, key).messages.create(model="sonnet", max_tokens=5, messages=USER).content  # type: ignore[arg-type]
        chat = openai.OpenAI(base_url=url + "/api/codex/v1", api_key=key, max_retries=0)
        assert chat.chat.completions.create(model="gpt-5", messages=USER).choices  # type: ignore[arg-type]
        bad = ask(url, "ccp_not-a-key")
        assert bad.status_code == 401 and bad.json()["type"] == "error"
        assert "invalid ccproxy key" in bad.json()["error"]["message"]
        assert ask(url, "").status_code == 401
        assert httpx.get(url + "/health").status_code == 200
    assert price.clients == ["laptop", "laptop"]
    for request in [*fakes.anthropic.requests, *fakes.codex.requests]:
        assert key not in json.dumps(request.headers)


def test_auth_token_still_works_beside_keys(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "ci")
    with keyed_proxy(fakes, tmp_path, **{"security.auth_token": SECRET}) as url:
        assert ask(url, SECRET).status_code == 200
        assert ask(url, key).status_code == 200
        assert ask(url, "wrong").status_code == 401


def test_requests_and_spend_are_reported_per_key(fakes: Fakes, tmp_path: Path) -> None:
    """``/metrics`` counts requests and cost by key name, ``/usage?by=key`` (``ccproxy usage --by key``)
    groups the ledger by key, and a request admitted by the auth token is in neither key's spend."""
    alpha, beta = create_key(KeyFile(), "alpha"), create_key(KeyFile(), "beta")
    ledger = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
    settings = {"security.auth_token": SECRET, "ledger.url": ledger}
    with keyed_proxy(fakes, tmp_path, FlatPrice(), **settings) as url:
        for _ in range(2):  # the real SDKs, each with its key as its API key
            assert claude(url, alpha).messages.create(model="sonnet", max_tokens=5, messages=USER).content  # type: ignore[arg-type]
        chat = openai.OpenAI(base_url=url + "/api/codex/v1", api_key=beta, max_retries=0)
        assert chat.chat.completions.create(model="gpt-5", messages=USER).choices  # type: ignore[arg-type]
        assert ask(url, SECRET).status_code == 200  # the auth token: no key
        token = {"authorization": f"Bearer {SECRET}"}
        metrics = httpx.get(url + "/metrics", headers=token).text
        assert 'ccproxy_key_requests_total{key="alpha"} 2.0' in metrics
        assert 'ccproxy_key_requests_total{key="beta"} 1.0' in metrics
        assert 'ccproxy_key_cost_usd_total{key="alpha"} 0.5' in metrics
        assert 'ccproxy_key_cost_usd_total{key="beta"} 0.25' in metrics
        assert metrics.count("ccproxy_key_requests_total{") == 2  # the token's request names no key
        usage = httpx.get(url + "/usage", params={"by": "key"}, headers=token).json()
        by_key = {row["key"]: (row["requests"], row["cost_usd"]) for row in usage["rows"]}
        assert by_key == {"alpha": (2, 0.5), "beta": (1, 0.25), "(no key)": (1, 0.25)}
    assert json.loads(spend_path().read_text()).keys() == {"alpha", "beta"}


async def test_a_websocket_turn_counts_for_the_key_that_opened_it(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "socket")
    price = FlatPrice()
    with keyed_proxy(fakes, tmp_path, price) as url:
        ws_url = url.replace("http://", "ws://") + "/api/codex/v1/responses"
        async with websockets.connect(ws_url, additional_headers={"authorization": f"Bearer {key}"}) as ws:
            frame = {"type": "response.create", "model": "gpt-5", "input": "hi"}
            await ws.send(json.dumps(frame))
            while json.loads(await ws.recv())["type"] != "response.completed":
                pass
    assert price.clients == ["socket"]
    assert json.loads(spend_path().read_text())["socket"][1] == PRICE


def test_budget_runs_out_after_a_known_number_of_priced_requests(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "agent", budget_usd=1.0, period="day")
    with keyed_proxy(fakes, tmp_path, FlatPrice()) as url:
        for _ in range(4):  # 4 x $0.25 = the whole $1 budget
            assert ask(url, key).status_code == 200
        refused = ask(url, key)
        assert refused.status_code == 429
        message = refused.json()["error"]["message"]
        assert "'agent'" in message and "$1.00" in message and "budget for this day" in message
        _, end = period_bounds("day", time.time())
        assert abs(int(refused.headers["retry-after"]) - (end - time.time())) < 5
        chat = openai.OpenAI(base_url=url + "/api/codex/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:  # the caller's own format
            chat.chat.completions.create(model="gpt-5", messages=USER)  # type: ignore[arg-type]
        assert "budget" in str(caught.value)
    # the spend survives a restart
    with keyed_proxy(fakes, tmp_path / "again") as url:
        assert ask(url, key).status_code == 429
    assert stat.S_IMODE(os.stat(spend_path()).st_mode) == 0o600


def test_rpm_limit(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "bursty", rpm=2)
    with keyed_proxy(fakes, tmp_path) as url:
        assert ask(url, key).status_code == 200
        assert ask(url, key).status_code == 200
        refused = ask(url, key)
        assert refused.status_code == 429
        assert "2 requests per minute" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_revoke_takes_effect_at_once_and_expired_keys_are_refused(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "temp")
    old = create_key(KeyFile(), "old", expires_in="1d", now=time.time() - 2 * 86400)
    with keyed_proxy(fakes, tmp_path) as url:
        assert ask(url, key).status_code == 200
        revoke_key(KeyFile(), "temp")
        refused = ask(url, key)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        expired = ask(url, old)
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_the_gate_reads_the_key_file_once_per_loop_pass_and_never_misses_a_change(tmp_path: Path) -> None:
    """One stat serves every request admitted in the same pass of the event loop; a request handled in a
    later pass (as is every request sent after a revoke finished) sees the file as it is now."""
    key = create_key(KeyFile(), "temp")
    gate = load_gate()
    assert gate is not None
    raw = {b"x-api-key": key.encode()}
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    async def run() -> None:
        os.stat = counting_stat  # type: ignore[assignment]
        try:
            for _ in range(5):
                assert gate.admit({"path": "/api/v1/messages"}, raw, "") is None
            assert stats == [str(keys_path())]  # five requests in one pass: one stat
            revoke_key(KeyFile(), "temp")
            await asyncio.sleep(0)
            before = len(stats)
            refused = gate.admit({"path": "/api/v1/messages"}, raw, "")
            assert refused is not None and refused.status_code == 401
            assert len(stats) == before + 1
        finally:
            os.stat = real_stat

    asyncio.run(run())
    # no event loop (a synchronous caller): every call looks at the file
    assert gate.admit({"path": "/api/v1/messages"}, raw, "") is not None


def test_provider_restriction(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "claude-only", providers=["claude"])
    with keyed_proxy(fakes, tmp_path) as url:
        assert ask(url, key).status_code == 200
        chat = openai.OpenAI(base_url=url + "/api/codex/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError):
            chat.chat.completions.create(model="gpt-5", messages=USER)  # type: ignore[arg-type]


def test_stored_file_holds_no_usable_key(fakes: Fakes, tmp_path: Path) -> None:
    key = create_key(KeyFile(), "secretive")
    text = keys_path().read_text()
    assert key not in text and key[4:] not in text
    assert stat.S_IMODE(os.stat(keys_path()).st_mode) == 0o600
    stored = json.loads(text)["keys"][0]
    with keyed_proxy(fakes, tmp_path) as url:
        for value in stored.values():
            if isinstance(value, str):
                assert ask(url, value).status_code == 401


def test_cli_create_list_revoke(fakes: Fakes, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["keys", "create", "bot", "--budget-usd", "5", "--rpm", "30", "--expires", "30d"]
    made = runner.invoke(cli_app, args)
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("ccp_")
    listed = runner.invoke(cli_app, ["keys", "list", "--json"])
    rows = json.loads(listed.stdout)
    assert rows[0]["name"] == "bot" and rows[0]["budget_usd"] == 5 and rows[0]["rpm"] == 30
    assert rows[0]["state"] == "active" and key not in listed.stdout and "hash" not in rows[0]
    assert runner.invoke(cli_app, ["keys", "create", "bot"]).exit_code == 2  # name taken
    assert runner.invoke(cli_app, ["keys", "create", "x", "--expires", "soon"]).exit_code == 2
    assert runner.invoke(cli_app, ["keys", "revoke", "bot"]).exit_code == 0
    assert "revoked" in runner.invoke(cli_app, ["keys", "list"]).stdout
    assert runner.invoke(cli_app, ["keys", "revoke", "bot"]).exit_code == 2


def test_no_key_file_means_no_gate(fakes: Fakes, tmp_path: Path) -> None:
    with keyed_proxy(fakes, tmp_path) as url:
        assert ask(url, "anything").status_code == 200
