"""OpenAI Responses clients on an Anthropic Messages upstream.

Request: Responses body → Anthropic body. Response: Anthropic message → ``response`` object. Stream:
Anthropic events → Responses events with ``sequence_number`` from 0 (NOTES §4.3).

Block mapping: consecutive text blocks → one ``message`` item (one ``output_text`` part each); ``tool_use``
→ ``function_call`` (Anthropic id as ``call_id``), or ``custom_tool_call`` when the request declared that
name as a ``custom`` (freeform) tool; ``thinking`` / ``redacted_thinking`` → one ``reasoning`` item each,
whose ``encrypted_content`` carries the complete block (``common.encode_thinking_block``) so it replays
unmodified when the client sends the item back. A web search ``server_tool_use`` and its
``web_search_tool_result`` → one ``web_search_call`` item; other server-tool blocks have no item here.

This module is the response and stream side; the request side (and the tool mapping) is
``ccproxy.formats.responses_on_anthropic_request``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from ccproxy.formats import common, freeform
from ccproxy.formats.anthropic_events import AnthropicEventStream
from ccproxy.formats.base import JSON, Format, Translation, TranslationContext, register
from ccproxy.formats.errors import ErrorInfo, openai_error, render_stream_error
from ccproxy.formats.responses_on_anthropic_request import ToolTable, convert_request, is_custom, tool_table
from ccproxy.sse import frame

__all__ = ["ResponsesStream", "convert_request", "convert_response"]

# --- shared by the response and the stream ---------------------------------------------------------------


def _call_item(tools: ToolTable, block_id: Any, flat: Any, payload: str, item_id: str, status: str) -> JSON:
    """The output item for a ``tool_use`` of tool ``flat``: ``custom_tool_call`` (``payload`` is the input
    text) or ``function_call`` (``payload`` is the arguments JSON), with the client's name and namespace."""
    kind, namespace, name = tools.get(str(flat), ("function", None, flat))
    if kind == "custom":
        item = _custom_tool_call(block_id, name, payload, item_id)
    else:
        item = _function_call(block_id, name, payload, item_id, status)
    if namespace is not None:
        item["namespace"] = namespace
    return item


def _response_shell(ctx: TranslationContext, response_id: str, created_at: int) -> JSON:
    """The fields of a Response object that echo the request (the same in every lifecycle event)."""
    req = ctx.request
    text = req["text"] if isinstance(req.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "model": ctx.model,
        "output": [],
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": req.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": req.get("temperature"),
        "text": {"format": {"type": "text"}, **text},
        "tool_choice": req.get("tool_choice") or "auto",
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p"),
        "truncation": req.get("truncation") or "disabled",
        "usage": None,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def _response_id(message_id: Any) -> str:
    return f"resp_{message_id}" if message_id else common.new_id("resp_")


def _reasoning_item(block: JSON, item_id: str) -> JSON:
    text = block.get("thinking") if block.get("type") == "thinking" else None
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
        "encrypted_content": common.encode_thinking_block(block),
        "status": "completed",
    }


def _function_call(block_id: Any, name: Any, arguments: str, item_id: str, status: str) -> JSON:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": block_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _custom_tool_call(block_id: Any, name: Any, text: str, item_id: str) -> JSON:
    return {"id": item_id, "type": "custom_tool_call", "call_id": block_id, "name": name, "input": text}


def _web_search_call(item_id: str, status: str, query: Any, sources: list[JSON] | None) -> JSON:
    action: JSON = {"type": "search"}
    if isinstance(query, str) and query:
        action["query"] = query
        action["queries"] = [query]
    if sources is not None:
        action["sources"] = sources
    return {"id": item_id, "type": "web_search_call", "status": status, "action": action}


def _search_result(block: JSON) -> tuple[str, list[JSON]]:
    """``(status, sources)`` of a ``web_search_tool_result`` block (an error object: the search failed)."""
    content = block.get("content")
    if not isinstance(content, list):
        return "failed", []
    sources = [
        {"type": "url", "url": str(r["url"])}
        for r in content
        if isinstance(r, dict) and r.get("type") == "web_search_result" and r.get("url")
    ]
    return "completed", sources


