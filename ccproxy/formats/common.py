"""Helpers shared by the translation modules: stop-reason tables, usage mapping, content helpers,
reasoning effort ⇄ thinking budget, ids, and the lossless encoding of Anthropic thinking blocks. Images and
documents are ``formats.media``; OpenAI custom (freeform) tools are ``formats.freeform``.

Pure functions and constant tables only (no I/O). Sources for every table: ``shared/conformance/NOTES.md``
§4.6 (stop reasons), §4.7 (usage), §4.11 (thinking).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Container, Iterator
from typing import Any

import orjson

from ccproxy.formats.base import JSON, TranslationError

# --- stop reasons (NOTES §4.6) -------------------------------------------------------------------------

ANTHROPIC_TO_CHAT_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
CHAT_FINISH_TO_ANTHROPIC: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic stop_reason → Responses incomplete_details.reason; a stop reason not listed completes.
ANTHROPIC_TO_RESPONSES_INCOMPLETE: dict[str, str] = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}
RESPONSES_INCOMPLETE_TO_ANTHROPIC: dict[str, str] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "refusal",
}


def refusal_text(stop_details: Any) -> str:
    """What the client sees of an Anthropic refusal: its ``stop_details.explanation``, or a stock sentence."""
    explanation = stop_details.get("explanation") if isinstance(stop_details, dict) else None
    return str(explanation) if explanation else "The model refused to answer."


def chat_finish_reason(stop_reason: str | None) -> str:
    """Chat ``finish_reason`` for an Anthropic ``stop_reason`` (unknown or missing → ``stop``)."""
    return ANTHROPIC_TO_CHAT_FINISH.get(stop_reason or "", "stop")


def responses_status(stop_reason: str | None) -> tuple[str, JSON | None]:
    """Responses ``(status, incomplete_details)`` for an Anthropic ``stop_reason``."""
    reason = ANTHROPIC_TO_RESPONSES_INCOMPLETE.get(stop_reason or "")
    if reason is None:
        return "completed", None
    return "incomplete", {"reason": reason}


# --- usage (NOTES §4.7: Anthropic input buckets are disjoint, OpenAI prompt totals include cache) -------


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def anthropic_usage_parts(usage: JSON | None) -> tuple[int, int, int, int, int]:
    """``(uncached_input, cache_read, cache_write, output, thinking)`` from an Anthropic usage object."""
    if not usage:
        return 0, 0, 0, 0, 0
    details = usage.get("output_tokens_details")
    thinking = _int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return (
        _int(usage.get("input_tokens")),
        _int(usage.get("cache_read_input_tokens")),
        _int(usage.get("cache_creation_input_tokens")),
        _int(usage.get("output_tokens")),
        thinking,
    )


def anthropic_usage_to_chat(usage: JSON | None) -> JSON:
    """Chat ``usage``: ``prompt_tokens`` is the total input (uncached + cache read + cache write)."""
    uncached, read, write, output, thinking = anthropic_usage_parts(usage)
    prompt = uncached + read + write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": write},
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def anthropic_usage_to_responses(usage: JSON | None) -> JSON:
    """Responses ``usage``: ``input_tokens`` is the total input, ``cached_tokens`` a subset of it."""
    uncached, read, write, output, thinking = anthropic_usage_parts(usage)
    total_input = uncached + read + write
    return {
        "input_tokens": total_input,
        "input_tokens_details": {"cached_tokens": read, "cache_write_tokens": write},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": thinking},
        "total_tokens": total_input + output,
    }


def openai_usage_to_anthropic(input_total: int, cached: int, output: int, cache_write: int = 0) -> JSON:
    """Anthropic ``usage`` from OpenAI totals (reverse of the two functions above)."""
    return {
        "input_tokens": max(input_total - cached - cache_write, 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": cache_write,
        "output_tokens": output,
    }


# --- ids and timestamps -----------------------------------------------------------------------------------

_TOOL_ID_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``chatcmpl-…``, ``resp_…``, ``msg_…``, ``fc_…``, ``rs_…``, ``toolu_…``."""
    return prefix + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


