"""OpenAI Chat Completions clients on an OpenAI Responses upstream (the ChatGPT Codex backend).

Request: Chat body → Responses body. Response: terminal Responses object → ``chat.completion``. Stream:
Responses events → ``chat.completion.chunk`` frames ending in ``[DONE]``.

Chat has no place for reasoning content: reasoning items are dropped (their tokens stay in
``completion_tokens_details.reasoning_tokens``). Mapping tables: ``docs/formats.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ccproxy.formats.base import JSON, Format, Translation, TranslationContext, TranslationError, register
from ccproxy.formats.common import (
    assistant_message,
    chat_finish_reason,
    chat_image_url,
    chat_texts,
    each_message,
    new_id,
    now,
    responses_function_tool,
    responses_message,
    responses_stop_reason,
    responses_tools,
    responses_usage_to_chat,
)
from ccproxy.formats.errors import ErrorInfo, parse_stream_error, render_stream_error
from ccproxy.formats.responses_events import ResponsesEventStream
from ccproxy.sse import DONE, frame

# Copied unchanged: same name and meaning in both APIs.
_PASSTHROUGH = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "metadata",
    "stream",
)
# Refused, ignored and malformed fields were answered at the route's edge (ccproxy.formats.fields).


# --- request --------------------------------------------------------------------------------------------


def convert_request(body: JSON) -> JSON:
    """Chat Completions request → Responses request (the input is not mutated)."""
    out: JSON = {"model": body.get("model")}
    instructions, items = _input_items(body.get("messages"))
    if instructions:
        out["instructions"] = instructions
    out["input"] = items
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(cap, int):
        out["max_output_tokens"] = max(cap, 16)  # Responses' minimum is 16
    for key in _PASSTHROUGH:
        if body.get(key) is not None:
            out[key] = body[key]
    _apply_tools(body, out)
    effort = body.get("reasoning_effort")
    if effort is not None:
        out["reasoning"] = {"effort": effort}
    _apply_text(body, out)
    return out


def _input_items(messages: Any) -> tuple[str, list[JSON]]:
    """``(instructions, input)``: leading system/developer messages become ``instructions``; later ones
    keep their position as system/developer input messages."""
    leading: list[str] = []
    items: list[JSON] = []
    for param, message in each_message(messages):
        role = message.get("role")
        if role in {"system", "developer"}:
            text = _text_content(message.get("content"), f"{param}.content")
            if not items:
                leading.append(text)
            elif text:
                items.append(responses_message(str(role), [{"type": "input_text", "text": text}]))
        elif role == "user":
            items.append(responses_message("user", _user_parts(message.get("content"), param)))
        elif role == "assistant":
            _assistant_items(message, param, items)
        elif role == "tool":
            items.append(_tool_output(message, param))
        else:
            raise TranslationError(f"unsupported role {role!r}", param=f"{param}.role")
    return "\n\n".join(t for t in leading if t), items


def _text_content(content: Any, param: str) -> str:
    return "\n".join(chat_texts(content, param))


def _user_parts(content: Any, param: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=f"{param}.content")
    return [_user_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]


def _user_part(part: Any, param: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"type": "input_text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        url, detail = chat_image_url(part)
        if not isinstance(url, str) or not url:
            raise TranslationError("image_url needs a url", param=f"{param}.image_url")
        return {"type": "input_image", "image_url": url, "detail": detail or "auto"}
    if kind == "file":
        return _file_part(part.get("file"), param)
    raise TranslationError(f"unsupported content part type {kind!r}", param=f"{param}.type")


def _file_part(file: Any, param: str) -> JSON:
    if not isinstance(file, dict):
        raise TranslationError("file parts need a file object", param=f"{param}.file")
    out: JSON = {"type": "input_file"}
    for key in ("file_id", "file_data", "filename"):
        if file.get(key):
            out[key] = file[key]
    if "file_id" not in out and "file_data" not in out:
        raise TranslationError("file parts need file_data or file_id", param=f"{param}.file")
    return out


def _assistant_items(message: JSON, param: str, items: list[JSON]) -> None:
    text = _text_content(message.get("content"), f"{param}.content") or str(message.get("refusal") or "")
    if text:
        items.append(assistant_message(text))
    for k, call in enumerate(message.get("tool_calls") or []):
        items.append(_function_call(call, f"{param}.tool_calls[{k}]"))


def _function_call(call: Any, param: str) -> JSON:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not call["id"]:
        raise TranslationError("tool calls need an id and a function", param=param)
    if call.get("type", "function") != "function":
        raise TranslationError("only function tool calls are supported", param=f"{param}.type")
    arguments = function.get("arguments")
    return {
        "type": "function_call",
        "call_id": call["id"],
        "name": function.get("name"),
        "arguments": arguments if isinstance(arguments, str) and arguments else "{}",
    }


def _tool_output(message: JSON, param: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError("tool messages need a tool_call_id", param=f"{param}.tool_call_id")
    output = _text_content(message.get("content"), f"{param}.content")
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _apply_tools(body: JSON, out: JSON) -> None:
    responses_tools(body, out, _tool)
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in {"auto", "none", "required"}:
            raise TranslationError(f"unsupported tool_choice {choice!r}", param="tool_choice")
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        out["tool_choice"] = {"type": "function", "name": name}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        allowed = allowed if isinstance(allowed, dict) else {}
        names = [t.get("function", {}).get("name") for t in allowed.get("tools") or [] if isinstance(t, dict)]
        out["tool_choice"] = {
            "type": "allowed_tools",
            "mode": allowed.get("mode", "auto"),
            "tools": [{"type": "function", "name": name} for name in names],
        }
    else:
        raise TranslationError("unsupported tool_choice", param="tool_choice")


def _tool(tool: Any, param: str) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise TranslationError(f"unsupported tool type {kind!r}", param=f"{param}.type")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise TranslationError("function tools need a function object", param=f"{param}.function")
    return responses_function_tool(
        function.get("name"),
        function.get("description"),
        function.get("parameters"),
        function.get("strict"),
        f"{param}.function",
    )


def _apply_text(body: JSON, out: JSON) -> None:
    text: JSON = {}
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema")
        schema = schema if isinstance(schema, dict) else {}
        converted: JSON = {"type": "json_schema", "name": schema.get("name") or "output"}
        for key in ("schema", "description", "strict"):
            if schema.get(key) is not None:
                converted[key] = schema[key]
        text["format"] = converted
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        text["format"] = {"type": "json_object"}
    elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise TranslationError("unsupported response_format", param="response_format")
    if body.get("verbosity") is not None:
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text


# --- non-streaming response -------------------------------------------------------------------------------


def convert_response(response: JSON, ctx: TranslationContext) -> JSON:
    """Terminal Responses object → ``chat.completion``."""
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[JSON] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal", "")))
        elif kind == "function_call":
            calls.append(_tool_call(item, len(calls), full=True))
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": "".join(refusals) if refusals else None,
    }
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": _finish(response, bool(calls)),
        "logprobs": None,
    }
    return {
        "id": _completion_id(response),
        "object": "chat.completion",
        "created": _created(response),
        "model": ctx.model,
        "choices": [choice],
        "usage": responses_usage_to_chat(response.get("usage")),
    }


def _tool_call(item: JSON, index: int, *, full: bool) -> JSON:
    arguments = item.get("arguments") or ("{}" if full else "")
    call: JSON = {
        "id": item.get("call_id") or item.get("id"),
        "type": "function",
        "function": {"name": item.get("name"), "arguments": arguments},
    }
    if not full:
        call["index"] = index
    return call


def _finish(response: JSON, has_tool_calls: bool) -> str:
    return chat_finish_reason(responses_stop_reason(response, has_tool_calls))


def _completion_id(response: JSON) -> str:
    rid = response.get("id")
    return f"chatcmpl-{rid}" if isinstance(rid, str) and rid else new_id("chatcmpl-")


def _created(response: JSON) -> int:
    created = response.get("created_at")
    return int(created) if isinstance(created, int | float) else now()


# --- stream -------------------------------------------------------------------------------------------------


class ChatStream(ResponsesEventStream):
    """Responses events → Chat chunks; constant work per event. The terminal event closes the answer: an
    ``error`` the upstream sends after ``response.completed`` is logged, never turned into a failure of an
    answer the client already has in full."""

    __slots__ = (
        "_args_sent",
        "_call_open",
        "_calls",
        "_current",
        "_head",
        "_include_usage",
        "_role_sent",
    )

    def __init__(self, ctx: TranslationContext) -> None:
        super().__init__(ctx)
        self._include_usage = ctx.include_usage
        self._head: JSON = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": now()}
        self._role_sent = False
        self._calls: dict[int, int] = {}  # output_index → tool call ordinal
        self._current = -1  # output_index of the function call being streamed
        self._args_sent = False
        self._call_open = False

    def finish(self) -> bytes:
        if self._failed:
            return b""
        if self._done:
            return DONE
        # Abrupt end without a terminal event: still a well-formed ending.
        self._done = True
        # A tool call cut off mid-arguments must not be run as if complete: report it as truncated.
        finish = "length" if self._call_open else ("tool_calls" if self._calls else "stop")
        return self._chunk({}, finish) + DONE

    def fail(self, status: int, error_type: str, message: str) -> bytes:
        if self._failed:
            return b""
        self._failed = True
        return render_stream_error(Format.CHAT, ErrorInfo(status, error_type, message)) + DONE

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return frame(None, {**self._head, "model": self._model, "choices": [choice]})

    def _on_created(self, data: JSON) -> bytes:
        response = data.get("response")
        if isinstance(response, dict):
            self._head["id"] = _completion_id(response)
            self._head["created"] = _created(response)
        return b""

    def _on_text_delta(self, data: JSON) -> bytes:
        text = data.get("delta")
        return self._chunk({"content": text}) if text else b""

    def _on_refusal_delta(self, data: JSON) -> bytes:
        text = data.get("delta")
        return self._chunk({"refusal": text}) if text else b""

    def _on_item_added(self, data: JSON) -> bytes:
        item = data.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return b""
        index = data.get("output_index")
        return self._open_call(index if isinstance(index, int) else -1, item)

    def _open_call(self, output_index: int, item: JSON) -> bytes:
        ordinal = self._calls.setdefault(output_index, len(self._calls))
        self._current, self._args_sent, self._call_open = output_index, False, True
        first = _tool_call(item, ordinal, full=False)
        first["function"]["arguments"] = ""  # arguments follow as deltas; id and name only here
        return self._chunk(
            {"content": None, "tool_calls": [first]} if not self._role_sent else {"tool_calls": [first]}
        )

    def _args(self, fragment: str) -> bytes:
        self._args_sent = True
        call = {"index": self._calls[self._current], "function": {"arguments": fragment}}
        return self._chunk({"tool_calls": [call]})

    def _on_args_delta(self, data: JSON) -> bytes:
        fragment = data.get("delta")
        if not fragment or data.get("output_index", self._current) not in self._calls:
            return b""
        self._current = data.get("output_index", self._current)
        return self._args(fragment)

    def _on_args_done(self, data: JSON) -> bytes:
        arguments = data.get("arguments")
        if self._args_sent or not arguments or data.get("output_index", self._current) != self._current:
            return b""
        return self._args(arguments)

    def _on_item_done(self, data: JSON) -> bytes:
        item = data.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return b""
        index = data.get("output_index")
        index = index if isinstance(index, int) else -1
        out = b"" if index in self._calls else self._open_call(index, item)
        if not self._args_sent or self._current != index:
            self._current = index
            # Arguments must parse on the client: a call without any becomes "{}".
            out += self._args(item.get("arguments") or "{}")
        self._call_open = False
        return out

    def _on_terminal(self, data: JSON) -> bytes:
        response = data.get("response")
        response = response if isinstance(response, dict) else {}
        self._done = True
        out = self._chunk({}, _finish(response, bool(self._calls)))
        if self._include_usage:
            usage = responses_usage_to_chat(response.get("usage"))
            out += frame(None, {**self._head, "model": self._model, "choices": [], "usage": usage})
        return out

    def _on_error(self, data: JSON) -> bytes:
        # The same ending as on the Anthropic upstream (docs/formats.md): the error frame, then [DONE].
        self._failed = True
        return render_stream_error(Format.CHAT, parse_stream_error(data)) + DONE

    # one table per class (see ResponsesEventStream)
    _HANDLERS: ClassVar[dict[str, Callable[[ChatStream, JSON], bytes]]] = {
        "response.created": _on_created,
        "response.output_text.delta": _on_text_delta,
        "response.refusal.delta": _on_refusal_delta,
        "response.output_item.added": _on_item_added,
        "response.output_item.done": _on_item_done,
        "response.function_call_arguments.delta": _on_args_delta,
        "response.function_call_arguments.done": _on_args_done,
        "response.completed": _on_terminal,
        "response.incomplete": _on_terminal,
        "response.failed": _on_error,
        "error": _on_error,
    }


register(
    Translation(
        client=Format.CHAT,
        upstream=Format.RESPONSES,
        request=convert_request,
        response=convert_response,
        stream=ChatStream,
    )
)