def _search_query(tool_input: Any) -> Any:
    return tool_input.get("query") if isinstance(tool_input, dict) else None


def _text_part(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _finish(shell: JSON, output: list[JSON], stop_reason: Any, usage: JSON) -> JSON:
    status, details = common.responses_status(stop_reason)
    return {
        **shell,
        "status": status,
        "incomplete_details": details,
        "output": output,
        "usage": common.anthropic_usage_to_responses(usage),
    }


# --- non-streaming response -----------------------------------------------------------------------------


def convert_response(message: JSON, ctx: TranslationContext) -> JSON:
    """Anthropic message → Responses ``response`` object."""
    output: list[JSON] = []
    parts: list[JSON] = []  # output_text parts of the message item being built
    tools = tool_table(ctx.request)
    searches: dict[Any, JSON] = {}  # server_tool_use id → its web_search_call item

    def close_message(status: str = "completed") -> None:
        if parts:
            output.append(
                {
                    "id": common.new_id("msg_"),
                    "type": "message",
                    "role": "assistant",
                    "status": status,
                    "content": parts.copy(),
                }
            )
            parts.clear()

    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block.get("text", "")))
            continue
        if kind == "server_tool_use" and block.get("name") == "web_search":
            close_message()
            item = _web_search_call(
                common.new_id("ws_"), "incomplete", _search_query(block.get("input")), None
            )
            searches[block.get("id")] = item
            output.append(item)
            continue
        if kind == "web_search_tool_result" and block.get("tool_use_id") in searches:
            item = searches[block.get("tool_use_id")]
            item["status"], item["action"]["sources"] = _search_result(block)
            continue
        if kind not in ("tool_use", "thinking", "redacted_thinking"):
            continue  # other server tool blocks: no Responses item for them here
        close_message()
        if kind == "tool_use":
            custom = is_custom(tools, block.get("name"))
            payload = (
                freeform.freeform_input(block.get("input"))
                if custom
                else common.json_dumps(block.get("input") or {})
            )
            item_id = common.new_id("ctc_" if custom else "fc_")
            output.append(
                _call_item(tools, block.get("id"), block.get("name"), payload, item_id, "completed")
            )
        else:
            output.append(_reasoning_item(block, common.new_id("rs_")))
    stop_reason = message.get("stop_reason")
    if stop_reason == "refusal":
        parts.append({"type": "refusal", "refusal": common.refusal_text(message.get("stop_details"))})
    close_message("incomplete" if common.responses_status(stop_reason)[0] == "incomplete" else "completed")
    shell = _response_shell(ctx, _response_id(message.get("id")), common.now())
    return _finish(shell, output, stop_reason, message.get("usage") or {})


# --- stream -----------------------------------------------------------------------------------------------


class _Item:
    """One open output item: its index, id, kind and the pieces its ``done`` events need."""

    __slots__ = (
        "block",
        "call_id",
        "content_index",
        "decoder",
        "index",
        "item_id",
        "kind",
        "name",
        "parts",
        "summary_open",
    )

    def __init__(self, index: int, item_id: str, kind: str) -> None:
        self.index = index
        self.item_id = item_id
        self.kind = kind  # "message", "function_call", "custom_tool_call", "reasoning", "web_search_call"
        self.parts: list[str] = []  # text of the current part, or argument fragments
        self.content_index = -1
        self.call_id: Any = None
        self.name: Any = None
        self.block: JSON = {}
        self.summary_open = False
        self.decoder: freeform.FreeformInputDecoder | None = None