def anthropic_tool_id(call_id: str) -> str:
    """A client tool call id made acceptable to Anthropic (``^[a-zA-Z0-9_-]+$``), deterministically, so the
    tool_use and its tool_result still match; ids that already fit pass through unchanged (NOTES §4.8)."""
    if not call_id:
        raise TranslationError("tool call id must be a non-empty string", param="tool_call_id")
    return _TOOL_ID_INVALID.sub("_", call_id)


# --- reasoning effort ⇄ thinking budget (NOTES §4.11) ----------------------------------------------------

MIN_THINKING_BUDGET = 1024  # Anthropic: budget_tokens ≥ 1024 and < max_tokens
EFFORT_TO_BUDGET: dict[str, int] = {
    "minimal": 1024,
    "low": 4096,
    "medium": 10240,
    "high": 24576,
    "xhigh": 32768,
}
DEFAULT_MAX_TOKENS = 8192  # Anthropic requires max_tokens; OpenAI clients often omit it


def budget_for_effort(effort: str | None, param: str) -> int | None:
    """Thinking budget for an OpenAI reasoning effort; ``None`` for no thinking (absent or ``none``)."""
    if effort is None or effort == "none":
        return None
    budget = EFFORT_TO_BUDGET.get(effort)
    if budget is None:
        raise TranslationError(f"unsupported reasoning effort {effort!r}", param=param)
    return budget


def effort_for_budget(budget: int) -> str:
    """The smallest OpenAI effort whose budget covers ``budget`` (reverse of ``budget_for_effort``)."""
    for effort, limit in EFFORT_TO_BUDGET.items():
        if budget <= limit:
            return effort
    return "xhigh"


def fit_thinking(budget: int | None, max_tokens: int) -> JSON | None:
    """Anthropic ``thinking`` config for ``budget`` within ``max_tokens``, or ``None`` when no budget of at
    least 1024 fits below ``max_tokens`` (OpenAI's token cap includes reasoning, like Anthropic's)."""
    if budget is None:
        return None
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": budget}


# --- thinking blocks carried through OpenAI formats ------------------------------------------------------
# Signatures and redacted data are only valid back at Anthropic (NOTES §4.11), and Anthropic wants them
# back unmodified, text included. A Responses ``reasoning`` item's ``encrypted_content`` therefore carries the
# whole block: ``"ccp1." + base64url(json(block))``. Anything else in that field came from another provider.

_THINKING_PREFIX = "ccp1."


def encode_thinking_block(block: JSON) -> str:
    kept = {k: block[k] for k in ("type", "thinking", "signature", "data") if k in block}
    return _THINKING_PREFIX + base64.urlsafe_b64encode(orjson.dumps(kept)).decode("ascii")


def decode_thinking_block(encoded: Any) -> JSON | None:
    """The Anthropic thinking/redacted_thinking block inside ``encoded``, or ``None`` if it is not ours."""
    if not isinstance(encoded, str) or not encoded.startswith(_THINKING_PREFIX):
        return None
    try:
        block = orjson.loads(base64.urlsafe_b64decode(encoded[len(_THINKING_PREFIX) :]))
    except (binascii.Error, ValueError):
        return None
    if isinstance(block, dict) and block.get("type") in {"thinking", "redacted_thinking"}:
        return block
    return None


# --- request fields ----------------------------------------------------------------------------------------


def clamp_temperature(value: Any, param: str = "temperature") -> float:
    """OpenAI temperature (0–2) → Anthropic (0–1): values above 1 are capped, as Anthropic's own
    OpenAI-compatibility layer does; out-of-range values are refused like OpenAI refuses them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError("temperature must be a number", param=param)
    if value < 0 or value > 2:
        raise TranslationError("temperature must be between 0 and 2", param=param)
    return min(float(value), 1.0)


def stop_sequences(value: Any, param: str = "stop") -> list[str]:
    """Chat ``stop`` (string or list) → Anthropic ``stop_sequences``; whitespace-only sequences are refused
    because Anthropic rejects them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise TranslationError("stop must be a string or a list of strings", param=param)
    for item in items:
        if not item.strip():
            raise TranslationError("Anthropic does not accept whitespace-only stop sequences", param=param)
    return list(items)


