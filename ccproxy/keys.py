"""Client keys with budgets: who may call the proxy, how often, and for how much (issue 15, item 6).

A key is ``ccp_`` + 32 random bytes (urlsafe base64), shown once by ``ccproxy keys create``. Only its
SHA-256 is stored: the key has 256 bits of entropy, so a plain hash cannot be reversed or guessed and a
slow KDF would only cost time on every request. The key records live in a 0600 JSON file written
atomically (``KeyFile``); the spend per key lives in a second file that only the server writes
(``SpendFile``), so ``keys revoke`` from the CLI never races the server's bookkeeping. A ledger-table
store would plug in by offering the same ``load``/``save`` methods as these two classes.

The server side is ``KeyGate``: the core middleware calls ``admit`` for every guarded request; it refuses
with 401 (unknown, revoked or expired key) or 429 (over the rpm limit or the budget, with ``retry-after``)
in the caller's wire format, and otherwise puts the key's name on the request's state, from where the
proxy copies it onto ``RequestEvent.client``. Its ``ccproxy_request_finished`` hook (trylast, after the
pricing plugin set ``cost_usd``) adds the request's cost to the key's spend for the current period.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
from starlette.responses import Response
from starlette.types import Scope

from ccproxy.auth.files import ccproxy_data_dir, read_json, write_json_atomic
from ccproxy.errors import error_response, format_for
from ccproxy.formats.errors import ErrorInfo
from ccproxy.middleware import decoded, presented
from ccproxy.plugins import RequestEvent, hookimpl

log = structlog.get_logger("ccproxy.keys")
Period = Literal["day", "week", "month"]
PROVIDERS = ("claude", "codex")
KEY_PREFIX = "ccp_"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DURATION = re.compile(r"^(\d+)([hdw])$")


class KeyCommandError(ValueError):
    """A bad key command (name taken, unknown key, bad duration); the message is one line for the user."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ClientKey:
    name: str
    hash: str
    created: float
    budget_usd: float | None = None
    period: Period = "month"
    rpm: int | None = None
    providers: list[str] | None = None
    expires: float | None = None
    revoked: bool = False

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        del out["hash"]
        return out


def keys_path() -> Path:
    return ccproxy_data_dir() / "keys.json"


def spend_path() -> Path:
    return ccproxy_data_dir() / "keys-spend.json"


