"""In-process costs: stream translation per event and per 200-event stream, request/response translation,
JSON libraries, SSE parsing, and the side-by-side of HTTP client libraries (``python -m
bench.micro clients --port U``, run pinned to the proxy's CPU)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench import payloads as p
from bench.load import median, percentile
from ccproxy.formats.base import Format, TranslationContext, get_translation
from ccproxy.sse import SSEParser

PAIRS = [
    (Format.CHAT, Format.ANTHROPIC),
    (Format.RESPONSES, Format.ANTHROPIC),
    (Format.CHAT, Format.RESPONSES),
    (Format.ANTHROPIC, Format.RESPONSES),
]


def _best_of(fn: Callable[[], float], rounds: int) -> float:
    return min(fn() for _ in range(rounds))


def _upstream_events(upstream: Format, total: int) -> list[bytes]:
    events = p.anthropic_events(total) if upstream is Format.ANTHROPIC else p.responses_events(total)
    return [orjson.dumps([name, data]) for name, data in events]


def _client_request(client: Format, upstream: Format) -> dict[str, Any]:
    route = p.Route("micro", "/", client, upstream, "/")
    body: dict[str, Any] = orjson.loads(p.client_body(route, stream=True))
    return body


def translation_costs(quick: bool = False) -> list[dict[str, Any]]:
    """µs per converted event (steady-state text delta, and averaged over a whole 200-event stream)."""
    rows = []
    rounds = 3 if quick else 7
    for client, upstream in PAIRS:
        translation = get_translation(client, upstream)
        request = _client_request(client, upstream)
        model = str(request.get("model", ""))
        encoded = _upstream_events(upstream, p.STREAM_EVENTS)

        def whole_stream(
            encoded: list[bytes] = encoded,
            request: dict[str, Any] = request,
            model: str = model,
            translation: Any = translation,
        ) -> float:
            reps = 20
            parsed = [[orjson.loads(e) for e in encoded] for _ in range(reps)]  # fresh dicts, untimed
            start = time.perf_counter()
            for events in parsed:
                tr = translation.stream(TranslationContext(model, request))
                for name, data in events:
                    tr.feed(name, data)
                tr.finish()
            return (time.perf_counter() - start) / reps

        head = 2 if upstream is Format.ANTHROPIC else 4

        def one_delta(
            encoded: list[bytes] = encoded,
            request: dict[str, Any] = request,
            model: str = model,
            translation: Any = translation,
            head: int = head,
        ) -> float:
            n = 5000
            delta = encoded[head]
            tr = translation.stream(TranslationContext(model, request))
            for e in encoded[:head]:
                tr.feed(*orjson.loads(e))
            deltas = [orjson.loads(delta) for _ in range(n)]
            start = time.perf_counter()
            for name, data in deltas:
                tr.feed(name, data)
            return (time.perf_counter() - start) / n

        stream_s = _best_of(whole_stream, rounds)
        delta_s = _best_of(one_delta, rounds)
        if upstream is Format.ANTHROPIC:
            response_body: dict[str, Any] = orjson.loads(p.anthropic_json())
        else:
            response_body = p.responses_events(p.CODEX_SHORT_DELTAS + 8)[-1][1]["response"]
        ctx = TranslationContext(model, request)

        def req_cost(translation: Any = translation, request: dict[str, Any] = request) -> float:
            n = 2000
            start = time.perf_counter()
            for _ in range(n):
                translation.request(request)
            return (time.perf_counter() - start) / n

        def resp_cost(translation: Any = translation, body: Any = response_body, ctx: Any = ctx) -> float:
            n = 2000
            bodies = [orjson.loads(orjson.dumps(body)) for _ in range(n)]
            start = time.perf_counter()
            for b in bodies:
                translation.response(b, ctx)
            return (time.perf_counter() - start) / n

        rows.append(
            {
                "client": client.value,
                "upstream": upstream.value,
                "delta_event_us": delta_s * 1e6,
                "stream_200_us": stream_s * 1e6,
                "stream_per_event_us": stream_s * 1e6 / p.STREAM_EVENTS,
                "request_us": _best_of(req_cost, rounds) * 1e6,
                "response_us": _best_of(resp_cost, rounds) * 1e6,
            }
        )
    return rows


def json_costs(quick: bool = False) -> list[dict[str, Any]]:
    """orjson vs the standard library on the proxy's typical documents (µs per operation)."""
    samples = {
        "request (~200 B) loads+dumps": p.client_body(p.ROUTES["chat"], stream=True),
        "Anthropic answer (~1 KB) loads+dumps": p.anthropic_json(),
        "large request (~50 KB) loads+dumps": p.client_body(p.ROUTES["messages"], stream=False, large=True),
        "stream event (~150 B) loads+dumps": p.sse("x", p.anthropic_events(10)[3][1])
        .split(b"data: ")[1]
        .strip(),
    }
    rows = []
    rounds = 3 if quick else 5
    for name, raw in samples.items():
        n = 200 if len(raw) > 10_000 else 5000

        def with_orjson(raw: bytes = raw, n: int = n) -> float:
            start = time.perf_counter()
            for _ in range(n):
                orjson.dumps(orjson.loads(raw))
            return (time.perf_counter() - start) / n

        def with_json(raw: bytes = raw, n: int = n) -> float:
            start = time.perf_counter()
            for _ in range(n):
                json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
            return (time.perf_counter() - start) / n

        o, j = _best_of(with_orjson, rounds) * 1e6, _best_of(with_json, rounds) * 1e6
        rows.append({"document": name, "orjson_us": o, "json_us": j, "json_over_orjson": j / o if o else 0.0})
    return rows


