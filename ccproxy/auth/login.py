"""Login flows and the operations behind ``ccproxy auth ...``.

``login()`` runs the PKCE authorization-code flow for either provider: with a local callback server on
the redirect URI's host/port (the browser ends there), or, with ``no_browser``, by printing the URL and
reading back what the user pastes (Claude: ``code#state``; Codex: the redirect URL or a bare code).
The browser step is injectable (``open_browser``) so tests can follow the authorize redirect themselves.
A login is written to ccproxy's own store, never to the CLIs' files.
"""

from __future__ import annotations

import asyncio
import errno
import html
import inspect
import logging
import os
import sys
import threading
import time
import webbrowser
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ccproxy.auth.claude import claude_provider
from ccproxy.auth.codex import codex_provider
from ccproxy.auth.credential import Credential, CredentialError, CredentialSource
from ccproxy.auth.files import file_lock
from ccproxy.auth.manager import ProviderName, ProviderSpec, TokenManager
from ccproxy.auth.oauth import OAuthSettings, build_authorize_url, exchange_code
from ccproxy.auth.pkce import generate_pkce, generate_state

if TYPE_CHECKING:  # aiohttp (and its web server) load only when a login or refresh runs
    import aiohttp
    from aiohttp import web

log = logging.getLogger("ccproxy.auth")

PROVIDERS: tuple[ProviderName, ...] = ("claude", "codex")
InputFn = Callable[[str], str] | Callable[[str], Awaitable[str]]
BrowserFn = Callable[[str], object]


def get_provider(name: ProviderName, settings: OAuthSettings | None = None) -> ProviderSpec:
    if name == "claude":
        return claude_provider(settings)
    if name == "codex":
        return codex_provider(settings)
    raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")


def token_manager(
    name: ProviderName,
    settings: OAuthSettings | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
    **kwargs: Any,
) -> TokenManager:
    """The manager a provider plugin holds for the proxy's lifetime (kwargs: grace_seconds, ...)."""
    return TokenManager(get_provider(name, settings), session=session, **kwargs)


async def login(
    provider: ProviderName,
    settings: OAuthSettings | None = None,
    *,
    no_browser: bool = False,
    input_fn: InputFn = input,
    open_browser: BrowserFn | None = None,
    print_fn: Callable[[str], object] = print,
    session: aiohttp.ClientSession | None = None,
    store: CredentialSource | None = None,
    timeout: float = 300.0,
    environ: Mapping[str, str] | None = None,
) -> Credential:
    """Log in and save to ccproxy's own store (or ``store``); returns the new credential.

    Without a usable browser (no display, an SSH session, or the browser fails to open) the login
    switches to the paste flow of ``no_browser`` by itself and says so."""
    spec = get_provider(provider, settings)
    cfg = spec.settings
    if not no_browser and open_browser is None:  # an injected opener is a (simulated) browser
        reason = browser_unavailable(os.environ if environ is None else environ)
        if reason is not None:
            print_fn(f"No browser available ({reason}); signing in by pasting instead (--no-browser).")
            no_browser = True
    grant: tuple[str, str | None, str, str] | None = None
    if not no_browser:
        try:
            grant = await _browser_flow(cfg, open_browser, print_fn, timeout)
        except _NoBrowser as exc:
            print_fn(f"Could not open a browser ({exc}); signing in by pasting instead (--no-browser).")
    if grant is None:
        grant = await _paste_flow(provider, cfg, input_fn, print_fn)
    code, got_state, redirect_uri, verifier = grant

    own_session = session is None
    import aiohttp

    http = session or aiohttp.ClientSession()
    try:
        tokens = await exchange_code(
            http, cfg, code=code, verifier=verifier, state=got_state, redirect_uri=redirect_uri
        )
    finally:
        if own_session:
            await http.close()
    target = store or spec.login_store()
    credential = replace(spec.from_tokens(tokens, None, time.time()), source=target.name)
    lock = target.lock_path
    if lock is None:
        await asyncio.to_thread(target.save, credential)
    else:
        async with file_lock(lock):
            await asyncio.to_thread(target.save, credential)
    print_fn(f"Logged in to {provider}" + (f" as {credential.email}" if credential.email else "") + ".")
    return credential