def chat_texts(content: Any, param: str) -> list[str]:
    """The texts of Chat content that may hold text only (a string, or text and refusal parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise TranslationError("only text parts are allowed here", param=f"{param}[{j}]")
        texts.append(str(part.get("text") or part.get("refusal") or ""))
    return texts


def chat_image_url(part: JSON) -> tuple[Any, Any]:
    """``(url, detail)`` of a Chat ``image_url`` part (an object, or the bare URL some clients send)."""
    image = part.get("image_url")
    return (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)


def json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- Responses upstream: reasoning items carried through Anthropic thinking blocks -------------------------
# The reverse of the encoding above. An Anthropic client must send thinking blocks back unmodified, so
# the block's ``signature`` carries the upstream ``reasoning`` item losslessly:
# ``"ccpr1." + base64url(json(item))`` with the item's ``id``, ``encrypted_content``, ``summary`` and
# ``content`` (the visible thinking text is derived from the summaries and not trusted on the way back).
# Other signatures are Anthropic's own.

_REASONING_PREFIX = "ccpr1."
_REASONING_FIELDS = ("id", "encrypted_content", "summary", "content")


def encode_reasoning_item(item: JSON) -> str:
    kept = {k: item[k] for k in _REASONING_FIELDS if item.get(k) is not None}
    return _REASONING_PREFIX + base64.urlsafe_b64encode(orjson.dumps(kept)).decode("ascii")


def decode_reasoning_item(signature: Any) -> JSON | None:
    """The Responses ``reasoning`` input item inside a thinking ``signature``; ``None`` if it is not ours."""
    if not isinstance(signature, str) or not signature.startswith(_REASONING_PREFIX):
        return None
    try:
        kept = orjson.loads(base64.urlsafe_b64decode(signature[len(_REASONING_PREFIX) :]))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(kept, dict):
        return None
    item: JSON = {"type": "reasoning"}
    item.update({k: kept[k] for k in _REASONING_FIELDS if k in kept})
    item.setdefault("summary", [])
    return item


def reasoning_text(item: JSON) -> str:
    """The visible text of a Responses reasoning item: its summaries (else its raw reasoning text)."""
    parts = item.get("summary") or item.get("content") or []
    return "\n\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


# --- Responses usage and status → the other formats (NOTES §4.6, §4.7) -------------------------------------


def responses_usage_parts(usage: JSON | None) -> tuple[int, int, int, int, int]:
    """``(input_total, cached, cache_write, output, reasoning)`` from a Responses usage object."""
    if not usage:
        return 0, 0, 0, 0, 0
    inp = usage.get("input_tokens_details")
    out = usage.get("output_tokens_details")
    inp = inp if isinstance(inp, dict) else {}
    out = out if isinstance(out, dict) else {}
    return (
        _int(usage.get("input_tokens")),
        _int(inp.get("cached_tokens")),
        _int(inp.get("cache_write_tokens")),
        _int(usage.get("output_tokens")),
        _int(out.get("reasoning_tokens")),
    )


def responses_usage_to_anthropic(usage: JSON | None) -> JSON:
    total, cached, write, output, _ = responses_usage_parts(usage)
    return openai_usage_to_anthropic(total, cached, output, write)


def responses_usage_to_chat(usage: JSON | None) -> JSON:
    total, cached, write, output, reasoning = responses_usage_parts(usage)
    return {
        "prompt_tokens": total,
        "completion_tokens": output,
        "total_tokens": total + output,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": write},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def responses_stop_reason(response: JSON, has_tool_calls: bool) -> str:
    """Anthropic ``stop_reason`` for a terminal Responses object (Responses has no finish reason: tool calls
    are output items, truncation is ``status: incomplete`` with a reason)."""
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return RESPONSES_INCOMPLETE_TO_ANTHROPIC.get(str(reason), "max_tokens")
    return "tool_use" if has_tool_calls else "end_turn"


# --- Responses request pieces ----------------------------------------------------------------------------


def each_message(messages: Any) -> Iterator[tuple[str, JSON]]:
    """``(param, message)`` for each entry of a client's ``messages``, checked to be a list of objects."""
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", param="messages")
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError("each message must be an object", param=param)
        yield param, message


def responses_tools(body: JSON, out: JSON, tool: Callable[[Any, str], JSON]) -> None:
    """``tools`` of a Responses request: each of the client's tools, converted by ``tool``."""
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise TranslationError("tools must be a list", param="tools")
        out["tools"] = [tool(t, f"tools[{i}]") for i, t in enumerate(tools)]


