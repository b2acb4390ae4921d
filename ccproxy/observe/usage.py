"""Reading the ledger: ``ccproxy usage`` and ``GET /usage`` share this query and its JSON shape.

``{"since": ISO time, "by": group, "rows": [{"key", "requests", "errors", "input_tokens",
"output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd",
"p50_ms", "p95_ms", "p50_ttfb_ms", "p95_ttfb_ms"}...], "total": {...}}`` (the total has the same
percentiles over all rows); rows are sorted by cost, then requests.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from ccproxy.observe.store import TOKEN_COLUMNS, Store

GROUPS = ("model", "provider", "day", "client", "key")
_TOKENS = TOKEN_COLUMNS
_COLUMNS = (
    "ts",
    "provider",
    "model",
    "model_served",
    "client",
    "client_key",
    "status",
    *_TOKENS,
    "cost_usd",
    "duration_ms",
    "ttfb_ms",
)
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageQueryError(ValueError):
    """A bad ``since`` or ``by``; the message is one line for the user."""


def parse_since(value: str, now: float | None = None) -> float:
    """``24h``, ``7d``, ``30m``, ``2w`` (ago), or a date/time (``2026-12-01``, UTC) → epoch seconds."""
    now = time.time() if now is None else now
    text = value.strip().lower()
    match = _SPAN.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageQueryError(
            f"invalid --since {value!r}: use a span like 24h, 7d, 30m or a date like 2026-12-01"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


_AT = {name: at for at, name in enumerate(_COLUMNS)}
_SUMS = ("requests", "errors", *_TOKENS, "cost_usd")


def _key_of(by: str) -> Callable[[tuple[Any, ...]], str]:
    """The group a row (``_COLUMNS`` order) belongs to."""
    if by == "model":
        served, model = _AT["model_served"], _AT["model"]
        return lambda row: str(row[served] or row[model] or "unknown")
    if by == "day":
        ts = _AT["ts"]
        days: dict[int, str] = {}

        def day(row: tuple[Any, ...]) -> str:
            number = int(row[ts] // 86400)
            name = days.get(number)
            if name is None:
                name = days[number] = dt.datetime.fromtimestamp(number * 86400, dt.UTC).strftime("%Y-%m-%d")
            return name

        return day
    at = _AT["client_key" if by == "key" else by]
    missing = "(no key)" if by == "key" else "unknown"
    return lambda row: str(row[at] or missing)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return round(sorted_values[index], 2)


class Aggregate:
    """Rows added in pieces (``Store.fold``), grouped as they come: only each group's sums and its
    latencies (8 bytes each, for the percentiles) are kept, never the rows."""

    def __init__(self, by: str) -> None:
        self.key = _key_of(by)
        self.sums: dict[str, list[Any]] = {}  # requests, errors, tokens by kind, cost
        self.durations: dict[str, array[float]] = {}
        self.ttfbs: dict[str, array[float]] = {}

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        key_of, sums = self.key, self.sums
        status, cost, duration, ttfb = _AT["status"], _AT["cost_usd"], _AT["duration_ms"], _AT["ttfb_ms"]
        t0, t1, t2, t3, t4 = (_AT[name] for name in _TOKENS)
        for row in rows:
            key = key_of(row)
            group = sums.get(key)
            if group is None:
                group = sums[key] = [0, 0, 0, 0, 0, 0, 0, 0.0]
                self.durations[key] = array("d")
                self.ttfbs[key] = array("d")
            group[0] += 1
            if row[status] >= 400:
                group[1] += 1
            group[2] += row[t0]
            group[3] += row[t1]
            group[4] += row[t2]
            group[5] += row[t3]
            group[6] += row[t4]
            group[7] += row[cost] or 0.0
            self.durations[key].append(row[duration])
            self.ttfbs[key].append(row[ttfb])

    def result(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        out = []
        for key, sums in self.sums.items():
            group: dict[str, Any] = {"key": key, **dict(zip(_SUMS, sums, strict=True))}
            group["cost_usd"] = round(sums[-1], 10)
            _percentiles(group, sorted(self.durations[key]), sorted(self.ttfbs[key]))
            out.append(group)
        total: dict[str, Any] = {name: sum(group[name] for group in out) for name in _SUMS}
        total["cost_usd"] = round(sum(sums[-1] for sums in self.sums.values()), 10)
        every = sorted(d for v in self.durations.values() for d in v)
        _percentiles(total, every, sorted(t for v in self.ttfbs.values() for t in v))
        out.sort(key=lambda g: (-g["cost_usd"], -g["requests"], g["key"]))
        return out, total


def aggregate(rows: Sequence[tuple[Any, ...]], by: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    totals = Aggregate(by)
    totals.add(rows)
    return totals.result()


def _percentiles(target: dict[str, Any], durations: list[float], ttfbs: list[float]) -> None:
    """``durations`` and ``ttfbs`` sorted."""
    target["p50_ms"] = _percentile(durations, 0.5)
    target["p95_ms"] = _percentile(durations, 0.95)
    target["p50_ttfb_ms"] = _percentile(ttfbs, 0.5)
    target["p95_ttfb_ms"] = _percentile(ttfbs, 0.95)


async def query_usage(store: Store, since: str, by: str) -> dict[str, Any]:
    if by not in GROUPS:
        raise UsageQueryError(f"invalid --by {by!r}: one of {', '.join(GROUPS)}")
    start = parse_since(since)
    totals = Aggregate(by)
    await store.fold(start, _COLUMNS, totals.add)
    grouped, total = totals.result()
    return {
        "since": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(timespec="seconds"),
        "by": by,
        "rows": grouped,
        "total": total,
    }


CSV_FIELDS = (
    "key",
    "requests",
    "errors",
    *_TOKENS,
    "cost_usd",
    "p50_ms",
    "p95_ms",
)
