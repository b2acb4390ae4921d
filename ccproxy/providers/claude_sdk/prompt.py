"""From an Anthropic-format request body (the translation core has already turned Chat/Responses bodies into
one) to what the agent is given: the system prompt, and one user message carrying everything it has not
seen yet. Also the server-only fields a body may not set, and the fingerprints that tell a follow-up
request from an edited history.

A history reaches a fresh agent as a transcript: the earlier turns rendered inside one user message
(``<conversation_history>``), images kept as image blocks, then the newest user message. Claude Code's
stream input starts a model turn per user message and does not take assistant turns, so a transcript is
the only way to hand it a conversation it did not have itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from ccproxy.errors import ProxyError

JSON = dict[str, Any]

# Options of the agent that only the server's config sets (ClaudeAgentOptions and CLI flag names).
SERVER_ONLY = frozenset(
    {
        "add_dirs",
        "agents",
        "allowed_tools",
        "can_use_tool",
        "cli_path",
        "continue_conversation",
        "cwd",
        "dangerously_skip_permissions",
        "disallowed_tools",
        "env",
        "executable",
        "extra_args",
        "fork_session",
        "hooks",
        "max_budget_usd",
        "max_turns",
        "mcp_config",
        "mcp_servers",
        "path_to_claude_code_executable",
        "permission_mode",
        "permission_prompt_tool_name",
        "plugins",
        "resume",
        "setting_sources",
        "settings",
        "user",
    }
)


def refuse_server_options(body: JSON) -> None:
    """400 naming the first field that would configure the agent from a request body."""
    for key in body:
        if key in SERVER_ONLY or key.replace("-", "_").lower() in SERVER_ONLY:
            raise ProxyError(
                400,
                f"'{key}' cannot be set by a request in SDK mode; it comes from the server's config "
                f"(plugins.claude_sdk.*)",
                param=key,
            )


@dataclass(slots=True)
class Prompt:
    system: str | None
    messages: list[JSON]  # Anthropic messages, the last one from the user
    fingerprints: list[str]


def read_request(body: JSON) -> Prompt:
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        raise ProxyError(
            400,
            "client-side tools cannot be used in SDK mode: the agent runs its own tools (configure them "
            "with plugins.claude_sdk.allowed_tools / mcp_servers)",
            param="tools",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "'messages' must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
            raise ProxyError(400, f"messages[{i}] must have role user or assistant", param=f"messages[{i}]")
    if messages[-1].get("role") != "user":
        raise ProxyError(
            400,
            "the last message must come from the user in SDK mode (the agent cannot continue a prefill)",
            param="messages",
        )
    return Prompt(system_text(body.get("system")), messages, [fingerprint(m) for m in messages])


def system_text(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    if isinstance(system, list):
        text = "\n\n".join(
            b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
        return text or None
    raise ProxyError(400, "'system' must be a string or a list of text blocks", param="system")


def fingerprint(message: JSON) -> str:
    """Role and visible content, whitespace ignored: the same turn however a client re-encodes it."""
    return fingerprint_text(str(message.get("role")), _flat_text(message.get("content")))


def fingerprint_text(role: str, text: str) -> str:
    digest = hashlib.blake2b("".join(text.split()).encode(), digest_size=12).hexdigest()
    return f"{role}:{digest}"


def _flat_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "image":
            parts.append("[image]")
        elif kind == "tool_result":
            parts.append(_flat_text(block.get("content")))
    return "".join(parts)


def user_message(messages: list[JSON]) -> JSON:
    """The stream-input message for the agent: a transcript of the earlier turns, then the last one."""
    blocks: list[JSON] = []
    if len(messages) > 1:
        blocks.append(_text("Earlier turns of this conversation, for context:\n<conversation_history>"))
        for message in messages[:-1]:
            role = str(message.get("role"))
            blocks.append(_text(f"\n<{role}>\n"))
            blocks.extend(_blocks(message.get("content")))
            blocks.append(_text(f"\n</{role}>"))
        blocks.append(_text("\n</conversation_history>\n\nThe user's new message:\n"))
    blocks.extend(_blocks(messages[-1].get("content")))
    return {
        "type": "user",
        "message": {"role": "user", "content": _merge_text(blocks)},
        "parent_tool_use_id": None,
    }


def _text(text: str) -> JSON:
    return {"type": "text", "text": text}


def _blocks(content: Any) -> list[JSON]:
    if isinstance(content, str):
        return [_text(content)]
    out: list[JSON] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            out.append(_text(str(block.get("text", ""))))
        elif kind in ("image", "document"):
            out.append({k: v for k, v in block.items() if k != "cache_control"})
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            out.append(_text(f"[tool call {block.get('name')}: {args}]"))
        elif kind == "tool_result":
            out.append(_text("[tool result: "))
            out.extend(_blocks(block.get("content")))
            out.append(_text("]"))
        # thinking / redacted_thinking: the agent's own reasoning is not replayed
    return out


def _merge_text(blocks: list[JSON]) -> list[JSON]:
    merged: list[JSON] = []
    for block in blocks:
        if block.get("type") == "text" and merged and merged[-1].get("type") == "text":
            merged[-1] = _text(merged[-1]["text"] + block["text"])
        else:
            merged.append(block)
    return merged
