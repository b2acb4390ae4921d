"""The dashboard in a real browser: Playwright driving Debian's chromium against a proxy aimed at the fakes.

Screenshots of every view (light and dark, 1280 px desktop and 390 px phone) go to ``artifacts/dashboard/``.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.observe.store import TOKEN_COLUMNS
from ccproxy.testing import Completion, RunningFakes, serve_app
from tests.observe.conftest import CLAUDE_TOKEN, observe_config

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("CCPROXY_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
VIEWS = ("overview", "live", "usage", "accounts", "permissions", "health")
TOKEN = "dashboard-browser-token-0123"
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` (make setup does)")
    with playwright_sync.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Page:
    """A page with every console error and uncaught exception collected."""

    def __init__(self, browser: Any, url: str, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url + "/dashboard")

    def view(self, name: str) -> Any:
        self.page.click(f"#nav button[data-view='{name}']")
        section = self.page.locator(f"#view-{name}")
        playwright_sync.expect(section).to_be_visible()
        return section

    def close(self) -> None:
        self.context.close()


def _make_requests(url: str, fakes: RunningFakes) -> None:
    for _ in range(2):
        fakes.anthropic.reply(Completion(text="a", input_tokens=10, output_tokens=5, cache_read_tokens=3))
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
    fakes.anthropic.reply(Completion(text="b", input_tokens=20, output_tokens=8))
    haiku = {**MESSAGES, "model": "claude-haiku-4-5", "stream": True}
    assert httpx.post(url + "/api/v1/messages", json=haiku).status_code == 200
    fakes.codex.reply(Completion(text="c", input_tokens=6, output_tokens=9))
    body = {"model": "gpt-5.5", "input": "hi", "stream": True}
    codex_cli = {"user-agent": "codex_cli_rs/0.63.0 (Debian 12; x86_64)"}  # a second client by name
    assert httpx.post(url + "/api/codex/v1/responses", json=body, headers=codex_cli).status_code == 200


def _cells(locator: Any) -> list[str]:
    return [str(t).strip() for t in locator.locator("td").all_inner_texts()]


def _num(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def _tokens(row: dict[str, Any]) -> int:
    return sum(int(row[k]) for k in TOKEN_COLUMNS[:4])  # all but reasoning (part of output)


def test_views_match_the_ledger_show_live_requests_and_have_no_console_errors(
    browser: Any, fakes: RunningFakes, tmp_path: Path
) -> None:
    config = observe_config(fakes, **{"ledger.url": f"sqlite:///{tmp_path / 'usage.sqlite3'}"})
    with serve_app(create_app(config)) as url:
        _make_requests(url, fakes)
        page = Page(browser, url, viewport={"width": 1280, "height": 900})
        try:
            today = time.strftime("%Y-%m-%d", time.gmtime())
            ledger = httpx.get(f"{url}/usage?since={today}&by=provider").json()
            overview = page.view("overview")
            total = overview.locator("#periods-total")
            playwright_sync.expect(total).to_contain_text("All")
            cells = _cells(total)
            assert int(_num(cells[1])) == ledger["total"]["requests"] == 4
            assert int(_num(cells[2])) == _tokens(ledger["total"])
            assert _num(cells[3]) == pytest.approx(ledger["total"]["cost_usd"], abs=5e-5)
            assert ledger["total"]["cost_usd"] > 0
            hour = httpx.get(f"{url}/usage?since=1h&by=provider").json()["total"]
            assert page.page.inner_text("#rpm") == f"{hour['requests'] / 60:.2f}"
            assert page.page.inner_text("#errors-hour") == str(hour["errors"])

            page.view("usage")
            week = httpx.get(f"{url}/usage?since=7d&by=day").json()["total"]
            cells = _cells(page.page.locator("#usage-total tbody tr"))
            shown = [int(_num(c)) for c in cells[:6]]
            assert shown == [week[k] for k in ("requests", "errors", *TOKEN_COLUMNS[:4])]
            assert page.page.locator("#chart-model-tokens svg rect").count() == 3  # sonnet, haiku, gpt-5.5
            clients = httpx.get(f"{url}/usage?since=7d&by=client").json()["rows"]
            assert {c["key"]: c["requests"] for c in clients} == {"python-httpx": 3, "codex_cli_rs": 1}
            shown_clients = page.page.locator("#usage-clients tbody tr")
            playwright_sync.expect(shown_clients).to_have_count(2)
            for index, client in enumerate(clients):  # the ledger's order: by cost, then requests
                cells = _cells(shown_clients.nth(index))
                assert cells[0] == client["key"] and int(_num(cells[1])) == client["requests"]
                assert int(_num(cells[3])) == client["input_tokens"]
            with page.page.expect_download() as download:
                page.page.click("#csv-model")
            csv = Path(download.value.path()).read_text()
            assert csv.splitlines()[0].startswith("key,requests,errors,input_tokens")
            assert len(csv.splitlines()) == 4

            live = page.view("live")
            rows = live.locator("tbody tr")
            before = rows.count()
            fakes.anthropic.reply(Completion(text="live", input_tokens=7, output_tokens=3))
            assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
            playwright_sync.expect(rows).to_have_count(before + 1, timeout=1000)  # within a second
            assert "7 / 3" in rows.first.inner_text() and "/api/v1/messages" in rows.first.inner_text()
            page.page.fill("#filter", "no-such-model")
            playwright_sync.expect(rows.first).to_be_hidden()
            page.page.fill("#filter", "")
            page.page.click("#pause")
            assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200
            playwright_sync.expect(page.page.locator("#live-note")).to_contain_text("paused: 1 new")
            assert rows.count() == before + 1
            page.page.click("#pause")
            playwright_sync.expect(rows).to_have_count(before + 2)

            accounts = page.view("accounts")
            playwright_sync.expect(accounts.locator(".account")).to_have_count(2)  # claude_api and codex
            health = page.view("health")
            playwright_sync.expect(health.locator("#config tbody tr").first).to_be_visible()
            assert "***" not in health.inner_text() or "security.auth_token" in health.inner_text()
            assert page.errors == []
        finally:
            page.close()
        _screenshots(browser, url)


def _screenshots(browser: Any, url: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for label, width, height in (("desktop", 1280, 860), ("phone", 390, 844)):
            page = Page(browser, url, viewport={"width": width, "height": height}, color_scheme=scheme)
            try:
                for view in VIEWS:
                    page.view(view)
                    page.page.wait_for_timeout(150)  # let the view's data arrive
                    page.page.screenshot(path=str(ARTIFACTS / f"{view}-{scheme}-{label}.png"), full_page=True)
                assert page.errors == []
            finally:
                page.close()


def test_with_a_token_the_page_asks_for_it_and_a_cross_site_allow_is_refused(
    browser: Any, fakes: RunningFakes, tmp_path: Path
) -> None:
    claude = shutil.which("claude") or _bundled_claude()
    work = tmp_path / "work"
    work.mkdir()
    cli = {
        "plugins.claude_sdk.base_url": fakes.url,
        "plugins.claude_sdk.api_key": "sk-ant-api03-ccproxy-e2e-dummy-key-0123456789",
        "plugins.claude_sdk.throwaway_home": True,
        "plugins.claude_sdk.cwd": str(work),
        "permissions.timeout_seconds": 60,
        "security.auth_token": TOKEN,
    }
    del claude  # found: the agent SDK runs its bundled binary
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        page = Page(browser, url, viewport={"width": 1280, "height": 900})
        try:
            playwright_sync.expect(page.page.locator("#login")).to_be_visible()
            assert page.page.locator("#view-overview").is_hidden()
            page.page.fill("#login-token", "not-the-token")
            page.page.click("#login-form button")
            playwright_sync.expect(page.page.locator("#login-error")).to_contain_text("wrong auth token")
            page.page.fill("#login-token", TOKEN)
            page.page.click("#login-form button")
            playwright_sync.expect(page.page.locator("#view-overview")).to_be_visible()
            # before the login the page saw only refusals (its first look, the wrong token): no other error
            assert page.errors and all("401 (Unauthorized)" in e for e in page.errors)
            page.errors.clear()
            cookies = page.context.cookies()
            assert [c["httpOnly"] for c in cookies] == [True] and TOKEN not in str(cookies)
            permissions = page.view("permissions")

            allowed, denied = work / "allowed.txt", work / "denied.txt"
            out: dict[str, Any] = {}
            thread = _ask(url, f"RUN: touch {allowed}", out)
            card = permissions.locator(".request")
            playwright_sync.expect(card).to_have_count(1, timeout=60_000)
            assert "Bash" in card.inner_text() and str(allowed) in card.inner_text()

            # another origin (same browser, same cookie jar) posts an Allow: refused, still pending
            evil = page.context.new_page()
            evil.goto(fakes.url + "/evil")
            pending_id = card.get_attribute("data-id")
            status = evil.evaluate(
                """async ([url, id]) => {
                    await fetch(url + '/dashboard/api/permissions/' + id + '/respond', {method: 'POST',
                      mode: 'no-cors', credentials: 'include', headers: {'content-type': 'text/plain'},
                      body: '{"allowed": true}'});
                    return 'sent';
                }""",
                [url, pending_id],
            )
            assert status == "sent"
            evil.close()
            headers = {"authorization": f"Bearer {TOKEN}"}
            assert httpx.get(f"{url}/permissions", headers=headers).json()["pending"][0]["id"] == pending_id
            assert not allowed.exists()

            card.locator("button.allow").click()
            thread.join(90)
            assert allowed.exists()
            assert "[tool call] Bash" in "".join(b.text for b in out["message"].content if b.type == "text")
            playwright_sync.expect(permissions.locator("#recent tbody tr").first).to_contain_text("allowed")

            thread = _ask(url, f"RUN: touch {denied}", out)
            playwright_sync.expect(card).to_have_count(1, timeout=60_000)
            card.locator("button.deny").click()
            thread.join(90)
            assert not denied.exists()
            playwright_sync.expect(permissions.locator("#recent tbody tr").first).to_contain_text("denied")
            assert page.errors == []
        finally:
            page.close()


def _bundled_claude() -> str:
    sdk = pytest.importorskip("claude_agent_sdk", reason="SDK mode needs claude-agent-sdk (the sdk extra)")
    return str(Path(sdk.__file__).parent / "_bundled" / "claude")


def _ask(url: str, prompt: str, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        client = anthropic.Anthropic(base_url=url + "/claude", api_key=TOKEN, max_retries=0, timeout=90)
        out["message"] = client.messages.create(
            model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": prompt}]
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_limited_account_shows_its_window_and_reset_countdown(
    browser: Any, fakes: RunningFakes, tmp_path: Path
) -> None:
    """The fake limits the account's 5-hour window (429 with reset headers): the Accounts view shows the
    window as rejected and full, with its reset counting down, from ``GET /accounts``."""
    config = observe_config(fakes, **{"ledger.url": f"sqlite:///{tmp_path / 'usage.sqlite3'}"})
    with serve_app(create_app(config)) as url:
        fakes.anthropic.set_limits(CLAUDE_TOKEN, limited_until=time.time() + 2 * 3600 + 600)
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 429
        page = Page(browser, url, viewport={"width": 1280, "height": 900})
        try:
            section = page.view("accounts")
            card = section.locator(".account[data-account='config']").first
            playwright_sync.expect(card).to_contain_text("5h: 100% used · rejected")
            reset = card.locator(".countdown").first
            playwright_sync.expect(reset).to_have_text(re.compile(r"resets in 2h \d+m"))
            assert page.errors == []
        finally:
            page.close()
