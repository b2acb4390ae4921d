"""Anthropic Messages clients on an OpenAI Responses upstream (Claude Code on a ChatGPT plan).

Request: Anthropic body → Responses body. Response: terminal Responses object → Anthropic message. Stream:
Responses events → Anthropic events (``event:`` lines, ``message_start`` first, dense block indices).

Reasoning items survive the round trip through the client as ``thinking`` blocks whose ``signature`` is the
encoded item (``common.encode_reasoning_item``); they come back as ``reasoning`` input items in place.
Mapping tables and what is refused or ignored: ``docs/formats.md`` ("Clients on a Responses upstream").
This module is the response and stream side; the request side is ``anthropic_on_responses_request``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from ccproxy.formats.anthropic_on_responses_request import convert_request
from ccproxy.formats.base import JSON, Format, Translation, TranslationContext, register
from ccproxy.formats.common import (
    encode_reasoning_item,
    new_id,
    reasoning_text,
    responses_stop_reason,
    responses_usage_to_anthropic,
)
from ccproxy.formats.errors import ErrorInfo, parse_stream_error, render_stream_error
from ccproxy.formats.responses_events import ResponsesEventStream
from ccproxy.sse import frame

__all__ = ["AnthropicStream", "convert_request", "convert_response"]


# --- non-streaming response -------------------------------------------------------------------------------


def convert_response(response: JSON, ctx: TranslationContext) -> JSON:
    """Terminal Responses object → Anthropic message."""
    content: list[JSON] = []
    has_tools = refusal = False
    output = response.get("output")
    for item in output if isinstance(output, list) else []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "reasoning":
            content.append(_thinking_block(item))
        elif kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text" and part.get("text"):
                    content.append({"type": "text", "text": part["text"]})
                elif part.get("type") == "refusal":
                    refusal = True
                    content.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "function_call":
            has_tools = True
            content.append(_tool_use_block(item, _parse_arguments(item.get("arguments"))))
    stop = "refusal" if refusal else responses_stop_reason(response, has_tools)
    return {
        "id": _message_id(response),
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": responses_usage_to_anthropic(response.get("usage")),
    }


def _thinking_block(item: JSON) -> JSON:
    return {"type": "thinking", "thinking": reasoning_text(item), "signature": encode_reasoning_item(item)}


def _tool_use_block(item: JSON, tool_input: JSON) -> JSON:
    return {
        "type": "tool_use",
        "id": item.get("call_id") or item.get("id"),
        "name": item.get("name"),
        "input": tool_input,
    }


def _parse_arguments(arguments: Any) -> JSON:
    """Tool arguments as the object Anthropic requires ({} when missing or cut off)."""
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _message_id(response: JSON) -> str:
    rid = response.get("id")
    return f"msg_{rid}" if isinstance(rid, str) and rid else new_id("msg_")


# --- stream -------------------------------------------------------------------------------------------------

_TEXT, _THINKING, _TOOL = 1, 2, 3


class AnthropicStream(ResponsesEventStream):
    """Responses events → Anthropic events; one open content block at a time, constant work per event."""

    __slots__ = (
        "_args_sent",
        "_block_key",
        "_block_kind",
        "_has_tools",
        "_index",
        "_items",
        "_refusal",
        "_started",
    )

    def __init__(self, ctx: TranslationContext) -> None:
        super().__init__(ctx)
        self._started = False
        self._index = -1
        self._block_kind = 0
        self._block_key: tuple[int, int] = (-1, -1)
        self._args_sent = False
        self._has_tools = False
        self._refusal = False
        self._items: dict[int, JSON] = {}  # output_index → function_call item (for id and name)

    # protocol ---------------------------------------------------------------------------------------------

    def finish(self) -> bytes:
        """Upstream ended: after a terminal event nothing is due; an abrupt end still closes the message."""
        if self._done:
            return b""
        self._done = True
        # A tool call cut off mid-arguments must not be run as if complete: report it as truncated.
        cut_tool = self._block_kind == _TOOL
        out = self._start() + self._close()
        stop = "max_tokens" if cut_tool else ("tool_use" if self._has_tools else "end_turn")
        return out + self._message_end(stop, {"output_tokens": 0})

    def fail(self, status: int, error_type: str, message: str) -> bytes:
        if self._done:
            return b""
        self._done = True
        return render_stream_error(Format.ANTHROPIC, ErrorInfo(status, error_type, message))

    # message ----------------------------------------------------------------------------------------------

    def _start(self, response: JSON | None = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: JSON = {
            "id": _message_id(response or {}),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Responses reports usage only at the end; the final message_delta carries all of it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return frame("message_start", {"type": "message_start", "message": message})

    def _message_end(self, stop: str, usage: JSON) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage,
        }
        return frame("message_delta", delta) + frame("message_stop", {"type": "message_stop"})

    def _on_created(self, data: JSON) -> bytes:
        response = data.get("response")
        return self._start(response if isinstance(response, dict) else None)

    def _on_terminal(self, data: JSON) -> bytes:
        response = data.get("response")
        response = response if isinstance(response, dict) else {}
        out = self._start(response) + self._close()
        self._done = True
        if self._index < 0 and isinstance(response.get("output"), list):
            out += self._replay_output(response["output"])  # a backend that sent no item events
        if response.get("output") and not self._has_tools:
            self._has_tools = any(
                isinstance(i, dict) and i.get("type") == "function_call" for i in response["output"]
            )
        stop = "refusal" if self._refusal else responses_stop_reason(response, self._has_tools)
        return out + self._message_end(stop, responses_usage_to_anthropic(response.get("usage")))

    def _replay_output(self, output: list[Any]) -> bytes:
        out = b""
        for index, item in enumerate(output):
            if isinstance(item, dict):
                event = {"output_index": index, "item": item}
                if item.get("type") == "message":
                    out += self._replay_message(index, item)
                else:
                    out += self._on_item_added(event) + self._on_item_done(event)
        return out

    def _replay_message(self, index: int, item: JSON) -> bytes:
        out = b""
        for content_index, part in enumerate(item.get("content") or []):
            text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
            self._refusal = self._refusal or part.get("type") == "refusal"
            delta = {"output_index": index, "content_index": content_index, "delta": text}
            out += self._on_text_delta(delta) + self._close()
        return out

    def _on_failed(self, data: JSON) -> bytes:
        self._done = True
        return render_stream_error(Format.ANTHROPIC, parse_stream_error(data))

    def _on_error(self, data: JSON) -> bytes:
        self._done = True
        return render_stream_error(Format.ANTHROPIC, parse_stream_error(data))

    # blocks -----------------------------------------------------------------------------------------------

    def _open(self, kind: int, key: tuple[int, int], block: JSON) -> bytes:
        out = self._start() + self._close()
        self._index += 1
        self._block_kind, self._block_key, self._args_sent = kind, key, False
        return out + frame(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _close(self) -> bytes:
        if not self._block_kind:
            return b""
        self._block_kind = 0
        return frame("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: JSON) -> bytes:
        return frame(
            "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def _is_open(self, kind: int, key: tuple[int, int]) -> bool:
        return self._block_kind == kind and self._block_key == key

    def _text_key(self, data: JSON) -> tuple[int, int]:
        return (_int(data.get("output_index")), _int(data.get("content_index")))

    def _on_part_added(self, data: JSON) -> bytes:
        part = data.get("part")
        if isinstance(part, dict) and part.get("type") in {"output_text", "refusal"}:
            return self._open(_TEXT, self._text_key(data), {"type": "text", "text": ""})
        return b""

    def _on_part_done(self, data: JSON) -> bytes:
        return self._close() if self._is_open(_TEXT, self._text_key(data)) else b""

    def _on_text_delta(self, data: JSON) -> bytes:
        text = data.get("delta")
        if not text:
            return b""
        key = self._text_key(data)
        out = b"" if self._is_open(_TEXT, key) else self._open(_TEXT, key, {"type": "text", "text": ""})
        return out + self._delta({"type": "text_delta", "text": text})

    def _on_refusal_delta(self, data: JSON) -> bytes:
        self._refusal = True
        return self._on_text_delta(data)

    def _on_item_added(self, data: JSON) -> bytes:
        item, key, kind = _output_item(data)
        if kind == "reasoning":
            return self._open(_THINKING, key, {"type": "thinking", "thinking": "", "signature": ""})
        if kind == "function_call":
            self._items[key[0]] = item
            self._has_tools = True
            return self._open(_TOOL, key, _tool_use_block(item, {}))
        return b""

    def _on_item_done(self, data: JSON) -> bytes:
        item, key, kind = _output_item(data)
        if kind == "reasoning":
            out = b"" if self._is_open(_THINKING, key) else self._open(_THINKING, key, _empty_thinking())
            if not self._args_sent:  # no summary streamed: the whole visible text arrives here
                text = reasoning_text(item)
                if text:
                    out += self._delta({"type": "thinking_delta", "thinking": text})
            signature = encode_reasoning_item(item)
            return out + self._delta({"type": "signature_delta", "signature": signature}) + self._close()
        if kind == "function_call":
            self._items.setdefault(key[0], item)
            out = b"" if self._is_open(_TOOL, key) else self._open_tool(key)
            if not self._args_sent and item.get("arguments"):
                out += self._delta({"type": "input_json_delta", "partial_json": item["arguments"]})
            return out + self._close()
        if kind == "message" and self._block_kind == _TEXT and self._block_key[0] == key[0]:
            return self._close()
        return b""

    def _on_summary_part(self, data: JSON) -> bytes:
        key = (_int(data.get("output_index")), -1)
        if _int(data.get("summary_index")) > 0 and self._is_open(_THINKING, key) and self._args_sent:
            return self._delta({"type": "thinking_delta", "thinking": "\n\n"})  # same join as reasoning_text
        return b""

    def _on_thinking_delta(self, data: JSON) -> bytes:
        text = data.get("delta")
        if not text:
            return b""
        key = (_int(data.get("output_index")), -1)
        out = b"" if self._is_open(_THINKING, key) else self._open(_THINKING, key, _empty_thinking())
        self._args_sent = True  # "text already streamed" for thinking blocks
        return out + self._delta({"type": "thinking_delta", "thinking": text})

    def _open_tool(self, key: tuple[int, int]) -> bytes:
        item = self._items.get(key[0]) or {}
        self._has_tools = True
        return self._open(_TOOL, key, _tool_use_block(item, {}))

    def _on_args_delta(self, data: JSON) -> bytes:
        fragment = data.get("delta")
        if not fragment:
            return b""
        key = (_int(data.get("output_index")), -1)
        out = b"" if self._is_open(_TOOL, key) else self._open_tool(key)
        self._args_sent = True
        return out + self._delta({"type": "input_json_delta", "partial_json": fragment})

    def _on_args_done(self, data: JSON) -> bytes:
        key = (_int(data.get("output_index")), -1)
        arguments = data.get("arguments")
        if self._args_sent or not arguments or not self._is_open(_TOOL, key):
            return b""
        self._args_sent = True
        return self._delta({"type": "input_json_delta", "partial_json": arguments})

    # one table per class (see ResponsesEventStream)
    _HANDLERS: ClassVar[dict[str, Callable[[AnthropicStream, JSON], bytes]]] = {
        "response.created": _on_created,
        "response.in_progress": _on_created,
        "response.output_item.added": _on_item_added,
        "response.output_item.done": _on_item_done,
        "response.content_part.added": _on_part_added,
        "response.content_part.done": _on_part_done,
        "response.output_text.delta": _on_text_delta,
        "response.refusal.delta": _on_refusal_delta,
        "response.reasoning_summary_part.added": _on_summary_part,
        "response.reasoning_summary_text.delta": _on_thinking_delta,
        "response.reasoning_text.delta": _on_thinking_delta,
        "response.function_call_arguments.delta": _on_args_delta,
        "response.function_call_arguments.done": _on_args_done,
        "response.completed": _on_terminal,
        "response.incomplete": _on_terminal,
        "response.failed": _on_failed,
        "error": _on_error,
    }


def _empty_thinking() -> JSON:
    return {"type": "thinking", "thinking": "", "signature": ""}


def _output_item(data: JSON) -> tuple[JSON, tuple[int, int], Any]:
    """An output_item event's item, its block key and its type (``None`` when the item is not an object:
    the handlers then do nothing)."""
    item = data.get("item")
    if not isinstance(item, dict):
        return {}, (0, -1), None
    return item, (_int(data.get("output_index")), -1), item.get("type")


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


register(
    Translation(
        client=Format.ANTHROPIC,
        upstream=Format.RESPONSES,
        request=convert_request,
        response=convert_response,
        stream=AnthropicStream,
    )
)
