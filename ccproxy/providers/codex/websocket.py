"""The Responses API over a WebSocket, as the Codex CLI's built-in provider speaks it (upstreams.md §6.5).

Each client frame is ``{"type": "response.create", ...Responses body...}``; every upstream SSE event goes
back as one text frame carrying the event's JSON unchanged. The backend is stateless for us
(``store: false``), so this socket keeps each response's full item history: a later turn sends
``previous_response_id`` plus only its new items, and the history is put back in front of them. A first
``generate: false`` frame is the CLI's prewarm and is answered locally.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from ccproxy.errors import ProxyError
from ccproxy.formats.base import Format
from ccproxy.proxy import Call, Provider, Proxy, model_problem

log = structlog.get_logger("ccproxy.codex.ws")
POLICY_VIOLATION = 1008
MAX_REMEMBERED = 64  # responses whose history a socket keeps (one conversation rarely needs more)


class ResponsesSocket:
    def __init__(self, websocket: WebSocket, proxy: Proxy, provider: Provider) -> None:
        self.ws = websocket
        self.proxy = proxy
        self.provider = provider
        self.history: dict[str, list[Any]] = {}
        self.session_id = websocket.path_params.get("session_id") or _header_session(websocket)

    async def run(self) -> None:
        await self.ws.accept()
        while True:
            try:
                text = await self.ws.receive_text()
            except WebSocketDisconnect:
                return
            try:
                frame = orjson.loads(text)
            except orjson.JSONDecodeError:
                await self.ws.close(POLICY_VIOLATION, "frames must be JSON")
                return
            if not isinstance(frame, dict) or frame.get("type") != "response.create":
                await self.ws.close(POLICY_VIOLATION, "expected a response.create frame")
                return
            try:
                await self.turn(frame)
            except WebSocketDisconnect:
                return

    async def turn(self, frame: dict[str, Any]) -> None:
        body = {k: v for k, v in frame.items() if k not in ("type", "generate", "previous_response_id")}
        new_items = _items(body.get("input"))
        previous = frame.get("previous_response_id")
        history: list[Any] = []
        if isinstance(previous, str) and previous:
            if previous not in self.history:
                await self._failed(404, f"previous response '{previous}' is not known on this connection")
                return
            history = self.history[previous]
        items = [*history, *new_items]
        if frame.get("generate") is False or not items:
            await self._local_completion(body, items)
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            await self._failed(400, model_problem(model))
            return
        body["input"] = items
        body["stream"] = True
        request_id = uuid.uuid4().hex
        headers = {k.lower(): v for k, v in self.ws.headers.items()}
        call = Call(
            request_id,
            Format.RESPONSES,
            "/responses",
            "",
            headers,
            body,
            True,
            model,
            self.session_id,
        )
        output: list[Any] = []
        try:
            async for event in self.proxy.events(call, self.provider, self.ws.url.path):
                await self.ws.send_text(event.data)
                if (
                    event.event in ("response.output_item.done", None)
                    or '"response.output_item.done"' in event.data
                ):
                    data = orjson.loads(event.data)
                    if data.get("type") == "response.output_item.done" and isinstance(data.get("item"), dict):
                        output.append(data["item"])
                elif event.event in ("response.completed", "response.incomplete"):
                    response = orjson.loads(event.data).get("response") or {}
                    self._remember(str(response.get("id") or ""), [*items, *output])
        except ProxyError as exc:
            await self._failed(exc.info.status, exc.info.message, exc.info.code)

    def _remember(self, response_id: str, items: list[Any]) -> None:
        if not response_id:
            return
        self.history[response_id] = items
        while len(self.history) > MAX_REMEMBERED:
            self.history.pop(next(iter(self.history)))

    async def _local_completion(self, body: dict[str, Any], items: list[Any]) -> None:
        """The prewarm (or an empty turn): a completed response with no output, never sent upstream."""
        response = _response(f"resp_ws_{uuid.uuid4().hex}", body, "completed")
        self._remember(response["id"], items)
        for seq, kind in enumerate(("response.created", "response.completed")):
            status = "in_progress" if kind == "response.created" else "completed"
            event = {"type": kind, "sequence_number": seq, "response": {**response, "status": status}}
            await self.ws.send_text(orjson.dumps(event).decode())

    async def _failed(self, status: int, message: str, code: str | None = None) -> None:
        response = _response(f"resp_ws_{uuid.uuid4().hex}", {}, "failed")
        response["error"] = {
            "code": code or ("rate_limit_exceeded" if status == 429 else "server_error"),
            "message": message,
        }
        event = {"type": "response.failed", "sequence_number": 0, "response": response}
        await self.ws.send_text(orjson.dumps(event).decode())


def _response(response_id: str, body: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model", ""),
        "output": [],
        "error": None,
        "incomplete_details": None,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "total_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return list(value) if isinstance(value, list) else []


def _header_session(websocket: WebSocket) -> str | None:
    for name in ("session_id", "session-id", "x-session-id"):
        if value := websocket.headers.get(name):
            return value
    return None
