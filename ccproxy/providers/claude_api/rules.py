"""What an OAuth call to api.anthropic.com needs (upstreams.md §3), as pure functions over the body.

Each rule reports whether it changed anything, so an untouched passthrough body is sent as the client's
own bytes instead of being re-serialised.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ccproxy.accounts import Quota, Window, number

BILLING_PREFIX = "x-anthropic-billing-header:"
MAX_CACHE_MARKS = 4


def merge_betas(client: str | None, required: list[str]) -> str:
    """The client's ``anthropic-beta`` tags plus the required ones, nothing else, no duplicates."""
    tags = [t.strip() for t in (client or "").split(",") if t.strip()]
    seen = set(tags)
    tags.extend(t for t in required if t not in seen)
    return ",".join(dict.fromkeys(tags))


def ensure_identity(body: dict[str, Any], identity: str) -> bool:
    """Make the system prompt open with Claude Code's identity line, as an explicit first text block.

    Left alone when the identity is already among the first blocks, or when the request comes from
    Claude Code itself (its ``system[0]`` is the billing line and its identity follows).
    """
    if not identity:
        return False
    system = body.get("system")
    block = {"type": "text", "text": identity}
    if system is None or system == "" or system == []:
        body["system"] = [block]
        return True
    if isinstance(system, str):
        if system.startswith(identity):
            return False
        body["system"] = [block, {"type": "text", "text": system}]
        return True
    if not isinstance(system, list):
        return False
    head = [b.get("text", "") for b in system[:2] if isinstance(b, dict)]
    if any(isinstance(t, str) and (t.startswith(identity) or t.startswith(BILLING_PREFIX)) for t in head):
        return False
    body["system"] = [block, *system]
    return True


def limit_cache_control(body: dict[str, Any], limit: int = MAX_CACHE_MARKS) -> bool:
    """Keep at most ``limit`` ``cache_control`` marks: the ones on the largest blocks (§3.3)."""
    marked: list[tuple[int, int, dict[str, Any]]] = []
    for order, block in enumerate(_blocks(body)):
        if isinstance(block, dict) and "cache_control" in block:
            marked.append((len(str(block.get("text") or block.get("content") or block)), order, block))
    if len(marked) <= limit:
        return False
    marked.sort(key=lambda item: (-item[0], item[1]))
    for _, _, block in marked[limit:]:
        del block["cache_control"]
    return True


def _blocks(body: dict[str, Any]) -> list[Any]:
    blocks: list[Any] = []
    for key in ("tools", "system"):
        value = body.get(key)
        if isinstance(value, list):
            blocks.extend(value)
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks.extend(content)
    return blocks


_UNIFIED = "anthropic-ratelimit-unified-"
_STATUS = _UNIFIED + "status"
_RESET = _UNIFIED + "reset"
_WINDOWS = tuple(
    (name, _UNIFIED + name + "-status", _UNIFIED + name + "-utilization", _UNIFIED + name + "-reset")
    for name in ("5h", "7d")
)
_OVERAGE_STATUS = _UNIFIED + "overage-status"
_OVERAGE_RESET = _UNIFIED + "overage-reset"
_OVERAGE_IN_USE = _UNIFIED + "overage-in-use"
_SERVED = ("allowed", "allowed_warning")
QUOTA_HEADERS = (
    _STATUS,
    _RESET,
    *(name for window in _WINDOWS for name in window[1:]),
    _OVERAGE_STATUS,
    _OVERAGE_RESET,
    _OVERAGE_IN_USE,
)


def parse_quota(headers: Any, now: float) -> Quota | None:
    """The subscription's state from ``anthropic-ratelimit-unified-*`` (upstreams.md §3.6), or None.

    Overage is in use when the upstream says so (``overage-in-use: true``), or when the plan's own limit
    is rejected while overage is allowed: the answer is then billed as extra usage."""
    get = headers.get
    status = get(_STATUS)
    if status is None:
        return None
    windows = []
    binding: float | None = None
    for name, status_key, util_key, reset_key in _WINDOWS:
        reset = number(get(reset_key))
        util = number(get(util_key))
        window_status = get(status_key) or ("rejected" if util is not None and util >= 1 else "allowed")
        if reset is None and util is None and get(status_key) is None:
            continue
        windows.append(Window(name, window_status, util, reset))
        if window_status == "rejected" and reset is not None:
            binding = reset if binding is None else max(binding, reset)
    overage_status = get(_OVERAGE_STATUS)
    in_use = get(_OVERAGE_IN_USE) == "true" or (status == "rejected" and overage_status in _SERVED)
    return Quota(
        status=status,
        windows=tuple(windows),
        resets_at=binding or number(get(_RESET)),
        overage_status=overage_status,
        overage_resets_at=number(get(_OVERAGE_RESET)),
        overage_in_use=in_use,
    )


def usage_from_quota(quota: Quota, now: float) -> dict[str, Any]:
    """``/api/oauth/usage``'s shape (utilization in percent, ISO resets) from the last-seen headers, for when
    the endpoint cannot be asked."""

    def window(name: str) -> dict[str, Any] | None:
        w = next((w for w in quota.windows if w.name == name), None)
        if w is None:
            return None
        percent = round(w.utilization * 100, 1) if w.utilization is not None else None
        resets = datetime.fromtimestamp(w.resets_at, UTC).isoformat() if w.resets_at is not None else None
        return {"utilization": percent, "resets_at": resets}

    return {
        "five_hour": window("5h"),
        "seven_day": window("7d"),
        "seven_day_oauth_apps": None,
        "seven_day_opus": None,
        "seven_day_sonnet": None,
        "extra_usage": {
            "is_enabled": quota.overage_status in ("allowed", "allowed_warning"),
            "monthly_limit": None,
            "used_credits": None,
            "utilization": None,
        },
    }
