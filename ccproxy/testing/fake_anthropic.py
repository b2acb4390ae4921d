"""Fake Anthropic Messages API (``api.anthropic.com``), faithful on the wire.

Routes (``create_app()``):

- ``POST /v1/messages`` (``?beta=true`` accepted, as Claude Code sends it): JSON, or SSE when
  ``stream: true`` with the real event order — ``message_start``, ``content_block_start``, ``ping``,
  ``content_block_delta`` (``text_delta``, ``input_json_delta`` in several fragments, ``thinking_delta`` +
  ``signature_delta``), ``content_block_stop``, ``message_delta`` (stop_reason, cumulative usage with the
  cache fields), ``message_stop``; every frame has an ``event:`` line and ends with a blank line.
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``, the same number /v1/messages reports.
- ``GET /v1/models`` (``limit``, ``after_id``, ``before_id``) and ``GET /v1/models/{id}``.

Checks, answered in Anthropic's error envelope with a ``request-id`` header: credentials (``x-api-key`` or
``authorization``) → 401, ``anthropic-version`` header → 400, ``model``/``messages``/``max_tokens`` → 400,
a model id not starting with ``claude-`` → 404. Anything else in the body is accepted, including what Claude
Code sends: ``role: "system"`` messages mid-conversation, tools with ``defer_loading``, ``thinking
{"type":"adaptive"}``, ``output_config``, ``context_management``, ``metadata``.

With ``thinking.display == "omitted"`` a scripted thinking block is sent signature-only (what Claude Code
accepted in the observed runs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request

from ccproxy.formats.errors import ANTHROPIC_TYPES
from ccproxy.sse import frame
from ccproxy.testing import scripting
from ccproxy.testing.playback import ChunkedResponse, ProviderFake
from ccproxy.testing.scripting import (
    Completion,
    ErrorReply,
    output_tokens,
    signature,
    split_text,
)

# The statuses the real API answers with, typed as ccproxy types them (one table: formats/errors.py).
ERROR_TYPES = {status: ANTHROPIC_TYPES[status] for status in (400, 401, 403, 404, 413, 429, 500, 529)}
STATUS_BY_TYPE = {v: k for k, v in ERROR_TYPES.items()}
DEFAULT_MESSAGES = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}
MODELS = [
    {"type": "model", "id": m, "display_name": n, "created_at": c}
    for m, n, c in [
        ("claude-opus-5-5", "Claude Opus 5.5", "2026-09-30T00:00:00Z"),
        ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
        ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
        ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
        ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
        ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ]
]
# Optional fields checked for their JSON type, as the real API does (400, never a crash).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "messages": (list,),
    "system": (str, list),
    "tools": (list,),
    "tool_choice": (dict,),
    "thinking": (dict,),
    "metadata": (dict,),
    "stop_sequences": (list,),
    "stream": (bool,),
    "temperature": scripting.NUMBER,
    "top_p": scripting.NUMBER,
    "top_k": (int,),
}
MAX_TOKENS_CEILING = 1 << 31
PING = frame("ping", {"type": "ping"})
MESSAGE_STOP = frame("message_stop", {"type": "message_stop"})


def _event(data: dict[str, Any]) -> bytes:
    return frame(data["type"], data)


def _text(content: Any) -> str:
    """Text of a message ``content`` (string or blocks) or of a tool_result ``content``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_reference":
            parts.append(f"tool_reference:{block.get('tool_name', '')}")
    return "\n".join(parts)


def _messages_problem(messages: list[Any]) -> str | None:
    for index, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            return f"messages.{index}.role: Input should be a valid string"
        content = message.get("content")
        if not isinstance(content, str | list):
            return f"messages.{index}.content: Input should be a valid string or list"
        if isinstance(content, list) and not all(
            isinstance(block, dict) and isinstance(block.get("type"), str) for block in content
        ):
            return f"messages.{index}.content: every block must be an object with a string type"
    return None


