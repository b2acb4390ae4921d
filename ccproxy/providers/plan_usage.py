"""Plan usage for the CLIs' status lines: Claude Code's ``/api/oauth/usage`` and the Codex CLI's
``/wham/usage`` and ``/wham/accounts/check``, answered by the upstream for the account in use
(docs/plan-usage.md).

These are side routes, not the translated data path: one small ``GET`` per status refresh, sent with the
account's own credential and identity headers (the caller's credentials are never forwarded), answered as
the upstream sent it. The upstream's answer is bounded in size and time. When it fails, the usage routes
answer from the account's last-seen rate-limit headers instead; no credential, or nothing seen yet, is an
error in the caller's own format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccproxy.accounts import Account, Quota
from ccproxy.auth.credential import Credential
from ccproxy.errors import ProxyError, error_response, failure_reason
from ccproxy.formats.base import Format
from ccproxy.meter import session_header
from ccproxy.plugins import PluginContext

if TYPE_CHECKING:
    from ccproxy.providers.base import ProviderPlugin

log = structlog.get_logger("ccproxy.plan_usage")
MAX_BYTES = 256 << 10  # a real answer is under 2 KB
TIMEOUT_SECONDS = 10.0  # Claude Code itself gives up after 5 s

# (the caller's request, the account's credential) -> the upstream URL and headers to GET
UsageTarget = Callable[[Request, Credential], tuple[str, dict[str, str]]]
# (the account's last-seen quota, now, its credential) -> the endpoint's answer built from them
LastSeen = Callable[[Quota, float, Credential], dict[str, Any]]


async def account_credential(
    plugin: ProviderPlugin, ctx: PluginContext, request: Request, chosen: dict[str, Any] | None = None
) -> Credential:
    """The credential of the account the caller's model requests use: the one place that chooses it.

    With one account per provider that is the provider's credential; with several, the account registry's
    choice for the request's session (its session headers), without taking a round-robin turn.
    """
    session = session_header(dict(request.headers))
    return await plugin.account_credential(ctx, None, session=session, chosen=chosen)


async def fetch(ctx: PluginContext, url: str, headers: dict[str, str], what: str) -> bytes:
    """``GET url``: the body of a 200 JSON answer, else a ``ProxyError`` saying what went wrong."""
    assert ctx.http is not None
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            resp = await ctx.http.send("GET", url, headers)
            try:
                data = await resp.read(limit=MAX_BYTES + 1)
            except BaseException:
                resp.close()
                raise
    except TimeoutError:
        raise ProxyError(504, f"{what} did not answer within {TIMEOUT_SECONDS:g} s") from None
    except OSError as exc:
        raise ProxyError(502, f"{what} could not be reached: {exc}") from None
    if len(data) > MAX_BYTES:
        resp.close()
        raise ProxyError(502, f"{what} answered more than {MAX_BYTES >> 10} KiB")
    resp.release()
    if resp.status != 200:
        status = resp.status if 400 <= resp.status < 600 else 502
        raise ProxyError(status, f"{what} answered {resp.status}: {failure_reason(resp.status, data)}")
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProxyError(502, f"{what} answered something other than JSON") from None
    return data


def usage_route(
    path: str,
    plugin: ProviderPlugin,
    ctx: PluginContext,
    fmt: Format,
    target: UsageTarget,
    what: str,
    last_seen: LastSeen | None = None,
) -> Route:
    """``GET path``: the upstream's answer for the account in use, or an error in ``fmt``.

    ``last_seen``: when the upstream cannot answer (no such endpoint, an error, no answer in time), the
    answer is built from the account's rate-limit headers as last seen, marked ``x-ccproxy-plan-usage:
    last-seen``. A refused credential (401/403) is not papered over."""

    async def endpoint(request: Request) -> Response:
        chosen: dict[str, Any] = {}
        try:
            credential = await account_credential(plugin, ctx, request, chosen)
            url, headers = target(request, credential)
            data = await fetch(ctx, url, headers, what)
        except ProxyError as exc:
            account: Account | None = chosen.get("account")
            if last_seen is None or account is None or exc.info.status in (401, 403):
                return error_response(fmt, exc.info)
            if account.quota is None or account.last_seen is None:
                info = replace(
                    exc.info, message=f"{exc.info.message}; no rate-limit headers seen for this account yet"
                )
                return error_response(fmt, info)
            log.info("plan usage from the last-seen headers", account=account.name, reason=exc.info.message)
            body = last_seen(account.quota, time.time(), credential)
            seen = datetime.fromtimestamp(account.last_seen, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            marks = {"x-ccproxy-plan-usage": "last-seen", "x-ccproxy-last-seen": seen}
            return Response(orjson.dumps(body), media_type="application/json", headers=marks)
        return Response(data, media_type="application/json")

    return Route(path, endpoint, methods=["GET"])
