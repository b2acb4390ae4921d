"""Anthropic Messages clients on an OpenAI Responses upstream: the request side (Anthropic body → Responses
body). The response and stream side is ``ccproxy.formats.anthropic_on_responses``; mapping tables and what is
refused or ignored: ``docs/formats.md`` ("Clients on a Responses upstream").
"""

from __future__ import annotations

from typing import Any

from ccproxy.formats.base import JSON, TranslationError
from ccproxy.formats.common import (
    assistant_message,
    decode_reasoning_item,
    each_message,
    effort_for_budget,
    json_dumps,
    responses_function_tool,
    responses_message,
    responses_tools,
)
from ccproxy.formats.media import image_url_from_anthropic

# Which fields are read, ignored or refused is settled at the route's edge (ccproxy.formats.fields).
# Anthropic effort → Responses effort; "max" is the top tier on both sides.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
_BUDGET_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_ENCRYPTED = "reasoning.encrypted_content"


def convert_request(body: JSON) -> JSON:
    """Anthropic Messages request → Responses request (the input is not mutated)."""
    out: JSON = {"model": body.get("model")}
    instructions = _system_text(body.get("system"), "system")
    if instructions:
        out["instructions"] = instructions
    out["input"] = _input_items(body.get("messages"))
    if isinstance(body.get("max_tokens"), int):
        out["max_output_tokens"] = max(body["max_tokens"], 16)  # Responses' minimum is 16
    for key in ("temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    _apply_tools(body, out)
    _apply_reasoning(body, out)
    _apply_output_format(body, out)
    return out


def _system_text(system: Any, param: str) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise TranslationError("system must be a string or a list of text blocks", param=param)
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("system blocks must be text blocks", param=f"{param}[{i}]")
        texts.append(str(block.get("text", "")))
    return "\n\n".join(t for t in texts if t)


def _input_items(messages: Any) -> list[JSON]:
    items: list[JSON] = []
    for param, message in each_message(messages):
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            # Claude Code sends mid-conversation system entries; they keep their place as system input.
            text = _system_text(content, f"{param}.content")
            if text:
                items.append(responses_message("system", [{"type": "input_text", "text": text}]))
        elif role == "user":
            _user_items(content, param, items)
        elif role == "assistant":
            _assistant_items(content, param, items)
        else:
            raise TranslationError(f"unsupported role {role!r}", param=f"{param}.role")
    return items


def _blocks(content: Any, param: str) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of blocks", param=f"{param}.content")
    return content


def _user_items(content: Any, param: str, items: list[JSON]) -> None:
    parts: list[JSON] = []  # consecutive user parts become one message item, in order with tool outputs
    for j, block in enumerate(_blocks(content, param)):
        bparam = f"{param}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            if parts:
                items.append(responses_message("user", parts))
                parts = []
            items.append(_tool_output(block, bparam))
        else:
            part = _user_part(block, kind, bparam)
            if part is not None:
                parts.append(part)
    if parts:
        items.append(responses_message("user", parts))


def _user_part(block: Any, kind: Any, param: str) -> JSON | None:
    if kind == "text":
        text = block.get("text")
        return {"type": "input_text", "text": text} if text else None
    if kind == "image":
        # `detail` is required by the Responses schema; Anthropic has no such knob, so the model decides.
        return {"type": "input_image", "image_url": _source_url(block.get("source"), param), "detail": "auto"}
    if kind == "document":
        return _file_part(block, param)
    if kind == "tool_reference":
        # Claude Code's ToolSearch result: the tool itself arrives in `tools`; tell the model by name.
        return {"type": "input_text", "text": f"Tool loaded: {block.get('tool_name', '')}"}
    raise TranslationError(f"unsupported content block type {kind!r}", param=f"{param}.type")


def _source_url(source: Any, param: str) -> str:
    if not isinstance(source, dict) or source.get("type") not in {"base64", "url"}:
        raise TranslationError("image source must be base64 or url", param=f"{param}.source")
    return image_url_from_anthropic(source)


def _file_part(block: JSON, param: str) -> JSON:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text":
        return {"type": "input_text", "text": str(source.get("data", "")) if source else ""}
    if kind == "base64" and source is not None:
        media = source.get("media_type", "application/pdf")
        name = block.get("title") or "document.pdf"
        return {"type": "input_file", "filename": name, "file_data": f"data:{media};base64,{source['data']}"}
    if kind == "url" and source is not None:
        return {"type": "input_file", "file_url": source.get("url")}
    raise TranslationError("unsupported document source", param=f"{param}.source")


def _tool_output(block: JSON, param: str) -> JSON:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError("tool_result needs a tool_use_id", param=f"{param}.tool_use_id")
    content = block.get("content")
    output: str | list[JSON]
    if content is None or isinstance(content, str):
        output = content or ""
    else:
        parts = [
            p
            for j, b in enumerate(_blocks(content, param))
            if (p := _user_part(b, _kind(b), f"{param}.content[{j}]"))
        ]
        if all(p["type"] == "input_text" for p in parts):
            output = "\n".join(p["text"] for p in parts)  # plain text is the form every backend accepts
        else:
            output = parts
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _kind(block: Any) -> Any:
    return block.get("type") if isinstance(block, dict) else None


def _assistant_items(content: Any, param: str, items: list[JSON]) -> None:
    parts: list[str] = []

    def flush() -> None:
        if parts:
            items.append(assistant_message("".join(parts)))
            parts.clear()

    for j, block in enumerate(_blocks(content, param)):
        bparam = f"{param}.content[{j}]"
        kind = _kind(block)
        if kind == "text":
            if block.get("text"):
                parts.append(str(block["text"]))
        elif kind == "tool_use":
            flush()
            items.append(_function_call(block, bparam))
        elif kind == "thinking":
            flush()
            item = decode_reasoning_item(block.get("signature"))
            # Only our own signatures can go back, and only with encrypted_content: the upstream keeps no
            # state (store:false), so a bare reasoning id could not be resolved and would fail the request.
            if item is not None and item.get("encrypted_content"):
                items.append(item)
        elif kind in {"redacted_thinking", "server_tool_use", "web_search_tool_result"}:
            continue  # Anthropic-side state from an earlier Anthropic turn; meaningless to this upstream
        else:
            raise TranslationError(f"unsupported content block type {kind!r}", param=f"{bparam}.type")
    flush()


def _function_call(block: JSON, param: str) -> JSON:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
        raise TranslationError("tool_use needs an id and a name", param=param)
    tool_input = block.get("input")
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": json_dumps(tool_input if isinstance(tool_input, dict) else {}),
    }


