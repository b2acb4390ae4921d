"""One agent turn (several model calls with tool runs in between) as one Anthropic message.

The SDK's ``StreamEvent``s are the raw Anthropic SSE events of each model call. The relay renumbers their
blocks into one dense sequence, keeps one ``message_start`` and ends with one ``message_delta`` (the last
call's stop reason, the turn's total usage and the agent's cost) and ``message_stop``. What the agent did is
shown as text blocks (``tool_display = "text"``): each tool call and a bounded excerpt of its result, so
any standard client renders the answer; ``"none"`` leaves only the model's own text. Thinking blocks are
the agent's own and are not relayed. Subagent traffic (``parent_tool_use_id`` set) is not relayed.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from claude_agent_sdk import (
    AssistantMessage,
    ResultMessage,
    StreamEvent,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

from ccproxy.providers.claude_sdk.prompt import fingerprint_text

JSON = dict[str, Any]
Event = tuple[str, JSON]
ToolDisplay = Literal["text", "none"]
_RELAYED_BLOCKS = ("text",)


class Relay:
    __slots__ = (
        "_index",
        "_map",
        "blocks",
        "cost_usd",
        "display",
        "model",
        "result",
        "result_chars",
        "started",
        "stop_reason",
        "usage",
    )

    def __init__(self, model: str | None, display: ToolDisplay = "text", result_chars: int = 2000) -> None:
        self.model = model
        self.display = display
        self.result_chars = result_chars
        self.started = False
        self.blocks: list[JSON] = []  # the text blocks relayed so far (the non-streaming body)
        self.stop_reason: str | None = None
        self.usage: JSON = {}
        self.cost_usd: float | None = None
        self.result: ResultMessage | None = None
        self._index = 0
        self._map: dict[int, int] = {}

    @property
    def text(self) -> str:
        return "".join(b["text"] for b in self.blocks)

    def answer_fingerprint(self) -> str:
        return fingerprint_text("assistant", self.text)

    def feed(self, message: Any) -> list[Event]:
        if isinstance(message, StreamEvent):
            return [] if message.parent_tool_use_id else self._event(message.event)
        if isinstance(message, AssistantMessage):
            if message.parent_tool_use_id or self.display == "none":
                return []
            out: list[Event] = []
            for block in message.content:
                if isinstance(block, ToolUseBlock):
                    out += self._text_block(f"\n\n[tool call] {block.name}: {_args(block.input)}\n")
            return out
        if isinstance(message, UserMessage):
            if message.parent_tool_use_id or self.display == "none" or isinstance(message.content, str):
                return []
            results: list[Event] = []
            for block in message.content:
                if isinstance(block, ToolResultBlock):
                    label = "tool error" if block.is_error else "tool result"
                    results += self._text_block(f"[{label}] {self._excerpt(block.content)}\n\n")
            return results
        if isinstance(message, ResultMessage):
            self.result = message
            self.cost_usd = message.total_cost_usd
            if message.usage:
                self.usage = _usage(message.usage)
            return []
        return []

    def start(self, message_id: str = "msg_claude_sdk") -> list[Event]:
        """The ``message_start`` when the turn produced none of its own (e.g. only a tool error)."""
        if self.started:
            return []
        self.started = True
        message: JSON = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model or "claude-code",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def end(self) -> list[Event]:
        usage = dict(self.usage) or {"output_tokens": 0}
        if self.cost_usd is not None:
            usage["cost_usd"] = self.cost_usd
        delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}
        return [
            *self.start(),
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def message(self, message_id: str = "msg_claude_sdk") -> JSON:
        """The whole turn as a non-streaming Anthropic message."""
        usage = dict(self.usage) or {"input_tokens": 0, "output_tokens": 0}
        if self.cost_usd is not None:
            usage["cost_usd"] = self.cost_usd
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model or "claude-code",
            "content": [dict(b) for b in self.blocks] or [{"type": "text", "text": ""}],
            "stop_reason": self.stop_reason or "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }

    # -- internals

    def _event(self, event: JSON) -> list[Event]:
        kind = event.get("type")
        if kind == "content_block_delta":
            index = self._map.get(event.get("index", -1))
            if index is None:
                return []
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self.blocks[index]["text"] += delta.get("text", "")
            return [("content_block_delta", {**event, "index": index})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") not in _RELAYED_BLOCKS:
                return []
            index = self._map[event.get("index", 0)] = self._index
            self._index += 1
            self.blocks.append({"type": "text", "text": block.get("text", "")})
            return [("content_block_start", {**event, "index": index})]
        if kind == "content_block_stop":
            index = self._map.pop(event.get("index", -1), None)
            return [] if index is None else [("content_block_stop", {**event, "index": index})]
        if kind == "message_start":
            self._map.clear()
            if self.started:
                return []
            self.started = True
            message = dict(event.get("message") or {})
            if self.model:
                message["model"] = self.model
            else:
                self.model = message.get("model")
            return [("message_start", {**event, "message": message})]
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
        return []  # message_delta / message_stop of each call: one of each at the end of the turn

    def _text_block(self, text: str) -> list[Event]:
        index = self._index
        self._index += 1
        self.blocks.append({"type": "text", "text": text})
        return [
            *self.start(),
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": _EMPTY}),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    def _excerpt(self, content: Any) -> str:
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        text = "" if content is None else str(content)
        if len(text) > self.result_chars:
            text = text[: self.result_chars] + f"… ({len(text) - self.result_chars} more characters)"
        return text


_EMPTY: JSON = {"type": "text", "text": ""}


def _args(tool_input: Any) -> str:
    if isinstance(tool_input, dict) and set(tool_input) <= {"command", "description"}:
        return str(tool_input.get("command", ""))
    return orjson.dumps(tool_input).decode()


def _usage(usage: JSON) -> JSON:
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {k: usage[k] for k in keys if isinstance(usage.get(k), int)}


def sse(events: list[Event]) -> bytes:
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events
    )