class KeyFile:
    """The key records (hashes only) in one 0600 JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or keys_path()

    def load(self) -> list[ClientKey]:
        data = read_json(self.path) or {}
        return [ClientKey(**item) for item in data.get("keys", [])]

    def save(self, keys: list[ClientKey]) -> None:
        write_json_atomic(self.path, {"keys": [asdict(k) for k in keys]})

    def mtime(self) -> float:
        try:
            return os.stat(self.path).st_mtime_ns / 1e9
        except FileNotFoundError:
            return 0.0


class SpendFile:
    """Spend per key for its current period: ``{name: [period_start, usd]}``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or spend_path()

    def load(self) -> dict[str, list[float]]:
        data = read_json(self.path) or {}
        return {k: [float(v[0]), float(v[1])] for k, v in data.items()}

    def save(self, spend: dict[str, list[float]]) -> None:
        write_json_atomic(self.path, dict(spend))


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise KeyCommandError(f"cannot read duration {text!r}; use e.g. 12h, 30d or 2w")
    unit = {"h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    return int(match.group(1)) * unit


def period_bounds(period: Period, now: float) -> tuple[float, float]:
    """Start and end (epoch seconds, UTC calendar) of the period that contains ``now``."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
    return start.timestamp(), end.timestamp()


def create_key(
    store: KeyFile,
    name: str,
    *,
    budget_usd: float | None = None,
    period: Period = "month",
    rpm: int | None = None,
    providers: list[str] | None = None,
    expires_in: str | None = None,
    now: float | None = None,
) -> str:
    """Add a key and return it (the only time it exists outside the caller's hands)."""
    if not _NAME.match(name):
        raise KeyCommandError(f"bad key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if budget_usd is not None and budget_usd < 0:
        raise KeyCommandError("--budget-usd must be >= 0")
    if rpm is not None and rpm < 1:
        raise KeyCommandError("--rpm must be >= 1")
    for provider in providers or ():
        if provider not in PROVIDERS:
            raise KeyCommandError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
    keys = store.load()
    if any(k.name == name and not k.revoked for k in keys):
        raise KeyCommandError(f"a key named {name!r} exists; revoke it first or pick another name")
    now = time.time() if now is None else now
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    expires = now + parse_duration(expires_in) if expires_in else None
    keys = [k for k in keys if k.name != name]
    keys.append(ClientKey(name, hash_key(key), now, budget_usd, period, rpm, providers or None, expires))
    store.save(keys)
    return key


def revoke_key(store: KeyFile, name: str) -> None:
    keys = store.load()
    for key in keys:
        if key.name == name and not key.revoked:
            key.revoked = True
            store.save(keys)
            return
    raise KeyCommandError(f"no active key named {name!r} (see `ccproxy keys list`)")


def key_rows(now: float | None = None) -> list[dict[str, Any]]:
    """What ``keys list`` shows: each key's settings, state and spend this period."""
    now = time.time() if now is None else now
    spend = SpendFile().load()
    rows = []
    for key in KeyFile().load():
        row = key.describe()
        start, _ = period_bounds(key.period, now)
        entry = spend.get(key.name)
        row["spent_usd"] = entry[1] if entry is not None and entry[0] == start else 0.0
        expired = key.expires is not None and now >= key.expires
        row["state"] = "revoked" if key.revoked else "expired" if expired else "active"
        rows.append(row)
    return rows


def provider_of(path: str) -> str:
    return "codex" if path.startswith(("/api/codex", "/codex")) else "claude"


@dataclass
class _Live:
    key: ClientKey
    calls: deque[float] = field(default_factory=deque)


class KeyGate:
    """The server-side check and the spend bookkeeping; built only when keys exist (else zero cost)."""

    def __init__(self, store: KeyFile, spend: SpendFile, clock: Any = time.time) -> None:
        self.store, self.spend_store, self.clock = store, spend, clock
        self.by_hash: dict[str, _Live] = {}
        self.by_name: dict[str, _Live] = {}
        # (x-api-key, authorization) as a client sends them → its key, until the key file changes: a known
        # key costs two header lookups, no SHA-256
        self._known: dict[tuple[bytes | None, bytes | None], _Live] = {}
        self._path = os.fspath(store.path)
        self.version: tuple[int, int, int] | None = None  # the key file's (inode, mtime, size) last read
        self._checked = False  # the key file was checked in this pass of the event loop (``_check``)
        self._periods: dict[Period, tuple[float, float]] = {}  # the current day/week/month, while it lasts
        self.spend = spend.load()
        self._flush: asyncio.Task[None] | None = None
        # The finished requests still waiting for their observers (``plugins.Hooks.drain``): a key with a
        # budget brings its spend up to date before it is checked.
        self.drain: Callable[[], None] | None = None
        self._reload()

    def _check(self) -> None:
        """Re-read the key file if it changed, at most once per pass of the event loop.

        A stat costs ~1.7 µs; under load one pass of the loop admits several requests. The check stays
        exact: the callback that allows the next stat is queued at the moment of this one, and the loop
        runs callbacks in order, so every request admitted on this stat had already arrived when it was
        taken. A revoke that finished before a request was sent is always seen by that request."""
        self._reload()
        try:
            asyncio.get_running_loop().call_soon(self._uncheck)
        except RuntimeError:  # no event loop (a synchronous caller): a stat every time
            return
        self._checked = True

    def _uncheck(self) -> None:
        self._checked = False

    def _reload(self) -> None:
        try:
            st = os.stat(self._path)
            version = (st.st_ino, st.st_mtime_ns, st.st_size)  # a rename or a same-tick rewrite shows
        except FileNotFoundError:
            version = (0, 0, 0)
        if version == self.version:
            return
        self.version = version
        old = self.by_hash
        self.by_hash = {}
        for key in self.store.load():
            live = old.get(key.hash)
            self.by_hash[key.hash] = _Live(key, live.calls if live else deque())
        self.by_name = {live.key.name: live for live in self.by_hash.values()}
        self._known = {}

    def _find(self, raw: Mapping[bytes, bytes]) -> _Live | None:
        """The key among the request's credentials (``x-api-key``, a Bearer token), by its hash."""
        live = None
        for candidate in presented(raw):
            digest = hash_key(candidate.decode("latin-1"))
            found = self.by_hash.get(digest)
            if found is not None and hmac.compare_digest(found.key.hash, digest):
                live = found
        return live

    def _period(self, period: Period, now: float) -> tuple[float, float]:
        bounds = self._periods.get(period)
        if bounds is None or not bounds[0] <= now < bounds[1]:
            bounds = self._periods[period] = period_bounds(period, now)
        return bounds

    def admit(self, scope: Scope, raw: Mapping[bytes, bytes], request_id: str) -> Response | None:
        """None to let the request through (the key's name put on the scope), or the refusal to send."""
        if not self._checked:
            self._check()  # a revoke or a new key takes effect at once
        path: str = scope["path"]
        live = self._known.get(credentials := (raw.get(b"x-api-key"), raw.get(b"authorization")))
        if live is None:
            live = self._find(raw)
            if live is not None and len(self._known) < 256:  # a client sends the same key each time
                self._known[credentials] = live
        if live is None:
            info = ErrorInfo(401, "authentication_error", "missing or invalid ccproxy key or auth token")
            return _refuse(path, raw, info, request_id, {"www-authenticate": "Bearer"})
        key, now = live.key, self.clock()
        if key.revoked:
            info = ErrorInfo(401, "authentication_error", f"ccproxy key {key.name!r} was revoked")
            return _refuse(path, raw, info, request_id, {"www-authenticate": "Bearer"})
        if key.expires is not None and now >= key.expires:
            when = _iso(key.expires)
            info = ErrorInfo(401, "authentication_error", f"ccproxy key {key.name!r} expired at {when}")
            return _refuse(path, raw, info, request_id, {"www-authenticate": "Bearer"})
        if key.providers:
            provider = provider_of(path)
            if provider not in key.providers:
                message = f"ccproxy key {key.name!r} may not use the {provider} provider"
                return _refuse(path, raw, ErrorInfo(403, "permission_error", message), request_id)
        if key.rpm is not None:
            calls = live.calls
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= key.rpm:
                reset = calls[0] + 60
                message = f"ccproxy key {key.name!r} is over its limit of {key.rpm} requests per minute"
                return _limited(path, raw, message, reset, now, request_id)
        if key.budget_usd is not None:
            if self.drain is not None:
                self.drain()
            start, end = self._period(key.period, now)
            spent = self._spent(key.name, start)
            if spent >= key.budget_usd:
                message = (
                    f"ccproxy key {key.name!r} has spent ${spent:.2f} of its ${key.budget_usd:.2f} "
                    f"budget for this {key.period}"
                )
                return _limited(path, raw, message, end, now, request_id)
        if key.rpm is not None:
            live.calls.append(now)
        scope.setdefault("state", {})["client_key"] = key.name
        return None

    def _spent(self, name: str, period_start: float) -> float:
        entry = self.spend.get(name)
        return entry[1] if entry is not None and entry[0] == period_start else 0.0

    @hookimpl(trylast=True)
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        name = event.key
        if not name or not event.cost_usd:
            return
        live = self.by_name.get(name)
        start, _ = self._period(live.key.period if live else "month", self.clock())
        entry = self.spend.get(name)
        if entry is None or entry[0] != start:  # a new period starts from nothing
            entry = self.spend[name] = [start, 0.0]
        entry[1] += event.cost_usd
        if self._flush is None:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop (a synchronous caller): write now
            self._flush = asyncio.get_running_loop().create_task(self._write_soon())
            return
        self.flush()

    async def _write_soon(self) -> None:
        try:
            await asyncio.sleep(1.0)  # many requests finishing together cost one write
        finally:
            self._flush = None  # what is spent from here on is in the next write
        await asyncio.to_thread(self.flush)

    def flush(self) -> None:
        try:
            self.spend_store.save(self.spend)
        except OSError as exc:
            log.error("cannot save key spend", path=str(self.spend_store.path), error=str(exc))

    async def close(self) -> None:
        if self._flush is not None and not self._flush.done():
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        self.flush()


def load_gate() -> KeyGate | None:
    """The gate when any key was ever created, else None (no key checks, nothing on the hot path)."""
    store = KeyFile()
    if not store.path.exists():
        return None
    return KeyGate(store, SpendFile())


def _refuse(
    path: str,
    raw: Mapping[bytes, bytes],
    info: ErrorInfo,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """The refusal in the caller's format (the headers are decoded only now, to tell which)."""
    return error_response(format_for(path, decoded(raw)), info, request_id, headers)


def _limited(
    path: str, raw: Mapping[bytes, bytes], message: str, reset: float, now: float, request_id: str
) -> Response:
    wait = max(1, int(reset - now + 0.999))
    info = ErrorInfo(429, "rate_limit_error", f"{message}; resets at {_iso(reset)}")
    return _refuse(path, raw, info, request_id, {"retry-after": str(wait)})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