def _apply_tools(body: JSON, out: JSON) -> None:
    responses_tools(body, out, _tool)
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "name": choice.get("name")}
        else:
            raise TranslationError(f"unsupported tool_choice type {kind!r}", param="tool_choice.type")
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False


def _tool(tool: Any, param: str) -> JSON:
    if not isinstance(tool, dict):
        raise TranslationError("each tool must be an object", param=param)
    kind = tool.get("type")
    if kind in (None, "custom"):
        # defer_loading / cache_control / input_examples only steer Anthropic's tool loading: dropped.
        return responses_function_tool(
            tool.get("name"), tool.get("description"), tool.get("input_schema"), tool.get("strict"), param
        )
    if isinstance(kind, str) and kind.startswith("web_search_"):
        web: JSON = {"type": "web_search"}
        if tool.get("allowed_domains"):
            web["filters"] = {"allowed_domains": tool["allowed_domains"]}
        return web
    raise TranslationError(f"server tool {kind!r} is not supported on this upstream", param=f"{param}.type")


def _apply_reasoning(body: JSON, out: JSON) -> None:
    thinking = body.get("thinking")
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if effort is not None and effort not in _EFFORTS:
        raise TranslationError(f"unsupported effort {effort!r}", param="output_config.effort")
    reasoning: JSON = {}
    if effort is not None:
        reasoning["effort"] = _EFFORTS[effort]
    elif kind == "enabled" and isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int):
        # A budget asks for "this much thinking", not for a tier only some models have ("minimal" and
        # "xhigh" are model-specific): budgets map into low..high.
        reasoning["effort"] = _BUDGET_EFFORTS.get(effort_for_budget(thinking["budget_tokens"]), "medium")
    if (
        kind in {"enabled", "adaptive"}
        and isinstance(thinking, dict)
        and thinking.get("display") != "omitted"
    ):
        reasoning["summary"] = "auto"  # summaries are what the client sees as thinking text
    if reasoning or kind in {"enabled", "adaptive"} or _replays_reasoning(out["input"]):
        if reasoning:
            out["reasoning"] = reasoning
        # Without encrypted content a reasoning item cannot round-trip through the client (store:false).
        out["include"] = [_ENCRYPTED]


def _replays_reasoning(items: list[JSON]) -> bool:
    return any(item.get("type") == "reasoning" for item in items)


def _apply_output_format(body: JSON, out: JSON) -> None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise TranslationError("only json_schema output formats are supported", param="output_config.format")
    # Anthropic structured outputs are always enforced; the equivalent is a strict schema.
    out["text"] = {
        "format": {"type": "json_schema", "name": "output", "schema": fmt.get("schema"), "strict": True}
    }
