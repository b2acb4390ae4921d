"""Request bodies, pre-rendered upstream answers, and the checks a streamed answer must pass.

Every streamed text delta is a numbered word (``w0 ``, ``w1 `` …), so the client can tell, in any of the
three wire formats, that every delta arrived, in order, one per event (a proxy that buffers and merges
deltas, or drops some, fails the check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ccproxy.formats.base import Format

CLAUDE_MODEL = "claude-sonnet-4-5-20250929"
GPT_MODEL = "gpt-5.4"
# Markers in the user text (they survive every request translation) select the upstream's answer.
LONG = "bench-long"
SLOW = "bench-slow"
STREAM_EVENTS = 200
CODEX_SHORT_DELTAS = 20
JSON_WORDS = 40
LARGE_BODY_BYTES = 50_000


def words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


def sse(event: str | None, data: dict[str, Any]) -> bytes:
    payload = orjson.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


# -- upstream answers ---------------------------------------------------------------------------------


def anthropic_json() -> bytes:
    return orjson.dumps(
        {
            "id": "msg_bench01",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE_MODEL,
            "content": [{"type": "text", "text": "".join(words(JSON_WORDS))}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "output_tokens": JSON_WORDS,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    )


def anthropic_events(total: int) -> list[tuple[str, dict[str, Any]]]:
    """An Anthropic Messages stream of exactly ``total`` events (``total - 5`` text deltas)."""
    deltas = total - 5
    usage = {
        "input_tokens": 12,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message: dict[str, Any] = {
        "id": "msg_bench01",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for word in words(deltas):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        events.append(("content_block_delta", delta))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final_usage = {**usage, "output_tokens": deltas}
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": final_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def responses_events(total: int) -> list[tuple[str, dict[str, Any]]]:
    """A Responses (Codex backend) stream of exactly ``total`` events (``total - 8`` text deltas)."""
    deltas = total - 8
    text = "".join(words(deltas))
    base: dict[str, Any] = {
        "id": "resp_bench01",
        "object": "response",
        "created_at": 1767225600,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": GPT_MODEL,
        "output": [],
        "parallel_tool_calls": True,
        "store": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
        "metadata": {},
    }
    item = {
        "id": "msg_bench01",
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    where = {"item_id": "msg_bench01", "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    part = {**empty, "text": text}
    done_item = {**item, "status": "completed", "content": [part]}
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": deltas,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12 + deltas,
    }
    raw: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": base}),
        ("response.in_progress", {"response": base}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.content_part.added", {**where, "part": empty}),
    ]
    raw += [("response.output_text.delta", {**where, "delta": w, "logprobs": []}) for w in words(deltas)]
    raw += [
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": done_item}),
        (
            "response.completed",
            {"response": {**base, "status": "completed", "output": [done_item], "usage": usage}},
        ),
    ]
    return [(name, {"type": name, "sequence_number": i, **data}) for i, (name, data) in enumerate(raw)]


def render(events: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    return [sse(name, data) for name, data in events]


# -- client requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One client-facing route of ccproxy, and where the same request goes when sent direct."""

    key: str
    path: str
    client: Format
    upstream: Format
    direct_path: str  # the upstream path the proxy forwards to

    @property
    def passthrough(self) -> bool:
        return self.client is self.upstream


CODEX_PATH = "/backend-api/codex/responses"
ROUTES = {
    r.key: r
    for r in (
        Route("messages", "/api/v1/messages", Format.ANTHROPIC, Format.ANTHROPIC, "/v1/messages"),
        Route("chat", "/api/v1/chat/completions", Format.CHAT, Format.ANTHROPIC, "/v1/messages"),
        Route("responses", "/api/v1/responses", Format.RESPONSES, Format.ANTHROPIC, "/v1/messages"),
        Route("codex-responses", "/api/codex/v1/responses", Format.RESPONSES, Format.RESPONSES, CODEX_PATH),
        Route("codex-chat", "/api/codex/v1/chat/completions", Format.CHAT, Format.RESPONSES, CODEX_PATH),
    )
}


