"""Several accounts per provider: which one serves a request, and what each has left.

One ``Accounts`` registry per auth provider (``claude``, ``codex``) holds its accounts in order: the login
ccproxy has always used (its own store, else the CLI's file, else the environment), then the named
accounts (``ccproxy auth login claude --account work``), each with its own ``TokenManager`` (own refresh
lock) and identity (the Codex account id comes from the account's own credential).

``choose(session_id)`` is the call every feature uses to get "the account for this request": session
affinity first, then the strategy (``fill-first``: the first with room; ``round-robin``), within the
lowest ``priority`` that has an account with room. The rate-limit headers of every response are read into
the account's ``Quota`` (``observe``); an account that is rejected (a 429, or headers saying so) or billed
as overage while ``billing.allow_overage`` is false rests until its reset plus a little jitter. The state is
written to a small 0600 file when it changes (debounced, in a worker thread), and read back at start-up.

With one account nothing changes from a single login: the upstream's own 429 reaches the client (there
is nowhere to fail over to), and only the billing guard parks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from ccproxy.auth.credential import Credential, CredentialError, CredentialSource
from ccproxy.auth.files import ccproxy_data_dir, read_json, write_json_atomic
from ccproxy.auth.manager import ProviderName, TokenManager
from ccproxy.auth.oauth import OAuthSettings
from ccproxy.errors import ProxyError

log = structlog.get_logger("ccproxy.accounts")

Strategy = Literal["fill-first", "round-robin"]
AccountState = Literal["ok", "limited", "overage", "login-needed"]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # used by the CLI only
# What the usual login is called after its source; a named account may not take these names.
RESERVED_NAMES = frozenset({"ccproxy", "claude-code", "codex-cli", "config", "default", "none"})
_AFFINITY_MAX = 4096  # sessions remembered per provider (oldest forgotten first)
_SAVE_DELAY = 1.0  # seconds: state changes are written at most about once a second


class AccountSettings(BaseModel):
    """How a provider's accounts are chosen (``plugins.<provider>.accounts``)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(
        "fill-first", description="fill-first: the first account until it is limited; round-robin: in turn"
    )
    priorities: dict[str, int] = Field(
        default_factory=dict, description="Account name -> priority (lower first; default 0)"
    )
    affinity: bool = Field(True, description="Keep a session on the account it started on while it has room")
    max_attempts: int = Field(
        3, ge=1, le=10, description="Accounts tried for one request before the first byte (failover bound)"
    )
    jitter_seconds: float = Field(
        5.0, ge=0, le=600, description="Random extra rest after a reset, so accounts do not return at once"
    )
    rest_seconds: float = Field(
        60.0, gt=0, description="Rest after a 429 that says nothing about when the limit resets"
    )


@dataclass(slots=True)
class Window:
    name: str  # "5h" / "7d" (Claude), "primary" / "secondary" (Codex)
    status: str  # allowed | allowed_warning | rejected
    utilization: float | None  # 0..1
    resets_at: float | None  # epoch seconds


@dataclass(slots=True)
class Quota:
    """What one response's rate-limit headers said."""

    status: str  # allowed | allowed_warning | rejected
    windows: tuple[Window, ...]
    resets_at: float | None = None  # when the binding limit resets
    overage_status: str | None = None
    overage_resets_at: float | None = None
    overage_in_use: bool = False  # this answer is billed as overage (extra usage)
    credits: dict[str, Any] | None = None  # Codex: has_credits, unlimited, balance (x-codex-credits-*)

    @property
    def rejected(self) -> bool:
        return self.status == "rejected" and not self.overage_in_use


# A provider's header reader: (response headers, now) -> what they say, or None when they say nothing.
# It runs on every response: a handful of dict lookups and float() calls, no regex.
QuotaParser = Callable[[Any, float], Quota | None]


class Account:
    """One login of a provider. ``credential()`` gives its (fresh) access token."""

    __slots__ = (
        "_name",
        "last_seen",
        "limited_until",
        "priority",
        "quota",
        "raw",
        "rest_reason",
        "resting_until",
        "static",
        "tokens",
    )

    def __init__(
        self,
        name: str | None,
        *,
        tokens: TokenManager | None = None,
        static: Credential | None = None,
        priority: int = 0,
    ) -> None:
        self._name = name  # None: the default login, named after where it was found
        self.tokens = tokens
        self.static = static
        self.priority = priority
        self.quota: Quota | None = None
        self.raw: tuple[str | None, ...] = ()  # the rate-limit header values last parsed
        self.resting_until = 0.0  # epoch seconds; 0: not resting
        self.rest_reason: AccountState = "ok"
        self.limited_until = 0.0  # a lone account's last 429 or rejected window: shown, never parked
        self.last_seen: float | None = None

    @property
    def name(self) -> str:
        if self._name is not None:
            return self._name
        source = self.tokens.source if self.tokens is not None else None
        return source.name if source is not None else ("config" if self.static is not None else "default")

    @property
    def source(self) -> str:
        if self.static is not None:
            return "config"
        source = self.tokens.source if self.tokens is not None else None
        return source.name if source is not None else "none"

    async def credential(self) -> Credential:
        if self.static is not None:
            return self.static
        assert self.tokens is not None
        return await self.tokens.get()

    def state(self, now: float) -> AccountState:
        if self.resting_until > now:
            return self.rest_reason
        if self.limited_until > now:  # a lone account is never parked, but it is shown as limited
            return "limited"
        return "ok"