class ResponsesStream(AnthropicEventStream):
    """Anthropic events → Responses events. Per event: one or a few small dicts serialised with orjson;
    text and argument fragments are appended to lists and joined once, when their item is done."""

    __slots__ = (
        "_blocks",
        "_count",
        "_ctx",
        "_message",
        "_output",
        "_searches",
        "_seq",
        "_shell",
        "_started",
        "_tools",
    )

    def __init__(self, ctx: TranslationContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._seq = 0
        self._started = False
        self._shell: JSON = {}
        self._output: dict[int, JSON] = {}  # completed items by output_index, for the terminal Response
        self._count = 0  # output items started: the next output_index
        self._blocks: dict[int, _Item | None] = {}  # Anthropic block index → its item (None: skipped block)
        self._message: _Item | None = None  # the open message item, shared by consecutive text blocks
        self._tools = tool_table(ctx.request)
        self._searches: dict[Any, _Item] = {}  # server_tool_use id → its open web_search_call item

    def _event(self, kind: str, data: JSON) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self._seq
        self._seq += 1
        return frame(kind, data)

    def _start(self, message_id: Any) -> bytes:
        self._started = True
        self._shell = _response_shell(self._ctx, _response_id(message_id), common.now())
        return self._event("response.created", {"response": self._shell}) + self._event(
            "response.in_progress", {"response": self._shell}
        )

    def _on_message_start(self, message: JSON) -> bytes:
        return self._start(message.get("id"))

    def _block_stop(self, data: JSON) -> bytes:
        item = self._blocks.get(data.get("index", 0))
        return self._close_block(item) if item is not None else b""

    def _new_item(self, kind: str, prefix: str) -> _Item:
        self._count += 1
        return _Item(self._count - 1, common.new_id(prefix), kind)

    def _block_start(self, data: JSON) -> bytes:
        out = b"" if self._started else self._start(None)
        index = data.get("index", 0)
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "text":
            return out + self._text_start(index, block.get("text") or "")
        if kind == "server_tool_use" and block.get("name") == "web_search":
            return out + self._search_start(index, block)
        if kind == "web_search_tool_result" and block.get("tool_use_id") in self._searches:
            self._blocks[index] = None
            return out + self._search_done(self._searches.pop(block.get("tool_use_id")), block)
        if kind not in ("tool_use", "thinking", "redacted_thinking"):
            self._blocks[index] = None
            return out
        out += self._close_message()
        if kind == "tool_use":
            custom = is_custom(self._tools, block.get("name"))
            item = self._new_item(*(("custom_tool_call", "ctc_") if custom else ("function_call", "fc_")))
            item.call_id, item.name = block.get("id"), block.get("name")
            if custom:
                item.decoder = freeform.FreeformInputDecoder()
            self._blocks[index] = item
            added = _call_item(self._tools, item.call_id, item.name, "", item.item_id, "in_progress")
            return out + self._event(
                "response.output_item.added", {"output_index": item.index, "item": added}
            )
        item = self._new_item("reasoning", "rs_")
        item.block = dict(block)
        self._blocks[index] = item
        added = {"id": item.item_id, "type": "reasoning", "summary": [], "status": "in_progress"}
        out += self._event("response.output_item.added", {"output_index": item.index, "item": added})
        if kind == "redacted_thinking":
            return out + self._close_block(item)
        text = block.get("thinking")
        return out + (self._summary_delta(item, text) if text else b"")

    def _search_start(self, index: int, block: JSON) -> bytes:
        out = self._close_message()
        item = self._new_item("web_search_call", "ws_")
        item.call_id = block.get("id")
        item.block = {"query": _search_query(block.get("input"))}
        self._blocks[index] = item
        self._searches[item.call_id] = item
        head = {"item_id": item.item_id, "output_index": item.index}
        added = {"id": item.item_id, "type": "web_search_call", "status": "in_progress"}
        out += self._event("response.output_item.added", {"output_index": item.index, "item": added})
        return out + self._event("response.web_search_call.in_progress", head)

    def _search_done(self, item: _Item, result: JSON | None, status: str = "completed") -> bytes:
        """The search's result arrived (or the stream ended first): complete its web_search_call item."""
        for key in [k for k, v in self._blocks.items() if v is item]:
            del self._blocks[key]
        sources: list[JSON] | None = None
        if result is not None:
            status, sources = _search_result(result)
        out = b""
        if status == "completed":
            head = {"item_id": item.item_id, "output_index": item.index}
            out = self._event("response.web_search_call.completed", head)
        done = _web_search_call(item.item_id, status, item.block.get("query"), sources)
        return out + self._item_done(item.index, done)

    def _open_message(self) -> tuple[bytes, _Item]:
        """The open message item (consecutive text blocks share it), and its added event when it is new."""
        if self._message is not None:
            return b"", self._message
        item = self._message = self._new_item("message", "msg_")
        added = {
            "id": item.item_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        return self._event("response.output_item.added", {"output_index": item.index, "item": added}), item

    def _text_start(self, index: int, text: str) -> bytes:
        out, item = self._open_message()
        self._blocks[index] = item
        item.content_index += 1
        item.parts = [text]
        out += self._event(
            "response.content_part.added",
            {
                "item_id": item.item_id,
                "output_index": item.index,
                "content_index": item.content_index,
                "part": _text_part(""),
            },
        )
        if text:
            out += self._text_delta(item, text)
        return out

    def _text_delta(self, item: _Item, text: str) -> bytes:
        return self._event(
            "response.output_text.delta",
            {
                "item_id": item.item_id,
                "output_index": item.index,
                "content_index": item.content_index,
                "delta": text,
                "logprobs": [],
            },
        )

    def _summary_delta(self, item: _Item, text: str) -> bytes:
        out = b""
        head = {"item_id": item.item_id, "output_index": item.index, "summary_index": 0}
        if not item.summary_open:
            item.summary_open = True
            out = self._event(
                "response.reasoning_summary_part.added",
                {**head, "part": {"type": "summary_text", "text": ""}},
            )
        item.parts.append(text)
        return out + self._event("response.reasoning_summary_text.delta", {**head, "delta": text})

    def _delta(self, data: JSON) -> bytes:
        item = self._blocks.get(data.get("index", 0))
        if item is None:
            return b""
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and item.kind == "message":
            text = delta.get("text")
            if not text:
                return b""
            item.parts.append(text)
            return self._text_delta(item, text)
        if kind == "input_json_delta" and item.kind == "function_call":
            fragment = delta.get("partial_json")
            if not fragment:
                return b""
            item.parts.append(fragment)
            return self._event(
                "response.function_call_arguments.delta",
                {
                    "item_id": item.item_id,
                    "output_index": item.index,
                    "delta": fragment,
                },
            )
        if kind == "input_json_delta" and item.kind == "custom_tool_call" and item.decoder is not None:
            text = item.decoder.feed(delta.get("partial_json") or "")
            if not text:
                return b""
            return self._event(
                "response.custom_tool_call_input.delta",
                {"item_id": item.item_id, "output_index": item.index, "delta": text},
            )
        if kind == "input_json_delta" and item.kind == "web_search_call":
            item.parts.append(delta.get("partial_json") or "")
            return b""
        if kind == "thinking_delta" and item.kind == "reasoning":
            text = delta.get("thinking")
            return self._summary_delta(item, text) if text else b""
        if kind == "signature_delta" and item.kind == "reasoning":
            item.block["signature"] = delta.get("signature") or ""
        return b""

    def _close_block(self, item: _Item, status: str = "completed") -> bytes:
        """The done events of one Anthropic block; a message item stays open for further text blocks."""
        for key in [k for k, v in self._blocks.items() if v is item]:
            del self._blocks[key]
        if item.kind == "message":
            text = "".join(item.parts)
            item.block.setdefault("content", []).append(_text_part(text))
            head = {"item_id": item.item_id, "output_index": item.index, "content_index": item.content_index}
            return self._event(
                "response.output_text.done", {**head, "text": text, "logprobs": []}
            ) + self._event("response.content_part.done", {**head, "part": _text_part(text)})
        if item.kind == "function_call":
            arguments = "".join(item.parts) or "{}"  # a tool without arguments has input {} (NOTES §4.2)
            done = _call_item(self._tools, item.call_id, item.name, arguments, item.item_id, status)
            out = self._event(
                "response.function_call_arguments.done",
                {
                    "item_id": item.item_id,
                    "output_index": item.index,
                    "arguments": arguments,
                    "name": done["name"],
                },
            )
            return out + self._item_done(item.index, done)
        if item.kind == "custom_tool_call":
            text = item.decoder.text() if item.decoder is not None else ""
            out = self._event(
                "response.custom_tool_call_input.done",
                {"item_id": item.item_id, "output_index": item.index, "input": text},
            )
            return out + self._item_done(
                item.index, _call_item(self._tools, item.call_id, item.name, text, item.item_id, status)
            )
        if item.kind == "web_search_call":
            # The query is complete; the item stays open until its web_search_tool_result block.
            if item.parts:
                with contextlib.suppress(orjson.JSONDecodeError):
                    item.block["query"] = _search_query(orjson.loads("".join(item.parts)))
            head = {"item_id": item.item_id, "output_index": item.index}
            return self._event("response.web_search_call.searching", head)
        out = b""
        if item.kind == "reasoning" and item.block.get("type") == "thinking":
            item.block["thinking"] = "".join(item.parts)
            if item.summary_open:
                head = {"item_id": item.item_id, "output_index": item.index, "summary_index": 0}
                text = item.block["thinking"]
                out = self._event(
                    "response.reasoning_summary_text.done", {**head, "text": text}
                ) + self._event(
                    "response.reasoning_summary_part.done",
                    {**head, "part": {"type": "summary_text", "text": text}},
                )
        return out + self._item_done(item.index, _reasoning_item(item.block, item.item_id))

    def _item_done(self, index: int, item: JSON) -> bytes:
        self._output[index] = item
        return self._event("response.output_item.done", {"output_index": index, "item": item})

    def _close_message(self, status: str = "completed") -> bytes:
        item = self._message
        if item is None:
            return b""
        out = b""
        if any(v is item for v in self._blocks.values()):
            out = self._close_block(item)  # a text block cut off without content_block_stop
        self._message = None
        done = {
            "id": item.item_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": item.block.get("content", []),
        }
        return out + self._item_done(item.index, done)

    def _refusal(self) -> bytes:
        """Anthropic's refusal explanation as a message item with a refusal part (NOTES §4.5)."""
        text = common.refusal_text(self._stop_details)
        out, item = self._open_message()
        item.content_index += 1
        head = {"item_id": item.item_id, "output_index": item.index, "content_index": item.content_index}
        part = {"type": "refusal", "refusal": text}
        out += self._event(
            "response.content_part.added", {**head, "part": {"type": "refusal", "refusal": ""}}
        )
        out += self._event("response.refusal.delta", {**head, "delta": text})
        out += self._event("response.refusal.done", {**head, "refusal": text})
        out += self._event("response.content_part.done", {**head, "part": part})
        item.block.setdefault("content", []).append(part)
        return out

    def _end(self) -> bytes:
        self._done = True
        incomplete = common.responses_status(self._stop_reason)[0] == "incomplete"
        status = "incomplete" if incomplete else "completed"
        out = b""
        # Blocks cut off by max_tokens never got content_block_stop (NOTES §4.1): close them here.
        for item in {
            id(v): v
            for v in self._blocks.values()
            if v is not None and v.kind not in ("message", "web_search_call")
        }.values():
            out += self._close_block(item, status)
        for search in self._searches.values():  # no web_search_tool_result arrived
            out += self._search_done(search, None, "incomplete")
        self._searches.clear()
        if self._stop_reason == "refusal":
            out += self._refusal()
        out += self._close_message(status)
        response = _finish(self._shell, self._final_output(), self._stop_reason, self._usage)
        return out + self._event(f"response.{response['status']}", {"response": response})

    def _error(self, info: ErrorInfo) -> bytes:
        self._done = True
        out = b"" if self._started else self._start(None)
        out += render_stream_error(Format.RESPONSES, info, self._seq)
        self._seq += 1
        failed = {
            **self._shell,
            "status": "failed",
            "output": self._final_output(),
            "error": {"code": openai_error(info)[2] or "server_error", "message": info.message},
            "usage": common.anthropic_usage_to_responses(self._usage),
        }
        return out + self._event("response.failed", {"response": failed})

    def _final_output(self) -> list[JSON]:
        return [self._output[k] for k in sorted(self._output)]


TRANSLATION = register(
    Translation(
        client=Format.RESPONSES,
        upstream=Format.ANTHROPIC,
        request=convert_request,
        response=convert_response,
        stream=ResponsesStream,
    )
)
