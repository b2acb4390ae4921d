"""What the ChatGPT Codex backend accepts (upstreams.md §6.2), as a pure function over the body."""

from __future__ import annotations

from typing import Any

from ccproxy.accounts import Quota, Window, number

# Responses keys the backend is known to take; anything else (max_output_tokens, metadata, temperature,
# top_p, response_format, user, ...) is answered with "Unsupported parameter" and is removed instead.
ALLOWED_KEYS = frozenset(
    {
        "model",
        "instructions",
        "input",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "store",
        "stream",
        "include",
        "prompt_cache_key",
        "text",
        "client_metadata",
        "service_tier",
    }
)
_MOVED_ROLES = ("system", "developer")


def backend_body(body: dict[str, Any], prompt_cache_key: str) -> tuple[dict[str, Any], list[str]]:
    """The body to send, and the names of the client fields that were removed."""
    out = {k: v for k, v in body.items() if k in ALLOWED_KEYS}
    removed = sorted(k for k in body if k not in ALLOWED_KEYS)
    out["stream"] = True
    out["store"] = False
    out.setdefault("prompt_cache_key", prompt_cache_key)
    instructions = (
        [out["instructions"]] if isinstance(out.get("instructions"), str) and out["instructions"] else []
    )
    raw_input = out.get("input", [])
    if isinstance(raw_input, str):
        raw_input = [_user_message(raw_input)]
    items: list[Any] = []
    for item in raw_input if isinstance(raw_input, list) else []:
        if not isinstance(item, dict) or item.get("type") == "item_reference":
            continue
        if item.get("type") == "reasoning" and not item.get("encrypted_content"):
            # With store:false the backend cannot resolve a bare reasoning id ("Item with id 'rs_…' not
            # found"): such an item (e.g. a kept response's, or one a client echoes back) is left out.
            continue
        if "role" in item and "type" not in item:
            item = {"type": "message", **item}
        if item.get("type") == "message" and item.get("role") in _MOVED_ROLES:
            text = _text_of(item.get("content"))
            if text:
                instructions.append(text)
            continue
        items.append(item)
    out["input"] = items
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    reasoning = out.get("reasoning")
    if isinstance(reasoning, dict) and reasoning:
        include = list(out.get("include") or [])
        if "reasoning.encrypted_content" not in include:
            include.append("reasoning.encrypted_content")
        out["include"] = include
    return out, removed


def _user_message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(p for p in parts if p)
    return ""


_CODEX_WINDOWS = tuple(
    (
        name,
        "x-codex-" + name + "-used-percent",
        "x-codex-" + name + "-reset-after-seconds",
        "x-codex-" + name + "-reset-at",
    )
    for name in ("primary", "secondary")
)
_WARN_AT = 80.0
_CREDITS = ("x-codex-credits-has-credits", "x-codex-credits-unlimited", "x-codex-credits-balance")
QUOTA_HEADERS = (
    *(name for window in _CODEX_WINDOWS for name in window[1:]),
    "x-codex-rate-limit-reached-type",
    *_CREDITS,
)


def parse_quota(headers: Any, now: float) -> Quota | None:
    """The plan's windows from ``x-codex-primary-*`` / ``x-codex-secondary-*`` (upstreams.md §6), or None.

    The backend has no overage header; its credits (``x-codex-credits-*``, paid usage beyond the plan) are
    kept as they come, for ``GET /accounts`` and the plan-usage answer."""
    get = headers.get
    windows = []
    binding: float | None = None
    for name, used_key, after_key, at_key in _CODEX_WINDOWS:
        used = number(get(used_key))
        if used is None:
            continue
        after = number(get(after_key))
        reset = now + after if after is not None else number(get(at_key))
        status = "rejected" if used >= 100 else "allowed_warning" if used >= _WARN_AT else "allowed"
        windows.append(Window(name, status, used / 100, reset))
        if status == "rejected" and reset is not None:
            binding = reset if binding is None else max(binding, reset)
    if not windows:
        return None
    rejected = any(w.status == "rejected" for w in windows)
    if not rejected and get("x-codex-rate-limit-reached-type"):
        rejected = True
    soonest = min((w.resets_at for w in windows if w.resets_at is not None), default=None)
    has, unlimited, balance = map(get, _CREDITS)
    credits = None
    if has is not None or unlimited is not None or balance is not None:
        true = ("true", "True", "1")
        # the balance stays the decimal string the backend sends
        credits = {"has_credits": has in true, "unlimited": unlimited in true, "balance": balance}
    return Quota(
        status="rejected" if rejected else "allowed",
        windows=tuple(windows),
        resets_at=binding or (soonest if rejected else None),
        credits=credits,
    )


_WINDOW_SECONDS = {"primary": 5 * 3600, "secondary": 7 * 86400}  # the plans' windows (no header says)


def usage_from_quota(quota: Quota, now: float, plan: str | None) -> dict[str, Any]:
    """``/wham/usage``'s shape from the last-seen ``x-codex-*`` headers, for when the endpoint cannot be
    asked (the credits as their headers last said, ``null`` when they said nothing)."""
    limits: dict[str, Any] = {"allowed": not quota.rejected, "limit_reached": quota.rejected}
    for w in quota.windows:
        resets = w.resets_at
        limits[f"{w.name}_window"] = {
            "used_percent": round(w.utilization * 100) if w.utilization is not None else None,
            "limit_window_seconds": _WINDOW_SECONDS.get(w.name),
            "reset_after_seconds": max(0, round(resets - now)) if resets is not None else None,
            "reset_at": round(resets) if resets is not None else None,
        }
    return {"plan_type": plan, "rate_limit": limits, "credits": quota.credits}
