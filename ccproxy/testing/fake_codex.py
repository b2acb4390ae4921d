"""Fake ChatGPT Codex backend (``https://chatgpt.com/backend-api/codex/responses``): Responses API, SSE only.

Routes (``create_app()``): ``POST /responses`` — so the app can be mounted anywhere (the combined fake
mounts it at ``/backend-api/codex``) — and ``POST /backend-api/codex/responses`` for standalone use.

The stream is the full Responses sequence, ``event:`` lines named after ``data.type``, ``sequence_number``
from 0: ``response.created``, ``response.in_progress``, then per output item ``response.output_item.added``
… ``response.output_item.done`` (reasoning with ``response.reasoning_summary_part.added`` /
``response.reasoning_summary_text.delta`` / ``.done`` / ``response.reasoning_summary_part.done`` and
``encrypted_content`` when the request ``include``s ``reasoning.encrypted_content``; message with
``response.content_part.added`` / ``response.output_text.delta`` / ``.done`` / ``response.content_part.done``;
function calls with ``response.function_call_arguments.delta`` / ``.done``), then ``response.completed``
(``response.incomplete`` for a ``max_tokens`` stop) with usage incl. ``input_tokens_details.cached_tokens``
and ``output_tokens_details.reasoning_tokens``.

The backend's rules (upstreams.md §6, NOTES §4.14), answered with FastAPI-style ``{"detail": "..."}``:
401 without ``Authorization: Bearer`` or ``chatgpt-account-id``; 400 "Stream must be set to true",
"Store must be set to false" (``store`` missing counts), "Unsupported parameter: <name>" for any key outside
the allow-list below (``max_output_tokens``, ``metadata``, ``temperature``, ``response_format``, ...), and
"System messages are not allowed" for ``role: "system"`` input items.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request

from ccproxy.sse import frame
from ccproxy.testing import scripting
from ccproxy.testing.playback import ChunkedResponse, ProviderFake
from ccproxy.testing.scripting import output_tokens, split_text

# Keys the Codex CLI (0.169) and ccproxy send; LiteLLM also settled on an allow-list for this backend.
ALLOWED_KEYS = frozenset(
    {
        "model",
        "instructions",
        "input",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "store",
        "stream",
        "include",
        "prompt_cache_key",
        "client_metadata",
        "text",
        "service_tier",
        "previous_response_id",
    }
)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "instructions": (str,),
    "input": (str, list),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "reasoning": (dict,),
    "include": (list,),
    "prompt_cache_key": (str,),
    "client_metadata": (dict,),
    "text": (dict,),
    "service_tier": (str,),
    "previous_response_id": (str,),
}
TOOL_OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output")
DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Rate limit reached",
    500: "Internal Server Error",
}
CREATED_AT = 1767225600  # fixed, so streams are reproducible


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


# The backend's catalog as the Codex CLI 0.169 reads it (slug, display_name; code-mode slugs included).
MODELS = [
    {"slug": slug, "display_name": name, "context_window": 272_000, "tool_mode": mode}
    for slug, name, mode in [
        ("gpt-6.1-sol", "GPT-6.1 Sol", "code_mode_only"),
        ("gpt-6-sol", "GPT-6 Sol", "code_mode_only"),
        ("gpt-5.5", "GPT-5.5", "default"),
        ("gpt-5.4", "GPT-5.4", "default"),
        ("gpt-5.3-codex", "GPT-5.3 Codex", "default"),
    ]
]


class _Events:
    """Accumulates Responses events with consecutive sequence numbers."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seq = 0

    def add(self, type_: str, **fields: Any) -> None:
        self.frames.append(frame(type_, {"type": type_, "sequence_number": self.seq, **fields}))
        self.seq += 1


