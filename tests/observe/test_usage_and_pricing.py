"""``ccproxy usage`` and ``GET /usage`` agree with the ledger; costs equal a hand computation from the
price table; the price table: lookup, overrides, unknown models, ``ccproxy pricing show|update``."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ccproxy.cli import app as cli_app
from ccproxy.observe.pricing import ModelPrice, Prices, shipped_table, user_table_path
from ccproxy.observe.usage import Aggregate, UsageQueryError, aggregate, parse_since
from ccproxy.plugins import Usage
from ccproxy.testing import Completion, RunningFakes

from .conftest import MakeProxy

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
SONNET = (10 * 3 + 5 * 15 + 3 * 0.3 + 2 * 3.75) / 1e6  # input, output, cache read, cache write
HAIKU = (20 * 1 + 8 * 5) / 1e6
GPT55 = (6 * 5 + 9 * 30 + 4 * 0.5) / 1e6


def _make_requests(url: str, fakes: RunningFakes, auth: dict[str, str]) -> None:
    for _ in range(2):
        fakes.anthropic.reply(
            Completion(
                text="a", input_tokens=10, output_tokens=5, cache_read_tokens=3, cache_creation_tokens=2
            )
        )
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES, headers=auth).status_code == 200
    fakes.anthropic.reply(Completion(text="b", input_tokens=20, output_tokens=8))
    haiku = {**MESSAGES, "model": "claude-haiku-4-5", "stream": True}
    mine = {**auth, "user-agent": "my-app/1.0"}
    assert httpx.post(url + "/api/v1/messages", json=haiku, headers=mine).status_code == 200
    fakes.codex.reply(Completion(text="c", input_tokens=6, output_tokens=9, cache_read_tokens=4))
    body = {"model": "gpt-5.5", "input": "hi", "stream": True}
    assert httpx.post(url + "/api/codex/v1/responses", json=body, headers=auth).status_code == 200


def test_usage_command_and_endpoint_agree_with_the_ledger(
    make_proxy: MakeProxy, fakes: RunningFakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
    token = "observe-auth-token-123"
    with make_proxy(**{"ledger.url": ledger, "security.auth_token": token}) as (url, _):
        _make_requests(url, fakes, {"x-api-key": token})
        assert httpx.get(url + "/usage").status_code == 401  # behind the auth token
        served = httpx.get(url + "/usage?by=model&since=1h", headers={"authorization": f"Bearer {token}"})
        assert served.status_code == 200
        bad = httpx.get(url + "/usage?since=yesterday", headers={"x-api-key": token})
        assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]
    endpoint = served.json()
    by_key = {row["key"]: row for row in endpoint["rows"]}
    assert set(by_key) == {"claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5.5"}
    sonnet = by_key["claude-sonnet-4-5"]
    assert (sonnet["requests"], sonnet["input_tokens"], sonnet["output_tokens"]) == (2, 20, 10)
    assert sonnet["cost_usd"] == pytest.approx(2 * SONNET)
    assert by_key["claude-haiku-4-5"]["cost_usd"] == pytest.approx(HAIKU)
    assert by_key["gpt-5.5"]["cost_usd"] == pytest.approx(GPT55)
    assert endpoint["total"]["requests"] == 4
    assert endpoint["total"]["cost_usd"] == pytest.approx(2 * SONNET + HAIKU + GPT55)
    assert all(row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"] for row in endpoint["rows"])

    # after the restart, the command reads the same numbers from the ledger
    monkeypatch.setenv("LEDGER__URL", ledger)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["usage", "--json", "--since", "1h"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["rows"] == endpoint["rows"] and printed["total"] == endpoint["total"]

    providers = json.loads(runner.invoke(cli_app, ["usage", "--json", "--by", "provider"]).output)
    assert {r["key"]: r["requests"] for r in providers["rows"]} == {"claude_api": 3, "codex": 1}
    clients = json.loads(runner.invoke(cli_app, ["usage", "--json", "--by", "client"]).output)
    assert {r["key"] for r in clients["rows"]} >= {"my-app", "python-httpx"}
    days = json.loads(runner.invoke(cli_app, ["usage", "--json", "--by", "day"]).output)
    assert len(days["rows"]) in (1, 2) and sum(r["requests"] for r in days["rows"]) == 4

    as_csv = runner.invoke(cli_app, ["usage", "--csv"])
    table = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert {r["model"] for r in table} == set(by_key)
    assert float(next(r for r in table if r["model"] == "gpt-5.5")["cost_usd"]) == pytest.approx(GPT55)

    text = runner.invoke(cli_app, ["usage"], env={"COLUMNS": "200"})
    assert text.exit_code == 0 and "claude-sonnet-4-5" in text.output and "total" in text.output

    bad_by = runner.invoke(cli_app, ["usage", "--by", "color"])
    assert bad_by.exit_code == 2 and "--by" in bad_by.output


def test_since_spans_and_dates() -> None:
    assert parse_since("24h", now=100_000.0) == 100_000.0 - 86400
    assert parse_since("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_since("2026-12-01") == 1796083200.0  # midnight UTC
    with pytest.raises(UsageQueryError):
        parse_since("last week")


# ----------------------------------------------------------------------------------------- pricing


def test_price_lookup_and_cost() -> None:
    prices = Prices(shipped_table(), {"my-model": ModelPrice(input=1.0, output=2.0)})
    assert prices.lookup("claude-sonnet-4-5") == prices.lookup("claude-sonnet-4-5-20250929")
    mini = prices.lookup("gpt-5.1-codex-mini")
    assert mini is not None and mini.input == 0.25  # the longest matching name, not gpt-5.1
    assert prices.lookup("gpt-5.10") is None  # a prefix must end at a dash: not gpt-5.1, not gpt-5
    # reasoning tokens are part of output_tokens; cache prices default to the input price
    assert prices.cost("my-model", Usage(1000, 1000, 1000, 0, 500)) == pytest.approx(
        (1000 + 2000 + 1000) / 1e6
    )
    assert prices.cost(None, Usage(1, 1)) is None


def test_unknown_model_gets_no_cost_and_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    prices = Prices(shipped_table())
    assert prices.cost("mystery-model", Usage(10, 10)) is None
    assert prices.cost("mystery-model", Usage(10, 10)) is None
    assert capsys.readouterr().err.count("mystery-model") == 1


def test_every_served_model_has_a_price() -> None:
    from ccproxy.providers.codex import CODEX_MODELS
    from ccproxy.providers.models import CLAUDE_MODELS

    prices = Prices(shipped_table())
    missing = [m.id for m in [*CLAUDE_MODELS, *CODEX_MODELS] if prices.lookup(m.id) is None]
    assert missing == []


def test_config_overrides_reach_the_requests(
    make_proxy: MakeProxy, fakes: RunningFakes, tmp_path: Path
) -> None:
    ledger = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
    override = {"input": 100.0, "output": 0.0, "cache_read": 0.0, "cache_write": 0.0}
    with make_proxy(**{"ledger.url": ledger, "plugins.pricing.models": {"claude-sonnet-4-5": override}}) as (
        url,
        _,
    ):
        fakes.anthropic.reply(Completion(text="a", input_tokens=10, output_tokens=5))
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
        usage = httpx.get(url + "/usage").json()
    assert usage["total"]["cost_usd"] == pytest.approx(10 * 100 / 1e6)


@pytest.fixture
def table_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def test_pricing_update_installs_a_good_table_and_refuses_a_bad_one(
    table_server: tuple[str, dict[str, bytes]],
) -> None:
    base, files = table_server
    good = {
        "format": 1,
        "updated": "2099-01-01",
        "models": {
            "claude-sonnet-4-5": {"input": 1.5, "output": 7.5},
            "new-model": {"input": 9, "output": 9},
        },
    }
    files["/good.json"] = json.dumps(good).encode()
    files["/bad.json"] = json.dumps({**good, "models": {"x": {"input": -1, "output": 1}}}).encode()
    files["/garbage.json"] = b"<html>"
    runner = CliRunner()
    result = runner.invoke(cli_app, ["pricing", "update", base + "/good.json"])
    assert result.exit_code == 0, result.output
    assert "2099-01-01" in result.output and user_table_path().is_file()
    for name in ("/bad.json", "/garbage.json", "/missing.json"):
        refused = runner.invoke(cli_app, ["pricing", "update", base + name])
        assert refused.exit_code == 2 and "current table stays" in refused.output, refused.output
    shown = json.loads(runner.invoke(cli_app, ["pricing", "show", "--json"]).output)
    assert shown["updated"] == "2099-01-01"  # the good one survived the bad ones
    assert {m["model"] for m in shown["models"]} == {"claude-sonnet-4-5", "new-model"}
    one = runner.invoke(cli_app, ["pricing", "show", "claude-sonnet-4-5-20250929", "--json"])
    assert json.loads(one.output)["models"][0]["input"] == 1.5
    assert runner.invoke(cli_app, ["pricing", "show", "nope"]).exit_code == 2


def test_pricing_show_prints_the_shipped_table() -> None:
    result = CliRunner().invoke(cli_app, ["pricing", "show"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "claude-opus-4-5" in result.output and "gpt-5.5" in result.output
    assert str(shipped_table().updated) in result.output


def test_usage_aggregates_the_same_in_pieces_as_at_once() -> None:
    """``ccproxy usage`` adds the window's rows piece by piece (``Store.fold``): sums, errors, days and
    percentiles come out the same as from all rows at once, and by hand."""
    day = 1_764_892_800.0  # 2025-12-05 00:00 UTC
    # ts, provider, model, model_served, client, client_key, status, 5 token kinds, cost, ms, ttfb ms
    rows = [
        (day + 10, "claude_api", "m", "m-1", "a", "k1", 200, 10, 5, 1, 0, 0, 0.5, 100.0, 10.0),
        (day + 20, "claude_api", "m", None, "a", None, 502, 0, 0, 0, 0, 0, None, 300.0, 30.0),
        (day + 86400 + 5, "codex", "g", "g", "b", None, 200, 4, 2, 0, 0, 7, 0.25, 200.0, 20.0),
    ]
    by_day, total = aggregate(rows, "day")
    days = {r["key"]: (r["requests"], r["errors"]) for r in by_day}
    assert days == {"2025-12-05": (2, 1), "2025-12-06": (1, 0)}
    assert total["requests"] == 3 and total["errors"] == 1 and total["cost_usd"] == 0.75
    assert (total["input_tokens"], total["output_tokens"], total["reasoning_tokens"]) == (14, 7, 7)
    assert (total["p50_ms"], total["p95_ms"], total["p50_ttfb_ms"]) == (200.0, 300.0, 20.0)
    pieces = Aggregate("model")
    for row in rows:
        pieces.add([row])
    pieces.add([])
    assert pieces.result() == aggregate(rows, "model")
    keys = {r["key"]: r["requests"] for r in aggregate(rows, "key")[0]}
    assert keys == {"k1": 1, "(no key)": 2}