class AnthropicFake(ProviderFake):
    name = "anthropic"
    ROUTES = (
        ("/v1/messages", "messages", "POST"),
        ("/v1/messages/count_tokens", "count_tokens", "POST"),
        ("/v1/models", "list_models", "GET"),
        ("/v1/models/{model_id:path}", "get_model", "GET"),
        ("/api/oauth/usage", "plan_usage", "GET"),
    )

    # -- request side

    def conversation(self, body: Mapping[str, Any]) -> scripting.Conversation:
        messages = [
            m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") != "system"
        ]
        tools = tuple(
            scripting.ToolSpec(str(t["name"]), t.get("input_schema") or {})
            for t in body.get("tools") or []
            if isinstance(t, dict) and "name" in t
        )
        last = messages[-1] if messages else {}
        content = last.get("content")
        tool_output = None
        if last.get("role") == "user" and isinstance(content, list):
            results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                tool_output = "\n".join(_text(r.get("content")) for r in results)
        users = [m for m in messages if m.get("role") == "user"]
        prompt = _text(users[-1].get("content")) if users else ""
        choice = body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else None
        forced = "*" if kind == "any" else None
        if kind == "tool" and isinstance(choice, dict):
            forced = str(choice.get("name"))
        output_format = (body.get("output_config") or {}).get("format") or body.get("output_format")
        schema = output_format.get("schema") if isinstance(output_format, dict) else None
        system = _text(body.get("system"))
        return scripting.Conversation(
            prompt=prompt,
            tool_output=tool_output,
            tools=tools,
            forced_tool=forced,
            output_schema=schema if isinstance(schema, dict) else None,
            json_mode=scripting.JSON_INSTRUCTION.search(system) is not None,
            system=system,
        )

    @staticmethod
    def input_tokens(body: Mapping[str, Any]) -> int:
        return scripting.estimate_tokens(body.get("system"), body.get("messages"), body.get("tools"))

    # -- rendering

    def _usage(self, completion: Completion, body: Mapping[str, Any], output: int) -> dict[str, int]:
        inp = completion.input_tokens if completion.input_tokens is not None else self.input_tokens(body)
        return {
            "input_tokens": inp,
            "cache_creation_input_tokens": completion.cache_creation_tokens,
            "cache_read_input_tokens": completion.cache_read_tokens,
            "output_tokens": output,
        }

    def _output_tokens(self, completion: Completion) -> int:
        if completion.output_tokens is not None:
            return completion.output_tokens
        visible, thinking = output_tokens(completion)
        return visible + thinking

    def _blocks(
        self, completion: Completion, body: Mapping[str, Any]
    ) -> list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]:
        """Per content block: its ``content_block_start`` block, its deltas, and its final form."""
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]] = []
        start: dict[str, Any]
        final: dict[str, Any]
        deltas: list[dict[str, Any]]
        if completion.thinking is not None:
            thinking_cfg = body.get("thinking")
            omitted = isinstance(thinking_cfg, dict) and thinking_cfg.get("display") == "omitted"
            text = "" if omitted else completion.thinking
            sig = signature(completion.thinking)
            deltas = [{"type": "thinking_delta", "thinking": t} for t in split_text(text)]
            deltas.append({"type": "signature_delta", "signature": sig})
            start = {"type": "thinking", "thinking": "", "signature": ""}
            blocks.append((start, deltas, {"type": "thinking", "thinking": text, "signature": sig}))
        if completion.text or not completion.tool_calls:
            deltas = [{"type": "text_delta", "text": t} for t in split_text(completion.text)]
            final = {"type": "text", "text": completion.text}
            blocks.append(({"type": "text", "text": ""}, deltas, final))
        for call in completion.tool_calls:
            tool_id = call.id or self.upstream.next_id("toolu_fake")
            args = orjson.dumps(dict(call.arguments)).decode()
            # The first input_json_delta is "" in real streams; a tool without arguments sends only that.
            fragments = ["", *scripting.split_json(args)]
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
            start = {"type": "tool_use", "id": tool_id, "name": call.name, "input": {}}
            final = {"type": "tool_use", "id": tool_id, "name": call.name, "input": dict(call.arguments)}
            blocks.append((start, deltas, final))
        return blocks

    def _stop_reason(self, completion: Completion) -> str:
        return completion.stop_reason or ("tool_use" if completion.tool_calls else "end_turn")

    def _message(self, body: Mapping[str, Any], content: list[Any], usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.upstream.next_id("msg_fake"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }

    def response_json(self, completion: Completion, body: Mapping[str, Any]) -> Any:
        blocks = self._blocks(completion, body)
        usage = self._usage(completion, body, self._output_tokens(completion))
        message = self._message(
            body, [final for _, _, final in blocks], {**usage, "service_tier": "standard"}
        )
        message["stop_reason"] = self._stop_reason(completion)
        return message

    def _start_frames(self, body: Mapping[str, Any], usage: dict[str, int]) -> list[bytes]:
        # message_start carries a provisional output count; message_delta has the cumulative one.
        start_usage = {**usage, "output_tokens": 1, "service_tier": "standard"}
        return [_event({"type": "message_start", "message": self._message(body, [], start_usage)})]

    def stream_frames(self, completion: Completion, body: Mapping[str, Any]) -> list[bytes]:
        blocks = self._blocks(completion, body)
        usage = self._usage(completion, body, self._output_tokens(completion))
        frames = self._start_frames(body, usage)
        for index, (start, deltas, _) in enumerate(blocks):
            frames.append(_event({"type": "content_block_start", "index": index, "content_block": start}))
            if index == 0:
                frames.append(PING)
            for delta in deltas:
                frames.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))
            frames.append(_event({"type": "content_block_stop", "index": index}))
        stop = {"stop_reason": self._stop_reason(completion), "stop_sequence": None}
        frames.append(_event({"type": "message_delta", "delta": stop, "usage": usage}))
        frames.append(MESSAGE_STOP)
        return frames

    def stream_error_frames(self, reply: scripting.StreamErrorReply, body: Mapping[str, Any]) -> list[bytes]:
        usage = self._usage(Completion(), body, 1)
        frames = self._start_frames(body, usage)
        if reply.text_before:
            text_start = {"type": "text", "text": ""}
            frames.append(_event({"type": "content_block_start", "index": 0, "content_block": text_start}))
            frames.append(PING)
            for piece in split_text(reply.text_before):
                delta = {"type": "text_delta", "text": piece}
                frames.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
        else:
            frames.append(PING)
        error_type = reply.error_type or "overloaded_error"
        error = {"type": error_type, "message": reply.message or DEFAULT_MESSAGES.get(529, "Overloaded")}
        frames.append(_event({"type": "error", "error": error}))
        return frames

    def stream_error_as_http(self, reply: scripting.StreamErrorReply) -> ErrorReply:
        error_type = reply.error_type or "overloaded_error"
        return ErrorReply(
            status=STATUS_BY_TYPE.get(error_type, 500),
            message=reply.message,
            error_type=error_type,
            delay=reply.delay,
            headers=reply.headers,
        )

    def error(self, reply: ErrorReply) -> tuple[bytes, dict[str, str]]:
        request_id = self.upstream.next_id("req_fake")
        headers = {"request-id": request_id}
        if reply.status == 429:
            headers.update({"retry-after": "1", "x-should-retry": "true"})
        if reply.body is not None:
            return orjson.dumps(reply.body), headers
        error = {
            "type": reply.error_type or ERROR_TYPES.get(reply.status, "api_error"),
            "message": reply.message or DEFAULT_MESSAGES.get(reply.status, f"Error {reply.status}"),
        }
        return orjson.dumps({"type": "error", "error": error, "request_id": request_id}), headers

    def response_headers(self) -> dict[str, str]:
        return {
            "request-id": self.upstream.next_id("req_fake"),
            "anthropic-ratelimit-unified-status": "allowed",
            "anthropic-ratelimit-unified-5h-reset": "1767243600",
            "anthropic-ratelimit-unified-7d-reset": "1767830400",
        }

    limit_error_type = "rate_limit_error"

    def quota_headers(self, limits: scripting.FakeLimits, now: float) -> dict[str, str]:
        limited = limits.limited(now)
        short_reset = limits.limited_until if limited and limits.limited_until else now + 5 * 3600
        short = 1.0 if limited or limits.overage else limits.used
        rejected = limited or limits.overage  # overage: the plan's limit is reached, extra usage pays
        unified = "anthropic-ratelimit-unified-"
        return {
            unified + "status": "rejected" if rejected else "allowed_warning" if short >= 0.8 else "allowed",
            unified + "reset": str(int(short_reset)),
            unified + "representative-claim": "five_hour",
            unified + "5h-status": "rejected" if rejected else "allowed",
            unified + "5h-utilization": f"{short:.2f}",
            unified + "5h-reset": str(int(short_reset)),
            unified + "7d-status": "allowed",
            unified + "7d-utilization": f"{limits.weekly:.2f}",
            unified + "7d-reset": str(int(now + 7 * 86400)),
            unified + "overage-status": "allowed" if limits.overage else "rejected",
            unified + "overage-in-use": "true" if limits.overage and not limited else "false",
            unified + "fallback-percentage": "0.5",
        }

    # -- endpoints

    def _check(self, request: Request, body: Any, *, generate: bool) -> ChunkedResponse | None:
        headers = request.headers
        if self.upstream.require_auth and not (headers.get("x-api-key") or headers.get("authorization")):
            return self.error_response(401, "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return self.error_response(400, "anthropic-version: header is required")
        if not isinstance(body, dict):
            return self.error_response(400, "There was an issue with the body of your request: invalid JSON")
        required = ("model", "messages", "max_tokens") if generate else ("model", "messages")
        for name in required:
            if name not in body:
                return self.error_response(400, f"{name}: Field required")
        if not isinstance(body["messages"], list):
            return self.error_response(400, "messages: Input should be a valid list")
        problem = scripting.type_problem(body, FIELD_TYPES) or _messages_problem(body["messages"])
        if problem is not None:
            return self.error_response(400, problem)
        max_tokens = body.get("max_tokens")
        if generate and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
            return self.error_response(400, "max_tokens: Input should be a valid integer")
        if generate and not 1 <= int(max_tokens or 0) < MAX_TOKENS_CEILING:
            return self.error_response(400, f"max_tokens: {max_tokens} is out of range")
        model = body["model"]
        if not isinstance(model, str) or not model.startswith("claude-"):
            return self.error_response(404, f"model: {model}")
        return None

    async def messages(self, request: Request) -> ChunkedResponse:
        recorded = await scripting.record_request(self.upstream, request)
        problem = self._check(request, recorded.json, generate=True)
        if problem is not None:
            return problem
        body: dict[str, Any] = recorded.json
        reply = self.upstream.next_reply(recorded, self.conversation(body))
        return self.answer(request, reply, body, stream=body.get("stream") is True)

    async def count_tokens(self, request: Request) -> ChunkedResponse:
        recorded = await scripting.record_request(self.upstream, request)
        problem = self._check(request, recorded.json, generate=False)
        if problem is not None:
            return problem
        data = orjson.dumps({"input_tokens": self.input_tokens(recorded.json)})
        return ChunkedResponse(200, {"content-type": "application/json", **self.response_headers()}, [data])

    async def plan_usage(self, request: Request) -> ChunkedResponse:
        """``GET /api/oauth/usage`` (Claude Code's ``/status`` and status line), in the shape its parser
        reads: a window per key, ``utilization`` in percent and ``resets_at`` as ISO 8601."""
        return await self.account_read(request, plan_usage_body)

    # Model-list reads are not recorded: a proxy refreshes its catalog at times of its own choosing, and
    # ``requests`` stays the list of model calls tests count.
    async def list_models(self, request: Request) -> ChunkedResponse:
        models = MODELS
        query = request.query_params
        ids = [m["id"] for m in models]
        if query.get("after_id") in ids:
            models = models[ids.index(query["after_id"]) + 1 :]
        elif query.get("before_id") in ids:
            models = models[: ids.index(query["before_id"])]
        try:
            limit = int(query.get("limit") or 20)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self.error_response(400, "limit: Input should be an integer from 1 to 1000")
        page = models[:limit]
        data = {
            "data": page,
            "has_more": len(models) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
        return ChunkedResponse(200, {"content-type": "application/json"}, [orjson.dumps(data)])

    async def get_model(self, request: Request) -> ChunkedResponse:
        model_id = request.path_params["model_id"]
        for model in MODELS:
            if model["id"] == model_id:
                return ChunkedResponse(200, {"content-type": "application/json"}, [orjson.dumps(model)])
        return self.error_response(404, f"model: {model_id}")


def create_app(upstream: scripting.FakeUpstream | None = None) -> Starlette:
    """The fake Anthropic API; its ``FakeUpstream`` is ``app.state.upstream``."""
    return AnthropicFake(upstream).app()


def plan_usage_body(usage: scripting.PlanUsage) -> dict[str, Any]:
    now = time.time()

    def window(percent: float, seconds: int) -> dict[str, Any]:
        resets = datetime.fromtimestamp(now + seconds, UTC).isoformat()
        return {"utilization": percent, "resets_at": resets}

    return {
        "five_hour": window(usage.primary_percent, usage.primary_reset_seconds),
        "seven_day": window(usage.secondary_percent, usage.secondary_reset_seconds),
        "seven_day_oauth_apps": None,
        "seven_day_opus": None,
        "seven_day_sonnet": None,
        "extra_usage": {
            "is_enabled": False,
            "monthly_limit": None,
            "used_credits": None,
            "utilization": None,
        },
    }