# Responses function tools default to ``strict: true``, which rejects ordinary schemas (optional properties,
# no additionalProperties:false); neither Anthropic nor Chat tools are strict unless asked.
def responses_function_tool(name: Any, description: Any, parameters: Any, strict: Any, param: str) -> JSON:
    if not isinstance(name, str) or not name:
        raise TranslationError("tool name must be a non-empty string", param=f"{param}.name")
    tool: JSON = {"type": "function", "name": name, "strict": bool(strict)}
    if description:
        tool["description"] = description
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise TranslationError("tool parameters must be a JSON schema object", param=param)
        tool["parameters"] = parameters
    return tool


def responses_message(role: str, parts: list[JSON]) -> JSON:
    return {"type": "message", "role": role, "content": parts}


def assistant_message(text: str) -> JSON:
    """An earlier assistant turn as Responses input. String content is the one assistant form both the API
    and the SDK's types accept without an output item ``id`` (which a store:false upstream cannot resolve)."""
    return {"type": "message", "role": "assistant", "content": text}


# --- Anthropic request assembly (shared by the Chat and Responses clients) --------------------------------


class MessagesBuilder:
    """Collects system text and role/blocks turns into Anthropic ``system`` and ``messages``.

    System and developer text from anywhere in the conversation is hoisted into ``system`` in order (one
    text block each), as Anthropic's own compatibility layer does (NOTES §4.8). Consecutive turns of one role
    are merged, so parallel tool results land in one user message (NOTES §4.8) and the roles alternate.
    """

    __slots__ = ("messages", "system")

    def __init__(self) -> None:
        self.system: list[JSON] = []
        self.messages: list[JSON] = []

    def add_system(self, text: str) -> None:
        if text:
            self.system.append({"type": "text", "text": text})

    def add(self, role: str, blocks: list[JSON]) -> None:
        # Anthropic rejects empty text blocks ("" is common in assistant tool-call turns).
        blocks = [b for b in blocks if not (b.get("type") == "text" and not b.get("text"))]
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            content: list[JSON] = self.messages[-1]["content"]
            if role == "user" and blocks[0].get("type") == "tool_result":
                # tool_result blocks must come before any other user content.
                split = sum(1 for b in content if b.get("type") == "tool_result")
                content[split:split] = [b for b in blocks if b.get("type") == "tool_result"]
                content.extend(b for b in blocks if b.get("type") != "tool_result")
            else:
                content.extend(blocks)
            return
        self.messages.append({"role": role, "content": blocks})


Part = Callable[[Any, str], JSON]  # one content part of the client's format → an Anthropic block


def anthropic_blocks(content: Any, param: str, part: Part) -> list[JSON]:
    """Anthropic blocks for message content: a string is one text block, a list is converted by ``part``."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    return [part(p, f"{param}[{j}]") for j, p in enumerate(content)]


def anthropic_tool_result(call_id: Any, output: Any, param: str, part: Part) -> JSON:
    """An Anthropic ``tool_result`` block for a tool's output: a string, or content parts (text, images)."""
    result: JSON = {"type": "tool_result", "tool_use_id": anthropic_tool_id(str(call_id or ""))}
    if isinstance(output, list):
        blocks = [
            b for b in anthropic_blocks(output, param, part) if not (b["type"] == "text" and not b["text"])
        ]
        if blocks:
            result["content"] = blocks
    elif output:
        result["content"] = str(output)
    return result


def openai_tool_choice(
    choice: Any, names: Container[Any], kinds: tuple[str, ...], name_of: Callable[[JSON], Any]
) -> JSON:
    """Anthropic ``tool_choice`` for an OpenAI one: a mode, or one of ``names`` (a dict of one of ``kinds``,
    whose name ``name_of`` reads)."""
    if choice is None:
        return anthropic_tool_choice("auto")
    if choice in ("auto", "none", "required"):
        return anthropic_tool_choice(str(choice))
    if isinstance(choice, dict) and choice.get("type") in kinds:
        name = name_of(choice)
        if name not in names:
            raise TranslationError(f"tool_choice names unknown tool {name!r}", param="tool_choice")
        return anthropic_tool_choice("auto", str(name))
    raise TranslationError("unsupported tool_choice", param="tool_choice")


