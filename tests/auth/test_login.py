"""Login flows end to end against the fake OAuth server over loopback HTTP."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from ccproxy.auth import CredentialError, login, logout, parse_pasted, status_all
from ccproxy.testing.fake_oauth import FakeOAuth, fake_claude_settings, fake_codex_settings

from .helpers import simulated_browser


def own_store(home: Path, name: str) -> Path:
    return home / ".local" / "share" / "ccproxy" / name


async def test_claude_browser_login_end_to_end(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession, free_port: int
) -> None:
    settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")
    printed: list[str] = []
    cred = await login(
        "claude", settings, open_browser=simulated_browser(session), print_fn=printed.append, session=session
    )
    assert cred.email == "user@example.com" and cred.account_id == "acct-fake-0001"
    assert cred.source == "ccproxy" and cred.refresh_token
    assert fake.claude.exchange_count == 1
    assert any(oauth_url in line for line in printed)
    # Written to ccproxy's own store in Claude Code's shape, 0600; the CLI's file is not created.
    path = own_store(home, "claude_credentials.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    oauth = data["claudeAiOauth"]
    assert oauth["accessToken"] == cred.access_token and isinstance(oauth["expiresAt"], int)
    assert oauth["expiresAt"] > 10**12  # milliseconds
    assert not (home / ".claude" / ".credentials.json").exists()
    # The authorize request carried the Claude parameters.
    params = fake.claude.last_authorize_params
    assert (
        params["code"] == "true" and params["code_challenge_method"] == "S256" and len(params["state"]) == 43
    )
    status = (await status_all({"claude": settings}))["claude"]
    assert (
        status["state"] == "valid" and status["source"] == "ccproxy" and status["email"] == "user@example.com"
    )


async def test_codex_browser_login_end_to_end(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession, free_port: int
) -> None:
    # "localhost", as in the real redirect URI: the callback server binds whatever it resolves to.
    settings = fake_codex_settings(oauth_url, f"http://localhost:{free_port}/auth/callback")
    cred = await login(
        "codex", settings, open_browser=simulated_browser(session), print_fn=lambda s: None, session=session
    )
    assert cred.account_id == "acct-codex-0001" and cred.plan == "plus" and cred.email == "user@example.com"
    assert cred.expires_at is not None and cred.id_token
    params = fake.codex.last_authorize_params
    assert params["id_token_add_organizations"] == "true"
    assert params["codex_cli_simplified_flow"] == "true" and params["originator"] == "codex_cli_rs"
    data = json.loads(own_store(home, "codex_auth.json").read_text())
    assert data["auth_mode"] == "chatgpt" and data["OPENAI_API_KEY"] is None
    assert set(data["tokens"]) == {"id_token", "access_token", "refresh_token", "account_id"}
    assert data["tokens"]["account_id"] == "acct-codex-0001" and data["last_refresh"].endswith("Z")
    assert not (home / ".codex" / "auth.json").exists()


async def test_callback_refuses_a_state_mismatch_and_keeps_waiting(
    oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession, free_port: int
) -> None:
    settings = fake_codex_settings(oauth_url, f"http://127.0.0.1:{free_port}/auth/callback")
    forged: list[int] = []

    async def browser(url: str) -> None:
        # A stale tab / forged request arrives first with another state: refused with 400.
        async with session.get(f"http://127.0.0.1:{free_port}/auth/callback?code=evil&state=wrong") as r:
            forged.append(r.status)
            assert "State mismatch" in await r.text()
        await simulated_browser(session)(url)

    cred = await login("codex", settings, open_browser=browser, print_fn=lambda s: None, session=session)
    assert forged == [400] and cred.account_id == "acct-codex-0001"
    assert fake.codex.exchange_count == 1


async def test_authorize_error_is_reported(
    oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession, free_port: int
) -> None:
    fake.claude.fail_authorize = "access_denied"
    settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")

    async def browser(url: str) -> None:
        async with session.get(url) as r:
            assert r.status == 400

    with pytest.raises(CredentialError, match="access_denied"):
        await login("claude", settings, open_browser=browser, print_fn=lambda s: None, session=session)


async def test_login_times_out_without_callback(
    oauth_url: str, session: aiohttp.ClientSession, free_port: int
) -> None:
    settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")
    with pytest.raises(CredentialError, match="no login callback"):
        await login("claude", settings, open_browser=lambda url: None, print_fn=lambda s: None, timeout=0.3)


async def test_port_in_use_is_a_clear_error(oauth_url: str, free_port: int) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", free_port))
        blocker.listen()
        settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")
        with pytest.raises(CredentialError, match="in use"):
            await login("claude", settings, open_browser=lambda url: None, print_fn=lambda s: None)


def _url_from(printed: list[str]) -> str:
    for text in printed:
        for word in text.split():
            if word.startswith("http"):
                return word
    raise AssertionError("no URL printed")


async def test_claude_no_browser_paste_flow(
    home: Path, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    settings = fake_claude_settings(oauth_url)
    printed: list[str] = []

    async def paste(prompt: str) -> str:
        # The user opens the URL; the manual-redirect page shows `code#state`, which they paste.
        async with session.get(_url_from(printed)) as r:
            return await r.text()

    cred = await login(
        "claude", settings, no_browser=True, input_fn=paste, print_fn=printed.append, session=session
    )
    assert cred.refresh_token and fake.claude.exchange_count == 1
    # The manual redirect URI was used for both the authorize request and the exchange.
    assert fake.claude.last_authorize_params["redirect_uri"] == f"{oauth_url}/oauth/code/callback"
    assert own_store(home, "claude_credentials.json").exists()


async def test_claude_paste_needs_both_halves_and_the_right_state(
    oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    settings = fake_claude_settings(oauth_url)
    printed: list[str] = []

    async def code_only(prompt: str) -> str:
        async with session.get(_url_from(printed)) as r:
            return (await r.text()).split("#")[0]

    with pytest.raises(CredentialError, match="including the #"):
        await login("claude", settings, no_browser=True, input_fn=code_only, print_fn=printed.append)
    printed.clear()

    async def other_state(prompt: str) -> str:
        async with session.get(_url_from(printed)) as r:
            return (await r.text()).split("#")[0] + "#not-the-state"

    with pytest.raises(CredentialError, match="state mismatch"):
        await login("claude", settings, no_browser=True, input_fn=other_state, print_fn=printed.append)
    assert fake.claude.exchange_count == 0


@pytest.mark.parametrize("form", ["url", "bare"])
async def test_codex_no_browser_accepts_redirect_url_or_bare_code(
    form: str, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    settings = fake_codex_settings(oauth_url)  # redirect stays http://localhost:1455/auth/callback
    printed: list[str] = []

    async def follow(prompt: str) -> str:
        # The browser would end at localhost:1455 (nothing listens there); the user copies that URL.
        async with session.get(_url_from(printed), allow_redirects=False) as r:
            location = r.headers["Location"]
        return location if form == "url" else dict(parse_qsl(urlsplit(location).query))["code"]

    cred = await login("codex", settings, no_browser=True, input_fn=follow, print_fn=printed.append)
    assert cred.account_id == "acct-codex-0001" and fake.codex.exchange_count == 1
    assert fake.codex.last_authorize_params["redirect_uri"] == "http://localhost:1455/auth/callback"


async def test_codex_no_browser_with_sync_input(
    oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession
) -> None:
    """A plain blocking ``input``-like function works too (it runs in a worker thread)."""
    import urllib.request

    settings = fake_codex_settings(oauth_url)
    printed: list[str] = []

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    def typed(prompt: str) -> str:
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(_url_from(printed))
        except urllib.error.HTTPError as exc:  # the 302 surfaces as an HTTPError without a handler
            return str(exc.headers["Location"])
        raise AssertionError("expected a redirect")

    cred = await login("codex", settings, no_browser=True, input_fn=typed, print_fn=printed.append)
    assert cred.account_id == "acct-codex-0001"


def test_parse_pasted() -> None:
    assert parse_pasted("claude", " abc#def \n") == ("abc", "def")
    assert parse_pasted("claude", "http://localhost:54545/callback?code=abc&state=def") == ("abc", "def")
    for bad in ("abc", "abc#", "#def", ""):
        with pytest.raises(CredentialError):
            parse_pasted("claude", bad)
    assert parse_pasted("codex", "http://localhost:1455/auth/callback?code=c1&state=s1") == ("c1", "s1")
    assert parse_pasted("codex", "c1") == ("c1", None)
    with pytest.raises(CredentialError, match="access_denied"):
        parse_pasted("codex", "http://localhost:1455/auth/callback?error=access_denied&state=s")
    with pytest.raises(CredentialError, match="no 'code'"):
        parse_pasted("codex", "http://localhost:1455/auth/callback?state=s")


async def test_logout_removes_only_ccproxy_store(
    home: Path, oauth_url: str, session: aiohttp.ClientSession, free_port: int
) -> None:
    cli_file = home / ".claude" / ".credentials.json"
    cli_file.parent.mkdir()
    cli_file.write_text('{"claudeAiOauth": {"accessToken": "sk-ant-oat01-cli"}}')
    settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")
    await login("claude", settings, open_browser=simulated_browser(session), print_fn=lambda s: None)
    removed = logout("claude")
    assert removed == [own_store(home, "claude_credentials.json")]
    assert cli_file.exists() and logout("claude") == []


def test_browser_unavailable_detection() -> None:
    from ccproxy.auth.login import browser_unavailable

    assert browser_unavailable({"SSH_CONNECTION": "10.0.0.1 5 10.0.0.2 22", "DISPLAY": ":0"}) == "SSH session"
    assert browser_unavailable({"SSH_TTY": "/dev/pts/1"}, "darwin") == "SSH session"
    assert browser_unavailable({}, "linux") == "no DISPLAY or WAYLAND_DISPLAY"
    assert browser_unavailable({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert browser_unavailable({"DISPLAY": ":0"}, "linux") is None
    assert browser_unavailable({"BROWSER": "w3m"}, "linux") is None  # the user named one
    assert browser_unavailable({}, "darwin") is None and browser_unavailable({}, "win32") is None


async def _paste_from_fake(printed: list[str], session: aiohttp.ClientSession) -> str:
    async with session.get(_url_from(printed[::-1])) as r:  # the last URL: the paste flow's
        return await r.text()


async def test_login_without_a_display_switches_to_pasting(
    oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession, free_port: int
) -> None:
    settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")
    printed: list[str] = []

    async def paste(prompt: str) -> str:
        return await _paste_from_fake(printed, session)

    cred = await login(
        "claude", settings, input_fn=paste, print_fn=printed.append, session=session, environ={}
    )
    assert cred.refresh_token and fake.claude.exchange_count == 1
    assert printed[0].startswith("No browser available (") and "--no-browser" in printed[0]
    assert fake.claude.last_authorize_params["redirect_uri"] == f"{oauth_url}/oauth/code/callback"


@pytest.mark.parametrize("failure", ["returns False", "raises"])
async def test_browser_that_fails_to_open_switches_to_pasting(
    failure: str, oauth_url: str, fake: FakeOAuth, session: aiohttp.ClientSession, free_port: int
) -> None:
    settings = fake_claude_settings(oauth_url, f"http://127.0.0.1:{free_port}/callback")
    printed: list[str] = []

    def broken_browser(url: str) -> bool:
        if failure == "raises":
            raise OSError("xdg-open: no method available for opening it")
        return False  # what webbrowser.open answers when it finds no runnable browser

    async def paste(prompt: str) -> str:
        return await _paste_from_fake(printed, session)

    cred = await login(
        "claude",
        settings,
        open_browser=broken_browser,
        input_fn=paste,
        print_fn=printed.append,
        session=session,
    )
    assert cred.refresh_token and fake.claude.exchange_count == 1
    switched = next(line for line in printed if line.startswith("Could not open a browser"))
    assert ("xdg-open" if failure == "raises" else "no runnable browser") in switched


async def test_paste_prompt_at_end_of_input_says_aborted(oauth_url: str, fake: FakeOAuth) -> None:
    def eof(prompt: str) -> str:
        raise EOFError

    with pytest.raises(CredentialError, match="login aborted"):
        await login("claude", fake_claude_settings(oauth_url), no_browser=True, input_fn=eof, print_fn=print)
    assert fake.claude.exchange_count == 0
