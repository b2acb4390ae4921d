"""What an OAuth call to api.anthropic.com needs (upstreams.md §3), as pure functions over the body.

Each rule reports whether it changed anything, so an untouched passthrough body is sent as the client's
own bytes instead of being re-serialised.
"""

from __future__ import annotations

from typing import Any

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