def sse_parse_cost() -> float:
    """µs per event for ``ccproxy.sse.SSEParser`` on a 200-event Anthropic stream fed in 20-event reads."""
    frames = p.render(p.anthropic_events(p.STREAM_EVENTS))
    reads = [b"".join(frames[i : i + 20]) for i in range(0, len(frames), 20)]

    def run() -> float:
        start = time.perf_counter()
        for _ in range(20):
            parser = SSEParser()
            for r in reads:
                parser.feed(r)
        return (time.perf_counter() - start) / (20 * len(frames))

    return _best_of(run, 5) * 1e6


# -- HTTP client libraries, side by side ---------------------------------------------------------------


async def _drive(name: str, port: int, conns: int, seconds: float, stream: bool) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/messages"
    body = p.direct_body(p.ROUTES["messages"], stream=stream)
    headers = {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "authorization": "Bearer x",
    }
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    if name == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

        async def one() -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                if stream:
                    async for _ in resp.content.iter_any():
                        pass
                else:
                    await resp.read()
                if resp.status != 200:
                    raise RuntimeError(resp.status)

        async def close() -> None:
            await session.close()
    else:
        import httpx

        limits = httpx.Limits(max_connections=None, max_keepalive_connections=conns * 2)
        hclient = httpx.AsyncClient(limits=limits, timeout=60)

        async def one() -> None:
            if stream:
                async with hclient.stream("POST", url, content=body, headers=headers) as resp:
                    async for _ in resp.aiter_raw():
                        pass
            else:
                resp = await hclient.post(url, content=body, headers=headers)
                await resp.aread()
            if resp.status_code != 200:
                raise RuntimeError(resp.status_code)

        async def close() -> None:
            await hclient.aclose()

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                await one()
            except Exception:
                errors += 1
                continue
            latencies.append((time.perf_counter() - t) * 1000)

    for _ in range(conns):  # warm the pool
        await one()
    latencies.clear()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    wall = time.perf_counter() - start
    await close()
    return {
        "client": name,
        "stream": stream,
        "conns": conns,
        "rps": len(latencies) / wall,
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 99),
        "errors": errors,
    }


def clients_main(port: int, seconds: float, conns: int) -> None:
    from bench.upstream import run_fast

    out = []
    for stream in (False, True):
        for name in ("aiohttp", "httpx"):
            try:
                out.append(run_fast(_drive(name, port, conns, seconds, stream)))
            except ImportError as exc:
                out.append({"client": name, "stream": stream, "conns": conns, "skipped": str(exc)})
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["clients"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--conns", type=int, default=32)
    args = parser.parse_args(argv)
    clients_main(args.port, args.seconds, args.conns)


if __name__ == "__main__":
    main()