async def _paste_flow(
    provider: ProviderName, cfg: OAuthSettings, input_fn: InputFn, print_fn: Callable[[str], object]
) -> tuple[str, str | None, str, str]:
    """Print the authorize URL, read back what the user pastes: (code, state, redirect URI, verifier)."""
    pkce = generate_pkce()
    state = generate_state()
    redirect_uri = cfg.manual_redirect_uri or cfg.redirect_uri
    url = build_authorize_url(cfg, pkce, state, redirect_uri=redirect_uri)
    print_fn(f"Open this URL in a browser (on any machine) and sign in:\n\n{url}\n")
    if provider == "claude":
        prompt = "Paste the code shown after signing in (all of it, including the # in the middle): "
    else:
        prompt = "Paste the URL your browser ended at (or just the code): "
    try:
        pasted = await _ask(input_fn, prompt)
    except EOFError:
        print_fn("")  # end the prompt's line
        raise CredentialError("login aborted: the input ended before a code was pasted") from None
    code, got_state = parse_pasted(provider, pasted)
    if got_state is not None and got_state != state:
        raise CredentialError("state mismatch: the pasted value belongs to a different login attempt")
    return code, got_state or state, redirect_uri, pkce.verifier


async def _browser_flow(
    cfg: OAuthSettings, open_browser: BrowserFn | None, print_fn: Callable[[str], object], timeout: float
) -> tuple[str, str | None, str, str]:
    """Open the browser, wait for the local callback: (code, state, redirect URI, verifier)."""
    pkce = generate_pkce()
    state = generate_state()
    redirect_uri = cfg.redirect_uri
    url = build_authorize_url(cfg, pkce, state, redirect_uri=redirect_uri)
    server = _CallbackServer(redirect_uri, state)
    await server.start()
    try:
        print_fn(f"Opening the browser to sign in. If it does not open, visit:\n\n{url}\n")
        code = await _run_browser_step(server, open_browser, url, timeout)
    finally:
        await server.stop()
    return code, state, redirect_uri, pkce.verifier


def browser_unavailable(environ: Mapping[str, str], platform: str = sys.platform) -> str | None:
    """Why no browser can open here, or None: an SSH session, or Linux without a graphical display."""
    if environ.get("SSH_CONNECTION") or environ.get("SSH_TTY") or environ.get("SSH_CLIENT"):
        return "SSH session"
    graphical = environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")
    if platform.startswith("linux") and not graphical and not environ.get("BROWSER"):  # $BROWSER: user's pick
        return "no DISPLAY or WAYLAND_DISPLAY"
    return None


class _NoBrowser(Exception):
    """The browser could not be opened (webbrowser found none, or it failed)."""


def parse_pasted(provider: ProviderName, value: str) -> tuple[str, str | None]:
    """(code, state) from what the user pasted. Claude needs both halves; Codex accepts a bare code."""
    text = value.strip()
    if not text:
        raise CredentialError("nothing was pasted")
    if "://" in text or text.startswith("?") or "code=" in text:
        query = parse_qs(urlsplit(text if "://" in text else "x://x/" + text.lstrip("?")).query)
        if "error" in query:
            desc = query.get("error_description", [""])[0]
            detail = f": {desc[:200]}" if desc else ""
            raise CredentialError(f"authorization failed: {query['error'][0][:100]}{detail}")
        code = query.get("code", [""])[0]
        url_state = query.get("state", [None])[0]
        if not code:
            raise CredentialError("the pasted URL has no 'code' parameter")
        if provider == "claude" and not url_state:
            raise CredentialError("the pasted URL has no 'state' parameter; paste the whole code#state value")
        return code, url_state
    if provider == "claude":
        code, sep, state = text.partition("#")
        if not sep or not code or not state:
            raise CredentialError(
                "that is not the full value: copy all of it, including the # in the middle (code#state)"
            )
        return code, state
    if any(c.isspace() for c in text):
        raise CredentialError("the pasted code contains spaces; paste the redirect URL or the code only")
    return text, None


async def status_all(
    settings: Mapping[str, OAuthSettings] | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, dict[str, Any]]:
    """``ccproxy auth status``: one JSON-safe dict per provider (see ``TokenManager.status``)."""
    result: dict[str, dict[str, Any]] = {}
    for name in PROVIDERS:
        mgr = TokenManager(get_provider(name, (settings or {}).get(name)), session=session)
        result[name] = await mgr.status()
    return result


def logout(provider: ProviderName) -> list[Path]:
    """Delete ccproxy's own stored login. The CLIs' files are left alone (log out there with the CLI)."""
    store = get_provider(provider).login_store()
    removed: list[Path] = []
    if store.delete() and store.path is not None:
        removed.append(store.path)
    return removed


