"""The Responses API over a WebSocket, as the Codex CLI's built-in provider speaks it (upstreams.md §6.5).

Each client frame is ``{"type": "response.create", ...Responses body...}``; every upstream SSE event goes
back as one text frame carrying the event's JSON unchanged. The backend is stateless for us
(``store: false``), so each response's full item history goes to the provider's response store (the one
the HTTP routes use): a later turn sends ``previous_response_id`` plus only its new items, and the history
is put back in front of them. As on OpenAI's own WebSocket mode, a ``store: false`` response is still
chainable on its connection: it is kept in memory only and forgotten when the connection closes. A first
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
from ccproxy.responses_store import ResponseStore, input_items

log = structlog.get_logger("ccproxy.codex.ws")
POLICY_VIOLATION = 1008


class ResponsesSocket:
    def __init__(self, websocket: WebSocket, proxy: Proxy, provider: Provider) -> None:
        self.ws = websocket
        self.proxy = proxy
        self.provider = provider
        assert provider.responses is not None
        self.store: ResponseStore = provider.responses
        self.ephemeral: list[str] = []  # store:false responses, forgotten with the connection
        self.session_id = websocket.path_params.get("session_id") or _header_session(websocket)

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            for response_id in self.ephemeral:
                await self.store.delete(response_id)

    async def _serve(self) -> None:
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
        body = {k: v for k, v in frame.items() if k not in ("type", "generate")}
        try:
            body = await self.store.expand(body)
        except ProxyError as exc:
            await self._failed(exc.info.status, exc.info.message, exc.info.code)
            return
        items = input_items(body.get("input"))
        keep = body.get("store") is not False
        if frame.get("generate") is False or not items:
            await self._local_completion(body, items, keep)
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
        # the client key that admitted the handshake (ccproxy.middleware), for the ledger and the key's spend
        call.state["client_key"] = self.ws.scope.get("state", {}).get("client_key")
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
                    if not response.get("output"):
                        response["output"] = output  # the backend leaves it empty
                    self._remember(str(response.get("id") or ""), [*items, *output], response, keep)
        except ProxyError as exc:
            await self._failed(exc.info.status, exc.info.message, exc.info.code)

    def _remember(self, response_id: str, items: list[Any], response: dict[str, Any], keep: bool) -> None:
        self.store.put(response_id, items, response, persist=keep)
        if not keep:
            self.ephemeral.append(response_id)

    async def _local_completion(self, body: dict[str, Any], items: list[Any], keep: bool) -> None:
        """The prewarm (or an empty turn): a completed response with no output, never sent upstream."""
        response = _response(f"resp_ws_{uuid.uuid4().hex}", body, "completed")
        self._remember(response["id"], items, response, keep)
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


def _header_session(websocket: WebSocket) -> str | None:
    for name in ("session_id", "session-id", "x-session-id"):
        if value := websocket.headers.get(name):
            return value
    return None