def client_body(route: Route, *, stream: bool, marker: str = "", large: bool = False) -> bytes:
    text = f"Say hello. {marker}".strip()
    if large:
        filler = "The quick brown fox jumps over the lazy dog. "
        text = text + " " + filler * (LARGE_BODY_BYTES // len(filler))
    model = CLAUDE_MODEL if route.upstream is Format.ANTHROPIC else GPT_MODEL
    body: dict[str, Any]
    if route.client in (Format.ANTHROPIC, Format.CHAT):
        body = {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": text}]}
    else:
        body = {"model": model, "input": text}
        if route.upstream is Format.ANTHROPIC:
            body["max_output_tokens"] = 1024
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def direct_body(route: Route, *, stream: bool, marker: str = "", large: bool = False) -> bytes:
    """What the upstream receives for the same request (its own format), for the direct baseline."""
    upstream_route = ROUTES["messages"] if route.upstream is Format.ANTHROPIC else ROUTES["codex-responses"]
    body = orjson.loads(client_body(upstream_route, stream=stream, marker=marker, large=large))
    if route.upstream is Format.RESPONSES:
        body.update({"stream": True, "store": False, "instructions": "You are Codex."})
    return orjson.dumps(body)


def headers_for(fmt: Format, host: str) -> list[tuple[str, str]]:
    headers = [("Host", host), ("Content-Type", "application/json")]
    if fmt is Format.ANTHROPIC:
        headers += [("anthropic-version", "2023-06-01"), ("x-api-key", "sk-ant-bench")]
    else:
        headers += [("Authorization", "Bearer sk-bench")]
    return headers


def raw_request(path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


# -- stream checks ------------------------------------------------------------------------------------


def split_events(body: bytes) -> list[tuple[str | None, bytes]]:
    out: list[tuple[str | None, bytes]] = []
    for frame in body.split(b"\n\n"):
        if not frame.strip():
            continue
        name: str | None = None
        data: list[bytes] = []
        for line in frame.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        out.append((name, b"\n".join(data)))
    return out


def stream_deltas(fmt: Format, body: bytes) -> tuple[list[str], bool, str]:
    """(text deltas in arrival order, whether the proper terminal event ended the stream, error text)."""
    deltas: list[str] = []
    events = split_events(body)
    if not events:
        return deltas, False, "no events"
    for name, data in events:
        if data == b"[DONE]":
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return deltas, False, f"undecodable event data {data[:80]!r}"
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "error" or name == "error" or (isinstance(obj, dict) and "error" in obj and obj["error"]):
            return deltas, False, f"in-band error {data[:200]!r}"
        if fmt is Format.ANTHROPIC:
            if kind == "content_block_delta":
                deltas.append(obj["delta"].get("text", ""))
        elif fmt is Format.RESPONSES:
            if kind == "response.output_text.delta":
                deltas.append(obj["delta"])
        else:
            for choice in obj.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    deltas.append(content)
    last_name, last_data = events[-1]
    if fmt is Format.ANTHROPIC:
        terminal = last_name == "message_stop"
    elif fmt is Format.RESPONSES:
        terminal = last_name == "response.completed"
    else:
        terminal = last_data == b"[DONE]"
    return deltas, terminal, ""


def check_stream(fmt: Format, body: bytes, expected_deltas: int, exact: bytes | None = None) -> str:
    """'' when the stream is complete, in order and unmerged; otherwise what is wrong."""
    if exact is not None and body == exact:
        return ""
    deltas, terminal, error = stream_deltas(fmt, body)
    if error:
        return error
    if not terminal:
        return "stream did not end with its terminal event"
    want = words(expected_deltas)
    if deltas != want:
        if "".join(deltas) == "".join(want):
            return f"deltas merged or split: {len(deltas)} events for {len(want)} deltas"
        at = next(
            (i for i, (got, exp) in enumerate(zip(deltas, want, strict=False)) if got != exp), len(want)
        )
        return (
            f"deltas missing or out of order ({len(deltas)} for {len(want)}; first difference at #{at}: "
            f"got {deltas[at : at + 3]!r}, expected {want[at : at + 3]!r})"
        )
    return ""


def check_json(fmt: Format, body: bytes) -> str:
    """'' when a non-streamed answer carries the whole expected text."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not JSON: {body[:120]!r}"
    if fmt is Format.ANTHROPIC:
        text = "".join(b.get("text", "") for b in obj.get("content") or ())
    elif fmt is Format.CHAT:
        text = ((obj.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    else:
        text = "".join(
            c.get("text", "")
            for item in obj.get("output") or ()
            for c in item.get("content") or ()
            if isinstance(c, dict)
        )
    if not text.startswith("w0 w1 ") or not text.strip():
        return f"unexpected answer {body[:160]!r}"
    return ""
