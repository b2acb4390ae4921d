"""OpenAI Responses clients on an Anthropic Messages upstream: the request side (Responses body → Anthropic
body). The response and stream side is ``ccproxy.formats.responses_on_anthropic``.

Tools (docs/formats.md, "Responses on Anthropic: tools"): ``function`` → Anthropic tool; ``custom`` →
Anthropic tool with one string property ``input`` (grammar in the description); ``web_search`` →
Anthropic's server ``web_search_20250305`` (dropped when the client allows cached results only);
``tool_search`` → dropped (deferred tools are offered up front); anything else is refused.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccproxy.formats import common, freeform, media
from ccproxy.formats.base import JSON, TranslationError

_WEB_SEARCH_TYPES = (
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
)
ANTHROPIC_WEB_SEARCH = "web_search_20250305"
_USER_LOCATION_FIELDS = ("city", "region", "country", "timezone")

# --- request ------------------------------------------------------------------------------------------


def convert_request(body: JSON) -> JSON:
    """Responses request body → Anthropic request body (``body`` is not modified)."""
    # Refused, ignored and malformed fields were answered at the route's edge (ccproxy.formats.fields).
    builder = common.MessagesBuilder()
    if isinstance(body.get("instructions"), str):
        builder.add_system(body["instructions"])
    items = body.get("input")
    if isinstance(items, str):
        builder.add("user", [{"type": "text", "text": items}])
    elif isinstance(items, list):
        for i, item in enumerate(items):
            _add_item(builder, item, f"input[{i}]")
    else:
        raise TranslationError("input must be a string or a list of items", param="input")
    if not builder.messages:
        raise TranslationError("input contains no user or assistant content", param="input")

    out: JSON = {
        "model": body.get("model"),
        "messages": builder.messages,
        "max_tokens": int(body.get("max_output_tokens") or common.DEFAULT_MAX_TOKENS),
    }
    if builder.system:
        out["system"] = builder.system
    if body.get("stream"):
        out["stream"] = True
    if body.get("temperature") is not None:
        out["temperature"] = common.clamp_temperature(body["temperature"])
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    _tools(body, out)
    _text_format(body.get("text"), out)
    metadata = common.user_id(body)
    if metadata:
        out["metadata"] = metadata
    reasoning = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    budget = common.budget_for_effort(reasoning.get("effort"), "reasoning.effort")
    return common.finalize_request(out, budget=budget)


def _add_item(builder: common.MessagesBuilder, item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise TranslationError("each input item must be an object", param=param)
    kind = item.get("type", "message")
    if kind == "message":
        _add_message(builder, item, param)
    elif kind == "function_call":
        builder.add("assistant", [_tool_use(item, param)])
    elif kind == "custom_tool_call":
        builder.add("assistant", [_custom_tool_use(item, param)])
    elif kind in ("function_call_output", "custom_tool_call_output"):
        builder.add("user", [_tool_result(item, param)])
    elif kind == "web_search_call":
        # A finished hosted search: its results live in Anthropic's encrypted web_search_tool_result, which
        # the item cannot carry; the answer built from them is in the message items that follow. Dropped.
        pass
    elif kind == "reasoning":
        # Our own items carry the Anthropic block; another provider's encrypted reasoning cannot be replayed
        # to Anthropic (NOTES §4.11) and is dropped.
        block = common.decode_thinking_block(item.get("encrypted_content"))
        if block is not None:
            builder.add("assistant", [block])
    else:
        raise TranslationError(f"unsupported input item type {kind!r}", param=f"{param}.type")


def _add_message(builder: common.MessagesBuilder, item: JSON, param: str) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        blocks = _content_blocks(content, f"{param}.content")
        if any(b["type"] != "text" for b in blocks):
            raise TranslationError("system and developer messages take text only", param=f"{param}.content")
        builder.add_system("".join(b["text"] for b in blocks))
    elif role in ("user", "assistant"):
        builder.add(str(role), _content_blocks(content, f"{param}.content"))
    else:
        raise TranslationError(f"unsupported message role {role!r}", param=f"{param}.role")


def _content_blocks(content: Any, param: str) -> list[JSON]:
    return common.anthropic_blocks(content, param, _part)


def _part(part: Any, param: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise TranslationError("input_image needs image_url; file ids cannot be resolved", param=param)
        return media.anthropic_image_block(url, param)  # ``detail`` has no Anthropic counterpart
    if kind == "input_file":
        return media.anthropic_document_block(part.get("file_data"), part.get("file_url"), param)
    raise TranslationError(f"unsupported content part type {kind!r}", param=param)


def _tool_use(item: JSON, param: str) -> JSON:
    arguments = item.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise TranslationError(
            "function_call arguments must be a JSON object", param=f"{param}.arguments"
        ) from exc
    if not isinstance(parsed, dict):
        raise TranslationError("function_call arguments must be a JSON object", param=f"{param}.arguments")
    return _tool_use_block(item, parsed)


def _custom_tool_use(item: JSON, param: str) -> JSON:
    text = item.get("input")
    if not isinstance(text, str):
        raise TranslationError("custom_tool_call input must be a string", param=f"{param}.input")
    return _tool_use_block(item, {freeform.FREEFORM_PROPERTY: text})


def _tool_use_block(item: JSON, tool_input: JSON) -> JSON:
    """The Anthropic ``tool_use`` block replaying a ``function_call`` or ``custom_tool_call`` input item."""
    return {
        "type": "tool_use",
        "id": common.anthropic_tool_id(str(item.get("call_id") or "")),
        "name": flat_name(item.get("namespace"), str(item.get("name") or "")),
        "input": tool_input,
    }


def _tool_result(item: JSON, param: str) -> JSON:
    return common.anthropic_tool_result(item.get("call_id"), item.get("output"), f"{param}.output", _part)


def _tools(body: JSON, out: JSON) -> None:
    converted: list[JSON] = []
    for i, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        param = f"tools[{i}]"
        if kind in ("function", "custom"):
            converted.append(_client_tool(tool, None, param))
        elif kind == "namespace":
            # A group of tools (Codex: sub-agents, MCP servers): flattened to ``<namespace>__<name>``; calls
            # come back with ``namespace`` and the inner ``name`` (the request's tool table decides).
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise TranslationError("namespace tools need a name", param=f"{param}.name")
            for j, inner in enumerate(tool.get("tools") or []):
                inner_kind = inner.get("type") if isinstance(inner, dict) else None
                if inner_kind not in ("function", "custom"):
                    raise TranslationError(
                        f"tool type {inner_kind!r} is not supported in a namespace",
                        param=f"{param}.tools[{j}].type",
                    )
                converted.append(_client_tool(inner, tool, f"{param}.tools[{j}]"))
        elif kind in _WEB_SEARCH_TYPES:
            search = _web_search_tool(tool, param)
            if search is not None:
                converted.append(search)
        elif kind == "tool_search":
            # Discovery of deferred tools (Codex runs it client-side). Deferred tools are offered up front
            # here (their ``defer_loading`` is ignored), so there is nothing left to discover: dropped.
            continue
        else:
            raise TranslationError(
                f"tool type {kind!r} is not supported; use function, custom or web_search tools",
                param=f"{param}.type",
            )
    seen: set[str] = set()
    for tool in converted:
        if tool["name"] in seen:
            raise TranslationError(f"tool name {tool['name']!r} is used twice", param="tools")
        seen.add(tool["name"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        # No Anthropic subset switch: offer only the allowed tools (NOTES §4.9).
        allowed = [t for t in choice.get("tools") or [] if isinstance(t, dict)]
        keep = {t.get("name") for t in allowed}
        if any(t.get("type") in _WEB_SEARCH_TYPES for t in allowed):
            keep.add("web_search")
        converted = [t for t in converted if t["name"] in keep]
        choice = choice.get("mode", "auto")
    if not converted:
        return
    out["tools"] = converted
    names = {t["name"] for t in converted if "type" not in t}  # client tools (server tools have a type)
    tool_choice = common.openai_tool_choice(choice, names, ("function", "custom"), _choice_name)
    common.set_tool_choice(out, tool_choice, body.get("parallel_tool_calls"))


def _choice_name(choice: JSON) -> Any:
    return choice.get("name")


def _web_search_tool(tool: JSON, param: str) -> JSON | None:
    """Anthropic's server web search for a hosted ``web_search`` tool; ``None`` (not offered) when the client
    allows cached results only: Anthropic has no offline mode, and live access is what was ruled out."""
    if tool.get("external_web_access") is False:
        return None
    out: JSON = {"type": ANTHROPIC_WEB_SEARCH, "name": "web_search"}
    filters = tool.get("filters")
    domains = filters.get("allowed_domains") if isinstance(filters, dict) else None
    if domains:
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise TranslationError("allowed_domains must be a list of strings", param=f"{param}.filters")
        out["allowed_domains"] = list(domains)
    location = tool.get("user_location")
    if isinstance(location, dict):
        fields = {k: location[k] for k in _USER_LOCATION_FIELDS if isinstance(location.get(k), str)}
        if fields:
            out["user_location"] = {"type": "approximate", **fields}
    return out  # search_context_size and search_content_types have no Anthropic counterpart


def _client_tool(tool: JSON, namespace: JSON | None, param: str) -> JSON:
    """Anthropic tool for a Responses ``function`` or ``custom`` tool (``namespace``: its group, if any)."""
    name, description = tool.get("name"), tool.get("description")
    if namespace is not None:
        if not isinstance(name, str) or not name:
            raise TranslationError("tools need a name", param=f"{param}.name")
        group = f"Part of the `{namespace['name']}` tools"
        if isinstance(namespace.get("description"), str) and namespace["description"]:
            group += f": {namespace['description']}"
        description = f"{description}\n\n({group})" if description else f"({group})"
        name = flat_name(namespace["name"], name)
    if tool.get("type") == "custom":
        return freeform.anthropic_freeform_tool(name, description, tool.get("format"), param)
    return common.anthropic_tool(name, description, tool.get("parameters"), param)


def flat_name(namespace: Any, name: str) -> str:
    return f"{namespace}__{name}" if isinstance(namespace, str) and namespace else name


def _text_format(text: Any, out: JSON) -> None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):  # text.verbosity has no Anthropic counterpart and is ignored
        common.apply_output_format(out, fmt.get("type"), fmt.get("schema"), "text.format")


# --- the request's tool table (read again by the response and the stream) ------------------------------

ToolTable = dict[str, tuple[str, str | None, str]]


def tool_table(request: JSON) -> ToolTable:
    """Anthropic tool name → ``(kind, namespace, name)`` of the request's function and custom tools: the
    output item type (``function_call`` / ``custom_tool_call``) and the names to report for a ``tool_use``."""
    table: ToolTable = {}
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") in ("function", "custom"):
            table[str(tool.get("name"))] = (str(tool["type"]), None, str(tool.get("name")))
        elif tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            for inner in tool.get("tools") or []:
                if isinstance(inner, dict) and inner.get("type") in ("function", "custom"):
                    flat = flat_name(tool["name"], str(inner.get("name")))
                    table[flat] = (str(inner["type"]), tool["name"], str(inner.get("name")))
    return table


def is_custom(tools: ToolTable, flat: Any) -> bool:
    return tools.get(str(flat), ("function",))[0] == "custom"