class CodexFake(ProviderFake):
    name = "codex"
    ROUTES = (
        ("/responses", "responses", "POST"),
        ("/backend-api/codex/responses", "responses", "POST"),
        ("/models", "models", "GET"),
        ("/backend-api/codex/models", "models", "GET"),
        ("/backend-api/wham/usage", "plan_usage", "GET"),
        ("/backend-api/wham/accounts/check", "accounts_check", "GET"),
    )

    # -- request side

    def conversation(self, body: Mapping[str, Any]) -> scripting.Conversation:
        items = body.get("input")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        items = [i for i in items or [] if isinstance(i, dict)]
        tools: list[scripting.ToolSpec] = []
        for tool in body.get("tools") or []:
            if not isinstance(tool, dict):
                continue
            nested = tool.get("function")  # tolerate Chat-style definitions
            spec: dict[str, Any] = nested if isinstance(nested, dict) else tool
            if isinstance(spec.get("name"), str):
                tools.append(scripting.ToolSpec(spec["name"], spec.get("parameters") or {}))
        tool_output = None
        if items and items[-1].get("type") in TOOL_OUTPUT_TYPES:
            output = items[-1].get("output")
            tool_output = output if isinstance(output, str) else _text(output)
        users = [i for i in items if i.get("role") == "user"]
        prompt = _text(users[-1].get("content")) if users else ""
        choice = body.get("tool_choice")
        forced = None
        if choice == "required":
            forced = "*"
        elif isinstance(choice, dict) and choice.get("type") == "function":
            forced = str(choice.get("name") or (choice.get("function") or {}).get("name"))
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        schema = fmt.get("schema") if isinstance(fmt, dict) and kind == "json_schema" else None
        system = str(body.get("instructions") or "") + "\n".join(
            _text(i.get("content")) for i in items if i.get("role") in ("system", "developer")
        )
        return scripting.Conversation(
            prompt=prompt,
            tool_output=tool_output,
            tools=tuple(tools),
            forced_tool=forced,
            output_schema=schema if isinstance(schema, dict) else None,
            json_mode=kind == "json_object" or scripting.JSON_INSTRUCTION.search(system) is not None,
            system=system,
        )

    # -- rendering

    def _response(self, body: Mapping[str, Any], resp_id: str, status: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": resp_id,
            "object": "response",
            "created_at": CREATED_AT,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": None,
            "max_tool_calls": None,
            "model": body.get("model"),
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "auto",
            "store": False,
            "temperature": 1.0,
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": {},
            **fields,
        }

    def _usage(self, completion: scripting.Completion, body: Mapping[str, Any]) -> dict[str, Any]:
        uncached = completion.input_tokens
        if uncached is None:
            uncached = scripting.estimate_tokens(
                body.get("instructions"), body.get("input"), body.get("tools")
            )
        visible, reasoning = output_tokens(completion)
        out = completion.output_tokens if completion.output_tokens is not None else visible + reasoning
        # OpenAI counts cached tokens inside input_tokens (Anthropic keeps the buckets disjoint).
        inp = uncached + completion.cache_read_tokens
        return {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": completion.cache_read_tokens},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out,
        }

    def _start(self, body: Mapping[str, Any], resp_id: str) -> _Events:
        events = _Events()
        events.add("response.created", response=self._response(body, resp_id, "in_progress"))
        events.add("response.in_progress", response=self._response(body, resp_id, "in_progress"))
        return events

    def _reasoning(
        self, events: _Events, index: int, thinking: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        item_id = self.upstream.next_id("rs_fake")
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        if "reasoning.encrypted_content" in (body.get("include") or []):
            item["encrypted_content"] = "gAAAAAB" + scripting.signature(thinking)
        events.add("response.output_item.added", output_index=index, item=item)
        summary = []
        if thinking:
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            events.add(
                "response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""}
            )
            for piece in split_text(thinking):
                events.add("response.reasoning_summary_text.delta", **where, delta=piece)
            events.add("response.reasoning_summary_text.done", **where, text=thinking)
            part = {"type": "summary_text", "text": thinking}
            events.add("response.reasoning_summary_part.done", **where, part=part)
            summary = [part]
        done = {**item, "summary": summary}
        events.add("response.output_item.done", output_index=index, item=done)
        return done

    def _message(
        self, events: _Events, index: int, text: str, status: str, *, finish: bool = True
    ) -> dict[str, Any]:
        item_id = self.upstream.next_id("msg_fake")
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        events.add("response.output_item.added", output_index=index, item=item)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        events.add("response.content_part.added", **where, part=empty)
        for piece in split_text(text):
            events.add("response.output_text.delta", **where, delta=piece, logprobs=[])
        if not finish:
            return item
        events.add("response.output_text.done", **where, text=text, logprobs=[])
        part = {**empty, "text": text}
        events.add("response.content_part.done", **where, part=part)
        done = {**item, "status": status, "content": [part]}
        events.add("response.output_item.done", output_index=index, item=done)
        return done

    def _function_call(
        self, events: _Events, index: int, name: str, args: str, call_id: str
    ) -> dict[str, Any]:
        item_id = self.upstream.next_id("fc_fake")
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call_id,
            "name": name,
        }
        events.add("response.output_item.added", output_index=index, item=item)
        for piece in scripting.split_json(args):
            events.add(
                "response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece
            )
        events.add(
            "response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=args
        )
        done = {**item, "status": "completed", "arguments": args}
        events.add("response.output_item.done", output_index=index, item=done)
        return done

    def stream_frames(self, completion: scripting.Completion, body: Mapping[str, Any]) -> list[bytes]:
        resp_id = self.upstream.next_id("resp_fake")
        events = self._start(body, resp_id)
        incomplete = completion.stop_reason in ("max_tokens", "model_context_window_exceeded")
        output: list[dict[str, Any]] = []
        if completion.thinking is not None:
            output.append(self._reasoning(events, len(output), completion.thinking, body))
        if completion.text or not completion.tool_calls:
            status = "incomplete" if incomplete else "completed"
            output.append(self._message(events, len(output), completion.text, status))
        for call in completion.tool_calls:
            args = orjson.dumps(dict(call.arguments)).decode()
            call_id = call.id or self.upstream.next_id("call_fake")
            output.append(self._function_call(events, len(output), call.name, args, call_id))
        usage = self._usage(completion, body)
        if incomplete:
            details = {"reason": "max_output_tokens"}
            final = self._response(
                body, resp_id, "incomplete", output=output, usage=usage, incomplete_details=details
            )
            events.add("response.incomplete", response=final)
        else:
            events.add(
                "response.completed",
                response=self._response(body, resp_id, "completed", output=output, usage=usage),
            )
        return events.frames

    def stream_error_frames(self, reply: scripting.StreamErrorReply, body: Mapping[str, Any]) -> list[bytes]:
        resp_id = self.upstream.next_id("resp_fake")
        events = self._start(body, resp_id)
        if reply.text_before:
            self._message(events, 0, reply.text_before, "incomplete", finish=False)
        code = reply.error_type or "server_error"
        message = reply.message or "An error occurred while processing the request."
        if reply.codex_mode in ("both", "error"):
            events.add("error", error={"type": code, "code": code, "message": message, "param": None})
        if reply.codex_mode in ("both", "failed"):
            error = {"code": code, "message": message}
            events.add("response.failed", response=self._response(body, resp_id, "failed", error=error))
        return events.frames

    def error(self, reply: scripting.ErrorReply) -> tuple[bytes, dict[str, str]]:
        headers = {"x-request-id": self.upstream.next_id("req_fake")}
        if reply.status == 429:
            headers["retry-after"] = "1"
        message = reply.message or DEFAULT_MESSAGES.get(reply.status, f"Error {reply.status}")
        if reply.body is not None:
            data: Any = reply.body
        elif reply.error_type is not None:
            # e.g. usage_limit_reached / rate_limit_exceeded: the backend's own error object
            data = {"error": {"type": reply.error_type, "code": reply.error_type, "message": message}}
        else:
            data = {"detail": message}
        return orjson.dumps(data), headers

    def response_headers(self) -> dict[str, str]:
        return {
            "x-request-id": self.upstream.next_id("req_fake"),
            "x-codex-primary-used-percent": "0",
            "x-codex-primary-window-minutes": "299",
            "x-codex-primary-reset-after-seconds": "18000",
            "x-codex-secondary-used-percent": "0",
            "x-codex-secondary-window-minutes": "10079",
            "x-codex-secondary-reset-after-seconds": "604800",
            "x-codex-primary-over-secondary-limit-percent": "0",
        }

    limit_error_type = "usage_limit_reached"

    def quota_headers(self, limits: scripting.FakeLimits, now: float) -> dict[str, str]:
        limited = limits.limited(now)
        after = limits.limited_until - now if limited and limits.limited_until else 5 * 3600
        headers = {
            "x-codex-primary-used-percent": str(100 if limited else round(limits.used * 100)),
            "x-codex-primary-window-minutes": "299",
            "x-codex-primary-reset-after-seconds": str(int(after)),
            "x-codex-secondary-used-percent": str(round(limits.weekly * 100)),
            "x-codex-secondary-window-minutes": "10079",
            "x-codex-secondary-reset-after-seconds": str(7 * 86400),
            "x-codex-primary-over-secondary-limit-percent": "0",
        }
        if limited:
            headers["x-codex-rate-limit-reached-type"] = "primary"
        return headers

    # -- endpoint

    def _check(self, request: Request, body: Any) -> ChunkedResponse | None:
        if self.upstream.require_auth:
            auth = request.headers.get("authorization", "")
            if not auth.lower().startswith("bearer ") or not auth[7:].strip():
                return self.error_response(401, "Missing or invalid Authorization header")
            if not request.headers.get("chatgpt-account-id"):
                return self.error_response(401, "Missing chatgpt-account-id header")
        if not isinstance(body, dict):
            return self.error_response(400, "Invalid JSON body")
        if body.get("stream") is not True:
            return self.error_response(400, "Stream must be set to true")
        if body.get("store") is not False:
            return self.error_response(400, "Store must be set to false")
        for key in body:
            if key not in ALLOWED_KEYS:
                return self.error_response(400, f"Unsupported parameter: {key}")
        problem = scripting.type_problem(body, FIELD_TYPES)
        if problem is not None:
            return self.error_response(400, problem)
        items = body.get("input")
        if isinstance(items, list) and any(isinstance(i, dict) and i.get("role") == "system" for i in items):
            return self.error_response(400, "System messages are not allowed")
        return None

    async def responses(self, request: Request) -> ChunkedResponse:
        recorded = await scripting.record_request(self.upstream, request)
        problem = self._check(request, recorded.json)
        if problem is not None:
            return problem
        body: dict[str, Any] = recorded.json
        reply = self.upstream.next_reply(recorded, self.conversation(body))
        return self.answer(request, reply, body, stream=True)

    async def models(self, request: Request) -> ChunkedResponse:
        """The backend's model catalog (``GET /models?client_version=…``, upstreams.md §6.6); not recorded
        (a proxy refreshes its catalog at times of its own choosing)."""
        auth = request.headers.get("authorization", "")
        if self.upstream.require_auth and not auth.lower().startswith("bearer "):
            return self.error_response(401, "Missing or invalid Authorization header")
        body = orjson.dumps({"models": MODELS})
        return ChunkedResponse(200, {"content-type": "application/json"}, [body])

    async def plan_usage(self, request: Request) -> ChunkedResponse:
        """``GET /backend-api/wham/usage`` (the Codex CLI's ``/status``): plan and both windows."""
        return await self.account_read(request, plan_usage_body)

    async def accounts_check(self, request: Request) -> ChunkedResponse:
        """``GET /backend-api/wham/accounts/check``: the workspace of the ``chatgpt-account-id`` asking."""
        account = request.headers.get("chatgpt-account-id", "")

        def body(usage: scripting.PlanUsage) -> dict[str, Any]:
            entry = {
                "id": account,
                "plan_type": usage.plan_type,
                "name": None,
                "structure": "personal",
                "workspace_backend_origin": "NO_CONSTRAINT",
                "account_routing_override": "NO_CONSTRAINT",
            }
            return {"accounts": [entry], "account_ordering": [account], "default_account_id": account}

        return await self.account_read(request, body)


def create_app(upstream: scripting.FakeUpstream | None = None) -> Starlette:
    """The fake Codex backend; its ``FakeUpstream`` is ``app.state.upstream``."""
    return CodexFake(upstream).app()


def plan_usage_body(usage: scripting.PlanUsage) -> dict[str, Any]:
    now = int(time.time())

    def window(percent: float, length: int, seconds: int) -> dict[str, Any]:
        return {
            "used_percent": round(percent),
            "limit_window_seconds": length,
            "reset_after_seconds": seconds,
            "reset_at": now + seconds,
        }

    return {
        "plan_type": usage.plan_type,
        "rate_limit": {
            "allowed": usage.primary_percent < 100 and usage.secondary_percent < 100,
            "limit_reached": usage.primary_percent >= 100 or usage.secondary_percent >= 100,
            "primary_window": window(usage.primary_percent, 5 * 3600, usage.primary_reset_seconds),
            "secondary_window": window(usage.secondary_percent, 7 * 86400, usage.secondary_reset_seconds),
        },
        "credits": {"has_credits": False, "unlimited": False, "balance": None},
    }
