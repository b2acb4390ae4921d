"""``ccproxy permissions watch``: a terminal approver.

Follows ``GET /permissions/stream``; for every pending request prints the tool and its input and asks
``y/n``; the answer goes to ``POST /permissions/{id}/respond``. A request answered elsewhere (another
watcher, the dashboard, a timeout) while the question is open is reported and skipped. When the server goes
away the watcher reconnects, and on reconnect the stream replays whatever is still pending.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

import httpx

from ccproxy.permissions import describe

Ask = Callable[[str], str]


async def watch(
    url: str,
    token: str | None = None,
    *,
    out: TextIO = sys.stdout,
    reconnect_seconds: float = 1.0,
    once: bool = False,
) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    announced = False
    lines = _stdin_lines()
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=None) as client:
        while True:
            try:
                async with client.stream("GET", "/permissions/stream") as resp:
                    if resp.status_code in (401, 403):
                        raise SystemExit(f"ccproxy: error: the server refused the token ({resp.status_code})")
                    resp.raise_for_status()
                    print(f"watching {url} for permission requests (Ctrl-C to stop)", file=out, flush=True)
                    announced = False
                    await _follow(client, resp, out, lines)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if not announced:
                    print(f"server unavailable ({type(exc).__name__}); reconnecting…", file=out, flush=True)
                    announced = True
            if once:
                return
            await asyncio.sleep(reconnect_seconds)


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines typed on stdin, read by the event loop (a pending question can be withdrawn cleanly)."""
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        line = sys.stdin.readline()
        if not line:  # end of input: stop reading, answer nothing more
            loop.remove_reader(sys.stdin.fileno())
            return
        lines.put_nowait(line)

    loop.add_reader(sys.stdin.fileno(), readable)
    return lines


async def _follow(
    client: httpx.AsyncClient, resp: httpx.Response, out: TextIO, lines: asyncio.Queue[str]
) -> None:
    kind = ""
    open_question: asyncio.Task[None] | None = None
    current: str | None = None
    queue: list[dict[str, Any]] = []
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
            continue
        if not line.startswith("data: "):
            continue
        data = json.loads(line[6:])
        if kind == "pending":
            queue.append(data)
        elif data.get("id") == current and open_question is not None:
            open_question.cancel()
            print(f"\n{data['id']} was answered elsewhere ({_outcome(data)})", file=out, flush=True)
        else:
            queue = [q for q in queue if q["id"] != data.get("id")]
        if (open_question is None or open_question.done()) and queue:
            request = queue.pop(0)
            current = request["id"]
            open_question = asyncio.create_task(_question(client, request, out, lines))
    if open_question is not None:
        open_question.cancel()


async def _question(
    client: httpx.AsyncClient, request: dict[str, Any], out: TextIO, lines: asyncio.Queue[str]
) -> None:
    while not lines.empty():  # typed before the question was asked: not an answer to it
        lines.get_nowait()
    print(f"\nPermission request {request['id']} ({request.get('source', '?')})", file=out)
    print(f"  {describe(request['tool_name'], request.get('input') or {})}", file=out)
    print(f"  input: {json.dumps(request.get('input'), ensure_ascii=False)[:2000]}", file=out)
    print("Allow? [y/n] ", end="", file=out, flush=True)
    answer = (await lines.get()).strip().lower()
    allowed = answer in ("y", "yes")
    body: dict[str, Any] = {"allowed": allowed}
    if not allowed:
        body["message"] = "Denied by the person at the ccproxy terminal approver."
    resp = await client.post(f"/permissions/{request['id']}/respond", json=body)
    if resp.status_code == 200:
        print("allowed" if allowed else "denied", file=out, flush=True)
    else:
        print(f"not applied: {resp.json().get('error', {}).get('message', resp.text)}", file=out, flush=True)


def _outcome(data: dict[str, Any]) -> str:
    decision = data.get("decision") or {}
    verdict = "allowed" if decision.get("allowed") else "denied"
    return f"{verdict} by {decision.get('by', '?')}"