async def refresh(
    provider: ProviderName,
    settings: OAuthSettings | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> Credential:
    """``ccproxy auth refresh``: refresh now, writing back to the source the login came from."""
    return await TokenManager(get_provider(provider, settings), session=session).force_refresh()


# ------------------------------------------------------------------------------------ browser step


async def _ask(input_fn: InputFn, prompt: str) -> str:
    if inspect.iscoroutinefunction(input_fn):
        return str(await input_fn(prompt))
    # A daemon thread, not asyncio.to_thread: after Ctrl-C the blocked input() must not hold up the exit
    # (the executor's threads are joined when asyncio.run ends).
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[object] = loop.create_future()

    def read() -> None:
        try:
            value: object = input_fn(prompt)
        except BaseException as exc:  # EOFError, KeyboardInterrupt: handed to the waiting coroutine
            loop.call_soon_threadsafe(_settle, answer, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, answer, value, None)

    threading.Thread(target=read, name="ccproxy-login-input", daemon=True).start()
    result = await answer
    if inspect.isawaitable(result):
        return str(await result)
    return str(result)


def _settle(future: asyncio.Future[object], value: object, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


async def _run_browser_step(
    server: _CallbackServer, open_browser: BrowserFn | None, url: str, timeout: float
) -> str:
    opener = open_browser or webbrowser.open
    task: asyncio.Task[object] | None = None
    if inspect.iscoroutinefunction(opener):
        task = asyncio.ensure_future(opener(url))

        def _browser_done(t: asyncio.Task[object]) -> None:
            # A simulated browser that fails would otherwise leave the login waiting until the timeout.
            if not t.cancelled() and t.exception() is not None and not server.result.done():
                server.result.set_exception(t.exception() or CredentialError("browser step failed"))

        task.add_done_callback(_browser_done)
    else:
        try:
            opened = await asyncio.to_thread(opener, url)
        except Exception as exc:
            raise _NoBrowser(str(exc) or type(exc).__name__) from None
        if opened is False:  # webbrowser.open's "no runnable browser"
            raise _NoBrowser("no runnable browser found")
    try:
        return await asyncio.wait_for(asyncio.shield(server.result), timeout)
    except TimeoutError:
        raise CredentialError(f"no login callback received within {timeout:.0f}s; try again") from None
    finally:
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>ccproxy login</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


class _CallbackServer:
    """The local redirect target: checks ``state``, reports ``error``, resolves with the code."""

    def __init__(self, redirect_uri: str, expected_state: str) -> None:
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or not parts.hostname:
            raise CredentialError(f"redirect_uri {redirect_uri!r} is not a local http URL; use no_browser")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.expected_state = expected_state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get(self.path, self._callback)
        if self.path != "/cancel":
            # The Codex CLI sends GET /cancel to a previous login server holding its port.
            app.router.add_get("/cancel", self._cancel)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise CredentialError(
                    f"port {self.port} on {self.host} is in use (another login running?); "
                    "close it or log in with --no-browser"
                ) from None
            reason = exc.strerror or exc
            raise CredentialError(f"cannot listen on {self.host}:{self.port}: {reason}") from None
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _page(status: int, title: str, text: str) -> web.Response:
        from aiohttp import web

        body = _PAGE.format(title=html.escape(title), text=html.escape(text))
        return web.Response(status=status, text=body, content_type="text/html")

    async def _callback(self, request: web.Request) -> web.Response:
        q = request.query
        if self.result.done():
            return self._page(409, "Login already finished", "You can close this window.")
        if "error" in q:
            error = q.get("error", "")[:100]
            desc = q.get("error_description", "")[:200]
            if q.get("state") == self.expected_state:
                self.result.set_exception(
                    CredentialError(f"authorization failed: {error}" + (f": {desc}" if desc else ""))
                )
            return self._page(400, "Login failed", f"{error}: {desc}" if desc else error)
        if q.get("state") != self.expected_state:
            # Not ours (a stale tab, or a forged request): refuse it and keep waiting for the real one.
            return self._page(400, "State mismatch", "This link is not from the current login attempt.")
        code = q.get("code")
        if not code:
            return self._page(400, "Login failed", "The callback has no authorization code.")
        self.result.set_result(code)
        return self._page(200, "Login complete", "ccproxy is signed in. You can close this window.")

    async def _cancel(self, request: web.Request) -> web.Response:
        if not self.result.done():
            self.result.set_exception(CredentialError("login cancelled (another login took over the port)"))
        from aiohttp import web

        return web.Response(text="Login cancelled")