class Accounts:
    """The accounts of one auth provider, the choice among them, and their quota state."""

    def __init__(
        self,
        provider: ProviderName,
        accounts: list[Account],
        settings: AccountSettings,
        parse: QuotaParser,
        *,
        headers: tuple[str, ...] = (),
        allow_overage: bool = False,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not accounts:
            raise ValueError("a provider needs at least one account")
        for account in accounts:
            account.priority = settings.priorities.get(account.name, account.priority)
        # Stable: equal priorities keep their order (the default login first, then named ones by name).
        self.accounts = sorted(accounts, key=lambda a: a.priority)
        self.single = len(accounts) == 1
        self.fill_first = settings.strategy == "fill-first"
        self.provider = provider
        self.settings = settings
        self.parse = parse
        self.headers = headers  # the names ``parse`` reads: unchanged values are not parsed again
        self.allow_overage = allow_overage
        self.state_path = state_path
        self.clock = clock
        self.rand = rand
        self._affinity: dict[str, Account] = {}
        self._turn = 0
        self._save_handle: asyncio.TimerHandle | None = None
        self._saving: asyncio.Task[None] | None = None
        self._saved = False

    # ------------------------------------------------------------------------------------ choosing

    def choose(
        self, session_id: str | None = None, tried: tuple[Account, ...] = (), *, rotate: bool = True
    ) -> Account:
        """The account for this request (public: the plan-usage endpoints use it too).

        ``tried``: accounts already used for this request; ``rotate=False`` for calls that are not requests
        (a model list), so they do not take a round-robin turn. Raises ``ProxyError`` 429
        (``retry-after``: the earliest reset) when every account is resting.
        """
        if self.single:
            only = self.accounts[0]
            if not tried and only.resting_until <= self.clock():
                return only  # the common case: one account, not parked
        now = self.clock()
        if session_id is None and self.fill_first:  # the first with room (accounts are in priority order)
            for account in self.accounts:
                if account.resting_until <= now and account not in tried:
                    return account
            raise self.all_limited(now)
        if session_id is not None and self.settings.affinity:
            kept = self._affinity.get(session_id)
            if kept is not None and kept.resting_until <= now and kept not in tried:
                return kept
        free = [a for a in self.accounts if a.resting_until <= now and a not in tried]
        if not free:
            raise self.all_limited(now)
        best = free[0].priority
        group = [a for a in free if a.priority == best]
        if self.settings.strategy == "round-robin" and len(group) > 1:
            chosen = group[self._turn % len(group)]
            self._turn += rotate
        else:
            chosen = group[0]
        if session_id is not None and self.settings.affinity:
            affinity = self._affinity
            affinity.pop(session_id, None)
            affinity[session_id] = chosen
            if len(affinity) > _AFFINITY_MAX:
                del affinity[next(iter(affinity))]
        return chosen

    def all_limited(self, now: float) -> ProxyError:
        resting = [a for a in self.accounts if a.resting_until > now] or self.accounts
        earliest = min(resting, key=lambda a: a.resting_until)
        wait = max(1, math.ceil(earliest.resting_until - now))
        reasons = "; ".join(f"{a.name}: {_why(a)}" for a in resting)
        until = _iso(earliest.resting_until)
        return ProxyError(
            429,
            f"every {self.provider} account is limited ({reasons}); the first is free again at {until}",
            error_type="rate_limit_error",
            headers={"retry-after": str(wait)},
        )

    # ----------------------------------------------------------------------------- what we learnt

    def observe(self, account: Account, status: int, headers: Any) -> None:
        """Read one response's rate-limit headers into ``account`` (every response, so: cheap)."""
        now = self.clock()
        account.last_seen = now
        if status < 400 and self.headers:
            raw = tuple(map(headers.get, self.headers))
            if raw == account.raw:
                return  # the usual answer: the same values as last time, nothing to parse
            account.raw = raw
        quota = self.parse(headers, now)
        if quota is None:
            if status == 429:
                self._limited(account, now + self.settings.rest_seconds)
            return
        changed = account.quota is None or _change_key(quota) != _change_key(account.quota)
        account.quota = quota
        # A 529 (overloaded) is the upstream's, not the account's: the request moves on, the account
        # does not rest.
        if status == 429 or quota.rejected:
            self._limited(account, quota.resets_at or now + self.settings.rest_seconds)
        elif quota.overage_in_use and not self.allow_overage:
            resets = quota.resets_at or quota.overage_resets_at or now + self.settings.rest_seconds
            self.rest(account, resets, "overage")
        if changed:
            self._schedule_save()

    def _limited(self, account: Account, until: float) -> None:
        if self.single:  # nowhere to go: the upstream's own 429 reaches the client; the state shows it
            account.limited_until = until
        else:
            self.rest(account, until, "limited")

    def rest(self, account: Account, until: float, reason: AccountState) -> None:
        until += self.rand() * self.settings.jitter_seconds
        if until > account.resting_until:
            account.resting_until = until
            account.rest_reason = reason
            log.info("account resting", provider=self.provider, account=account.name, reason=reason)
            self._schedule_save()

    def failing_over(self, account: Account, status: int) -> None:
        why = f"upstream {status}" if status else "connection failed"
        log.info("failing over to the next account", provider=self.provider, account=account.name, reason=why)

    def login_needed(self, account: Account) -> None:
        """The account's credential cannot be used: try the others for a while (re-read then)."""
        self.rest(account, self.clock() + self.settings.rest_seconds, "login-needed")

    # ---------------------------------------------------------------------------------- reporting

    async def snapshot(self) -> dict[str, Any]:
        """This provider's entry of ``GET /accounts`` (never a token)."""
        now = self.clock()
        rows = []
        for a in self.accounts:
            info: dict[str, Any] = {"plan": a.static.plan if a.static is not None else None}
            if a.tokens is not None:
                info = await a.tokens.status()
            quota = a.quota
            state: AccountState = a.state(now)
            if state == "ok" and a.tokens is not None and info.get("state") in ("missing", "invalid"):
                state = "login-needed"
            overage = None
            if quota is not None and quota.overage_status is not None:
                overage = {"status": quota.overage_status, "resets_at": _iso(quota.overage_resets_at)}
            rows.append(
                {
                    "name": a.name,
                    "source": a.source,
                    "plan": info.get("plan"),
                    "priority": a.priority,
                    "state": state,
                    "expires_at": _iso(info.get("expires_at")),
                    "resting_until": _iso(a.resting_until) if a.resting_until > now else None,
                    "windows": [
                        {
                            "name": w.name,
                            "status": w.status,
                            "utilization": w.utilization,
                            "resets_at": _iso(w.resets_at),
                        }
                        for w in (quota.windows if quota is not None else ())
                    ],
                    "overage": overage,
                    "credits": quota.credits if quota is not None else None,
                    "last_seen": _iso(a.last_seen),
                }
            )
        return {"strategy": self.settings.strategy, "accounts": rows}

    # -------------------------------------------------------------------------------- persistence

    def load_state(self) -> None:
        """Read the state kept by the last run (resting times, last-seen windows). Start-up only."""
        if self.state_path is None:
            return
        try:
            data = read_json(self.state_path) or {}
        except CredentialError as exc:
            log.warning("account state not read", error=exc.message)
            return
        saved = data.get(self.provider)
        if not isinstance(saved, dict):
            return
        for account in self.accounts:
            entry = saved.get(account.name)
            if isinstance(entry, dict):
                with contextlib.suppress(TypeError, ValueError, KeyError):
                    _restore(account, entry)

    def _schedule_save(self) -> None:
        if self.state_path is None or self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # The first change is written at once (start-up, warm-up); later ones at most about once a second.
        self._save_handle = loop.call_later(_SAVE_DELAY if self._saved else 0.0, self._start_save)

    def _start_save(self) -> None:
        self._save_handle = None
        self._saved = True
        self._saving = asyncio.ensure_future(self.save())

    async def save(self) -> None:
        """Write this provider's state (merged into the shared file) in a worker thread."""
        path = self.state_path
        if path is None:
            return
        mine = {a.name: _dump(a) for a in self.accounts}
        provider = self.provider

        def write() -> None:
            try:
                data = read_json(path) or {}
            except CredentialError:
                data = {}
            data[provider] = mine
            write_json_atomic(path, data)

        try:
            await asyncio.to_thread(write)
        except (OSError, CredentialError) as exc:
            log.warning("account state not saved", error=str(exc))

    async def close(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
            await self.save()
        if self._saving is not None:
            await self._saving


def state_file() -> Path:
    return ccproxy_data_dir() / "accounts-state.json"


def accounts_dir(provider: ProviderName) -> Path:
    """Where named accounts are stored: one 0600 credentials file per account."""
    return ccproxy_data_dir() / "accounts" / provider


def named_accounts(provider: ProviderName) -> list[str]:
    folder = accounts_dir(provider)
    try:
        names = sorted(p.stem for p in folder.glob("*.json") if NAME_PATTERN.match(p.stem))
    except OSError:
        return []
    return names


# ------------------------------------------------------------------------------------------ helpers


def _why(account: Account) -> str:
    if account.rest_reason == "overage":
        return "billed as overage (billing.allow_overage is false)"
    if account.rest_reason == "login-needed":
        return "login needed"
    quota = account.quota
    windows = [w for w in quota.windows if w.status == "rejected"] if quota is not None else []
    if not windows and quota is not None:
        windows = [max(quota.windows, key=lambda w: w.utilization or 0.0)] if quota.windows else []
    if not windows:
        return "rate limited"
    return ", ".join(_window_text(w) for w in windows)


def _window_text(w: Window) -> str:
    return f"{w.name} window" + (f" resets {_iso(w.resets_at)}" if w.resets_at else "")


def _iso(epoch: float | None) -> str | None:
    if epoch is None or epoch <= 0:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dump(account: Account) -> dict[str, Any]:
    quota = account.quota
    return {
        "resting_until": account.resting_until,
        "reason": account.rest_reason,
        "last_seen": account.last_seen,
        "quota": None
        if quota is None
        else {
            "status": quota.status,
            "resets_at": quota.resets_at,
            "overage_status": quota.overage_status,
            "overage_resets_at": quota.overage_resets_at,
            "overage_in_use": quota.overage_in_use,
            "windows": [[w.name, w.status, w.utilization, w.resets_at] for w in quota.windows],
            "credits": quota.credits,
        },
    }


def _restore(account: Account, entry: Mapping[str, Any]) -> None:
    account.resting_until = float(entry.get("resting_until") or 0.0)
    reason = entry.get("reason")
    if reason in ("ok", "limited", "overage", "login-needed"):
        account.rest_reason = reason
    last = entry.get("last_seen")
    account.last_seen = float(last) if last is not None else None
    q = entry.get("quota")
    if isinstance(q, dict):
        account.quota = Quota(
            status=str(q["status"]),
            windows=tuple(Window(str(n), str(s), u, r) for n, s, u, r in q.get("windows") or ()),
            resets_at=q.get("resets_at"),
            overage_status=q.get("overage_status"),
            overage_resets_at=q.get("overage_resets_at"),
            overage_in_use=bool(q.get("overage_in_use")),
            credits=q["credits"] if isinstance(q.get("credits"), dict) else None,
        )


async def registry_snapshot(
    provider: ProviderName, oauth: OAuthSettings | None, settings: AccountSettings | None
) -> dict[str, Any]:
    """``ccproxy auth status``'s view of a provider's accounts (no proxy needed): the logins on disk and
    the windows the proxy last saw (from the state file)."""
    from ccproxy.auth.login import get_provider

    spec = get_provider(provider, oauth)
    accounts = [Account(None, tokens=TokenManager(spec))]
    accounts += [
        Account(n, tokens=TokenManager(spec, sources=[account_store(provider, n)]))
        for n in named_accounts(provider)
    ]
    registry = Accounts(
        provider, accounts, settings or AccountSettings.model_validate({}), _no_quota, state_path=state_file()
    )
    registry.load_state()
    return await registry.snapshot()


def _no_quota(headers: Any, now: float) -> Quota | None:
    return None


def account_store(provider: ProviderName, name: str) -> CredentialSource:
    """The credentials file of the named account ``name`` (same shape as ccproxy's own store)."""
    path = accounts_dir(provider) / f"{name}.json"
    if provider == "claude":
        from ccproxy.auth.claude import ClaudeFileSource

        return ClaudeFileSource(path, name, own=True)
    from ccproxy.auth.codex import CodexAuthFileSource

    return CodexAuthFileSource(path, name)


def number(value: str | None) -> float | None:
    """A header's number, or None when absent or not a number."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _change_key(quota: Quota) -> tuple[Any, ...]:
    # Reset times drift with every answer (Codex sends "seconds from now"): only real changes are written.
    credits = tuple(quota.credits.values()) if quota.credits else ()
    return (
        quota.status,
        quota.overage_in_use,
        quota.overage_status,
        *(w.utilization for w in quota.windows),
        *credits,
    )
