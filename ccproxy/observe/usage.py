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
from collections.abc import Sequence
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


def _key(by: str, row: dict[str, Any]) -> str:
    if by == "model":
        return str(row["model_served"] or row["model"] or "unknown")
    if by == "day":
        return dt.datetime.fromtimestamp(row["ts"], dt.UTC).strftime("%Y-%m-%d")
    if by == "key":
        return str(row["client_key"] or "(no key)")
    return str(row[by] or "unknown")


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return round(sorted_values[index], 2)


def aggregate(rows: Sequence[tuple[Any, ...]], by: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    durations: dict[str, list[float]] = {}
    ttfbs: dict[str, list[float]] = {}
    total: dict[str, Any] = {"requests": 0, "errors": 0, **dict.fromkeys(_TOKENS, 0), "cost_usd": 0.0}
    for values in rows:
        row = dict(zip(_COLUMNS, values, strict=True))
        key = _key(by, row)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "key": key,
                "requests": 0,
                "errors": 0,
                **dict.fromkeys(_TOKENS, 0),
                "cost_usd": 0.0,
            }
            durations[key] = []
            ttfbs[key] = []
        for target in (group, total):
            target["requests"] += 1
            target["errors"] += row["status"] >= 400
            for name in _TOKENS:
                target[name] += row[name]
            target["cost_usd"] += row["cost_usd"] or 0.0
        durations[key].append(row["duration_ms"])
        ttfbs[key].append(row["ttfb_ms"])
    out = []
    for key, group in groups.items():
        group["cost_usd"] = round(group["cost_usd"], 10)
        _percentiles(group, durations[key], ttfbs[key])
        out.append(group)
    total["cost_usd"] = round(total["cost_usd"], 10)
    _percentiles(total, [d for v in durations.values() for d in v], [t for v in ttfbs.values() for t in v])
    out.sort(key=lambda g: (-g["cost_usd"], -g["requests"], g["key"]))
    return out, total


def _percentiles(target: dict[str, Any], durations: list[float], ttfbs: list[float]) -> None:
    durations.sort()
    ttfbs.sort()
    target["p50_ms"] = _percentile(durations, 0.5)
    target["p95_ms"] = _percentile(durations, 0.95)
    target["p50_ttfb_ms"] = _percentile(ttfbs, 0.5)
    target["p95_ttfb_ms"] = _percentile(ttfbs, 0.95)


async def query_usage(store: Store, since: str, by: str) -> dict[str, Any]:
    if by not in GROUPS:
        raise UsageQueryError(f"invalid --by {by!r}: one of {', '.join(GROUPS)}")
    start = parse_since(since)
    rows = await store.since(start, _COLUMNS)
    grouped, total = aggregate(rows, by)
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