def anthropic_tool(name: Any, description: Any, parameters: Any, param: str) -> JSON:
    """Anthropic tool definition from an OpenAI function tool (``strict`` has no counterpart; ignored)."""
    if not isinstance(name, str) or not name:
        raise TranslationError("function tools need a name", param=param)
    schema = parameters if isinstance(parameters, dict) else {}
    # Anthropic requires an object schema with a ``type``; an absent one means "no arguments".
    tool: JSON = {"name": name, "input_schema": schema if "type" in schema else {"type": "object", **schema}}
    if isinstance(description, str) and description:
        tool["description"] = description
    return tool


def anthropic_tool_choice(mode: str, name: str | None = None) -> JSON:
    """Anthropic ``tool_choice`` for an OpenAI intent: ``auto``, ``none``, ``required`` or a tool ``name``."""
    if name is not None:
        return {"type": "tool", "name": name}
    return {"type": {"auto": "auto", "none": "none", "required": "any"}[mode]}


def output_config_format(schema: Any, param: str) -> JSON:
    """Anthropic ``output_config.format`` for an OpenAI JSON-schema response format (NOTES §4.8)."""
    if not isinstance(schema, dict):
        raise TranslationError("json_schema response formats need a schema object", param=param)
    return {"type": "json_schema", "schema": schema}


# Anthropic's structured output needs a closed schema (every object ``additionalProperties: false``), so
# "any JSON object" cannot be enforced there; JSON mode is an explicit instruction instead.
JSON_MODE_INSTRUCTION = (
    "Respond with exactly one valid JSON object and nothing else: no prose before or after it, "
    "no Markdown code fences."
)


def apply_output_format(out: JSON, kind: Any, schema: Any, param: str) -> None:
    """An OpenAI output format (``text`` / ``json_object`` / ``json_schema``) onto an Anthropic body."""
    if kind in (None, "text"):
        return
    if kind == "json_schema":
        out["output_config"] = {"format": output_config_format(schema, param)}
        return
    if kind == "json_object":
        system: list[JSON] = out.setdefault("system", [])
        system.append({"type": "text", "text": JSON_MODE_INSTRUCTION})
        return
    raise TranslationError(f"unsupported output format type {kind!r}", param=param)


def finalize_request(
    body: JSON,
    *,
    budget: int | None,
    explicit_thinking: JSON | None = None,
) -> JSON:
    """Settle the interplay of thinking with tool_choice and sampling, then return ``body``.

    - A forced tool (``any``/``tool``) wins over reasoning: Anthropic rejects forced tool use with thinking
      (NOTES §4.9), and the forced call is a hard requirement while the effort is a quality hint.
    - A turn that continues a tool loop must start the last assistant message with its thinking block when
      thinking is on; if the client did not send the blocks back, thinking is left off for this turn.
    - With thinking on, Anthropic accepts neither a modified temperature nor top_k; those are dropped.
    """
    thinking = explicit_thinking or fit_thinking(budget, int(body["max_tokens"]))
    choice = body.get("tool_choice")
    if thinking and isinstance(choice, dict) and choice.get("type") in {"any", "tool"}:
        thinking = None
    if thinking and not _tool_loop_keeps_thinking(body["messages"]):
        thinking = None
    if thinking:
        body["thinking"] = thinking
        body.pop("temperature", None)
        body.pop("top_k", None)
        if "top_p" in body and body["top_p"] < 0.95:
            body.pop("top_p")
    return body


def _tool_loop_keeps_thinking(messages: list[JSON]) -> bool:
    for message in reversed(messages):
        if message["role"] != "assistant":
            continue
        content = message["content"]
        if not any(b.get("type") == "tool_use" for b in content):
            return True
        return content[0].get("type") in {"thinking", "redacted_thinking"}
    return True


def user_id(request: JSON) -> JSON | None:
    """Anthropic ``metadata`` from OpenAI ``user`` / ``safety_identifier`` (OpenAI ``metadata`` is a
    store-side tagging map with no Anthropic counterpart and is ignored)."""
    value = request.get("user") or request.get("safety_identifier")
    return {"user_id": str(value)} if value else None


def set_tool_choice(out: JSON, choice: JSON, parallel_tool_calls: Any) -> None:
    """``tool_choice`` on an Anthropic request, carrying ``parallel_tool_calls: false`` (OpenAI) over."""
    if parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    out["tool_choice"] = choice
