"""OpenAI Chat Completions clients on an Anthropic Messages upstream.

Request: Chat body → Anthropic body. Response: Anthropic message → ``chat.completion``. Stream: Anthropic
events → ``chat.completion.chunk`` frames and ``[DONE]`` (NOTES §4.2).

Thinking blocks have no Chat field; they travel in the de-facto extension fields ``reasoning_content``
(visible text) and ``thinking_blocks`` (the complete blocks, signature or redacted data included) on the
assistant message, and come back from ``thinking_blocks`` on assistant history messages, so a tool loop with
thinking round-trips unmodified.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccproxy.formats import common, media
from ccproxy.formats.anthropic_events import AnthropicEventStream
from ccproxy.formats.base import JSON, Format, Translation, TranslationContext, TranslationError, register
from ccproxy.formats.errors import ErrorInfo, render_stream_error
from ccproxy.sse import DONE

# --- request ------------------------------------------------------------------------------------------


def convert_request(body: JSON) -> JSON:
    """Chat request body → Anthropic request body (``body`` is not modified)."""
    # Refused, ignored and malformed fields were answered at the route's edge (ccproxy.formats.fields).
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty list", param="messages")

    builder = common.MessagesBuilder()
    for i, message in enumerate(messages):
        _add_message(builder, message, f"messages[{i}]")
    if not builder.messages:
        raise TranslationError("messages contain no user or assistant content", param="messages")

    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or common.DEFAULT_MAX_TOKENS
    out: JSON = {"model": body.get("model"), "messages": builder.messages, "max_tokens": int(max_tokens)}
    if builder.system:
        out["system"] = builder.system
    if body.get("stream"):
        out["stream"] = True
    _sampling(body, out)
    _tools(body, out)
    _response_format(body.get("response_format"), out)
    metadata = common.user_id(body)
    if metadata:
        out["metadata"] = metadata
    budget = common.budget_for_effort(body.get("reasoning_effort"), "reasoning_effort")
    thinking = body.get("thinking")  # Anthropic-native extension field, passed through as given
    return common.finalize_request(
        out, budget=budget, explicit_thinking=thinking if isinstance(thinking, dict) else None
    )


def _sampling(body: JSON, out: JSON) -> None:
    if body.get("temperature") is not None:
        out["temperature"] = common.clamp_temperature(body["temperature"])
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("top_k") is not None:  # Anthropic-native extension field
        out["top_k"] = body["top_k"]
    if body.get("stop") is not None:
        stops = common.stop_sequences(body["stop"])
        if stops:
            out["stop_sequences"] = stops


def _add_message(builder: common.MessagesBuilder, message: Any, param: str) -> None:
    if not isinstance(message, dict):
        raise TranslationError("each message must be an object", param=param)
    role = message.get("role")
    if role in ("system", "developer"):
        builder.add_system(_text_only(message.get("content"), f"{param}.content"))
    elif role == "user":
        builder.add("user", _user_blocks(message.get("content"), f"{param}.content"))
    elif role == "assistant":
        builder.add("assistant", _assistant_blocks(message, param))
    elif role == "tool":
        builder.add("user", [_tool_result(message, param)])
    else:
        raise TranslationError(f"unsupported message role {role!r}", param=f"{param}.role")


def _text_only(content: Any, param: str) -> str:
    return "".join(common.chat_texts(content, param))


def _user_blocks(content: Any, param: str) -> list[JSON]:
    return common.anthropic_blocks(content, param, _user_part)


def _user_part(part: Any, param: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        url = common.chat_image_url(part)[0]
        if not isinstance(url, str):
            raise TranslationError("image_url.url must be a string", param=param)
        return media.anthropic_image_block(url, param)  # ``detail`` has no Anthropic counterpart
    if kind == "file":
        file = part.get("file") if isinstance(part.get("file"), dict) else {}
        return media.anthropic_document_block(file.get("file_data"), None, param)
    raise TranslationError(f"unsupported content part type {kind!r}", param=param)


def _assistant_blocks(message: JSON, param: str) -> list[JSON]:
    blocks: list[JSON] = []
    thinking = message.get("thinking_blocks")
    if isinstance(thinking, list):
        # Only complete blocks can be replayed; text without a signature would be rejected by Anthropic.
        blocks.extend(_replayable(b) for b in thinking if _replayable(b))
    text = _text_only(message.get("content"), f"{param}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    for j, call in enumerate(message.get("tool_calls") or []):
        blocks.append(_tool_use(call, f"{param}.tool_calls[{j}]"))
    return blocks


def _replayable(block: Any) -> JSON:
    if not isinstance(block, dict):
        return {}
    if block.get("type") == "thinking" and block.get("signature"):
        return {
            "type": "thinking",
            "thinking": str(block.get("thinking", "")),
            "signature": block["signature"],
        }
    if block.get("type") == "redacted_thinking" and block.get("data"):
        return {"type": "redacted_thinking", "data": block["data"]}
    return {}


def _tool_use(call: Any, param: str) -> JSON:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise TranslationError("only function tool calls are supported", param=param)
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError as exc:
        raise TranslationError(
            "tool call arguments must be a JSON object", param=f"{param}.function"
        ) from exc
    if not isinstance(parsed, dict):
        raise TranslationError("tool call arguments must be a JSON object", param=f"{param}.function")
    return {
        "type": "tool_use",
        "id": common.anthropic_tool_id(str(call.get("id") or "")),
        "name": str(function.get("name") or ""),
        "input": parsed,
    }


def _tool_result(message: JSON, param: str) -> JSON:
    # text parts, and images some clients send
    content = message.get("content")
    return common.anthropic_tool_result(message.get("tool_call_id"), content, f"{param}.content", _user_part)


def _tools(body: JSON, out: JSON) -> None:
    tools = body.get("tools") or []
    names: list[str] = []
    converted = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise TranslationError("only function tools are supported", param=f"tools[{i}].type")
        function = tool.get("function") or {}
        converted.append(
            common.anthropic_tool(
                function.get("name"), function.get("description"), function.get("parameters"), f"tools[{i}]"
            )
        )
        names.append(converted[-1]["name"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        keep = {
            (t.get("function") or {}).get("name") for t in allowed.get("tools") or [] if isinstance(t, dict)
        }
        converted = [t for t in converted if t["name"] in keep]
        choice = allowed.get("mode", "auto")
    if not converted:
        return  # tool_choice without tools means nothing to Anthropic
    out["tools"] = converted
    tool_choice = common.openai_tool_choice(choice, names, ("function",), _function_name)
    common.set_tool_choice(out, tool_choice, body.get("parallel_tool_calls"))


def _function_name(choice: JSON) -> Any:
    return (choice.get("function") or {}).get("name")


def _response_format(fmt: Any, out: JSON) -> None:
    if not isinstance(fmt, dict):
        return
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    common.apply_output_format(out, fmt.get("type"), schema, "response_format")


# --- non-streaming response -----------------------------------------------------------------------------


def convert_response(message: JSON, ctx: TranslationContext) -> JSON:
    """Anthropic message → ``chat.completion``."""
    texts: list[str] = []
    calls: list[JSON] = []
    thinking: list[JSON] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": common.json_dumps(block.get("input") or {}),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(_replayable(block) or dict(block))
        # server_tool_use / web_search_tool_result and unknown blocks have no Chat form
    stop_reason = message.get("stop_reason")
    out_message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": _refusal(message),
    }
    if calls:
        out_message["tool_calls"] = calls
    if thinking:
        out_message["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
        out_message["thinking_blocks"] = thinking
    return {
        "id": _chat_id(message.get("id")),
        "object": "chat.completion",
        "created": common.now(),
        "model": ctx.model,
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "finish_reason": common.chat_finish_reason(stop_reason),
                "logprobs": None,
            }
        ],
        "usage": common.anthropic_usage_to_chat(message.get("usage")),
    }


def _refusal(message: JSON) -> str | None:
    return (
        common.refusal_text(message.get("stop_details")) if message.get("stop_reason") == "refusal" else None
    )


def _chat_id(message_id: Any) -> str:
    return f"chatcmpl-{message_id}" if message_id else common.new_id("chatcmpl-")


# --- stream -----------------------------------------------------------------------------------------------

_TEXT, _TOOL, _THINKING, _IGNORED = 0, 1, 2, 3


class ChatStream(AnthropicEventStream):
    """Anthropic events → Chat chunks. Constant work per event: chunk bytes are a precomputed prefix
    (id, created, model) + the serialised delta + a fixed suffix; nothing accumulated is re-serialised."""

    __slots__ = (
        "_blocks",
        "_ctx",
        "_head",
        "_prefix",
        "_started",
        "_suffix",
        "_thinking_count",
        "_tool_count",
    )

    def __init__(self, ctx: TranslationContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._prefix = b""
        self._suffix = b""
        self._started = False
        # Anthropic block index → [kind, ordinal, state]; state: tool "arguments seen", thinking text parts.
        self._blocks: dict[int, list[Any]] = {}
        self._tool_count = 0
        self._thinking_count = 0

    # The chunk envelope is fixed per stream; only the delta and finish_reason vary.
    def _start(self, message_id: Any) -> None:
        head: JSON = {
            "id": _chat_id(message_id),
            "object": "chat.completion.chunk",
            "created": common.now(),
            "model": self._ctx.model,
        }
        if self._ctx.include_usage:
            head["usage"] = None  # documented shape: every chunk but the last carries usage: null
        self._head = head
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._started = True

    def _chunk(self, delta: JSON) -> bytes:
        return self._prefix + orjson.dumps(delta) + self._suffix

    def _on_message_start(self, message: JSON) -> bytes:
        self._start(message.get("id"))
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, data: JSON) -> bytes:
        if not self._started:
            self._start(None)
        index = data.get("index", 0)
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = [_TEXT, 0, None]
            text = block.get("text")
            return self._chunk({"content": text}) if text else b""
        if kind == "tool_use":
            ordinal = self._tool_count
            self._tool_count += 1
            initial = block.get("input")
            arguments = common.json_dumps(initial) if initial else ""
            self._blocks[index] = [_TOOL, ordinal, bool(arguments)]
            return self._chunk(
                {
                    "tool_calls": [
                        {
                            "index": ordinal,
                            "id": block.get("id"),
                            "type": "function",
                            "function": {"name": block.get("name"), "arguments": arguments},
                        }
                    ]
                }
            )
        if kind == "thinking":
            self._blocks[index] = [_THINKING, self._next_thinking(), [block.get("thinking") or ""], ""]
            text = block.get("thinking")
            return self._chunk({"reasoning_content": text}) if text else b""
        if kind == "redacted_thinking":
            self._blocks[index] = [_IGNORED, 0, None]
            entry = {"index": self._next_thinking(), "type": "redacted_thinking", "data": block.get("data")}
            return self._chunk({"thinking_blocks": [entry]})
        self._blocks[index] = [_IGNORED, 0, None]
        return b""

    def _next_thinking(self) -> int:
        self._thinking_count += 1
        return self._thinking_count - 1

    def _delta(self, data: JSON) -> bytes:
        state = self._blocks.get(data.get("index", 0))
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return self._chunk({"content": text}) if text else b""
        if state is None:
            return b""
        if kind == "input_json_delta" and state[0] == _TOOL:
            fragment = delta.get("partial_json")
            if not fragment:
                return b""
            state[2] = True
            return self._chunk({"tool_calls": [{"index": state[1], "function": {"arguments": fragment}}]})
        if kind == "thinking_delta" and state[0] == _THINKING:
            text = delta.get("thinking")
            if not text:
                return b""
            state[2].append(text)
            return self._chunk({"reasoning_content": text})
        if kind == "signature_delta" and state[0] == _THINKING:
            state[3] = delta.get("signature") or ""  # replaces, as the Anthropic SDK does
        return b""

    def _block_stop(self, data: JSON) -> bytes:
        state = self._blocks.get(data.get("index", 0))
        if state is None:
            return b""
        if state[0] == _TOOL and not state[2]:
            state[2] = True  # a tool without arguments: its input is {} (NOTES §4.2), never ""
            return self._chunk({"tool_calls": [{"index": state[1], "function": {"arguments": "{}"}}]})
        if state[0] == _THINKING:
            state[0] = _IGNORED
            entry = {
                "index": state[1],
                "type": "thinking",
                "thinking": "".join(state[2]),
                "signature": state[3],
            }
            return self._chunk({"thinking_blocks": [entry]})
        return b""

    def _end(self) -> bytes:
        self._done = True
        out = []
        if self._stop_reason == "refusal":
            out.append(self._chunk({"refusal": common.refusal_text(self._stop_details)}))
        finish = common.chat_finish_reason(self._stop_reason)
        out.append(self._prefix + b'{},"logprobs":null,"finish_reason":"' + finish.encode() + b'"}]}\n\n')
        if self._ctx.include_usage:
            usage = {**self._head, "choices": [], "usage": common.anthropic_usage_to_chat(self._usage)}
            out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        out.append(DONE)
        return b"".join(out)

    def _error(self, info: ErrorInfo) -> bytes:
        self._done = True
        return render_stream_error(Format.CHAT, info) + DONE


TRANSLATION = register(
    Translation(
        client=Format.CHAT,
        upstream=Format.ANTHROPIC,
        request=convert_request,
        response=convert_response,
        stream=ChatStream,
    )
)
