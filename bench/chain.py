"""What a ``previous_response_id`` chain costs: a chained request against an unchained one of the same size.

``python -m bench.chain`` serves a proxy and the fakes in-process, keeps one response with a history
of ``--items`` items, then alternates two requests that send the upstream the identical body: one naming
the kept response plus one new message, one carrying the whole history itself. Reported: p50 wall time of
each over ``--rounds`` alternations (alternating cancels drift on a busy machine) and the in-process cost of
``ResponseStore.expand`` next to parsing the same history from a request body.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import httpx
import orjson

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.responses_store import ResponseStore, ResponseStoreSettings
from ccproxy.testing import create_fake_upstreams, serve_app
from ccproxy.testing.fake_oauth import make_unsigned_jwt


def _history(items: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(items // 2):
        out.append({"role": "user", "content": f"question {i}: " + "lorem ipsum dolor sit amet " * 8})
        out.append(
            {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{i}",
                "status": "completed",
                "content": [{"type": "output_text", "text": "an answer " * 30, "annotations": []}],
            }
        )
    return out


def micro(items: int, n: int = 2000) -> tuple[float, float]:
    """µs per ``expand`` of a kept history, and µs per parse of a body carrying it (the unchained cost)."""
    store = ResponseStore("bench", ResponseStoreSettings.model_validate({}))
    history = _history(items)
    store.put("resp_kept", history, {"id": "resp_kept", "output": []})
    new = {"role": "user", "content": "and now?"}
    raw = orjson.dumps({"model": "m", "input": [*history, new]})

    async def chained() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await store.expand({"model": "m", "previous_response_id": "resp_kept", "input": [new]})
        return (time.perf_counter() - start) / n * 1e6

    expand_us = asyncio.run(chained())
    start = time.perf_counter()
    for _ in range(n):
        orjson.loads(raw)
    return expand_us, (time.perf_counter() - start) / n * 1e6


def end_to_end(items: int, rounds: int) -> tuple[float, float]:
    token = make_unsigned_jwt({"exp": 4102444800, "https://api.openai.com/auth": {"chatgpt_account_id": "a"}})
    home = tempfile.mkdtemp()
    with serve_app(create_fake_upstreams()) as fakes:
        config = load_config(
            env={"XDG_CONFIG_HOME": home, "HOME": home},
            cli={
                "plugins.codex.enabled": True,
                "plugins.codex.base_url": fakes + "/backend-api/codex",
                "plugins.codex.access_token": token,
                "logging.level": "warning",
            },
        )
        with serve_app(create_app(config)) as url, httpx.Client(base_url=url + "/api/codex/v1") as client:
            history = _history(items)
            first = client.post("/responses", json={"model": "gpt-5.5", "input": history}).json()
            kept = [*history, *first["output"]]
            new = {"role": "user", "content": "and now?"}
            chained = {
                "model": "gpt-5.5",
                "previous_response_id": first["id"],
                "input": [new],
                "store": False,
            }
            full = {"model": "gpt-5.5", "input": [*kept, new], "store": False}
            times: dict[str, list[float]] = {"chained": [], "full": []}
            for _ in range(rounds):
                for name, body in (("chained", chained), ("full", full)):
                    start = time.perf_counter()
                    assert client.post("/responses", json=body).status_code == 200
                    times[name].append(time.perf_counter() - start)
    return statistics.median(times["chained"]) * 1e3, statistics.median(times["full"]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=40, help="history items kept (default 40)")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    expand_us, parse_us = micro(args.items)
    print(
        f"expand of {args.items} kept items: {expand_us:.1f} µs; parsing them from a body: {parse_us:.1f} µs"
    )
    chained_ms, full_ms = end_to_end(args.items, args.rounds)
    print(
        f"p50 over {args.rounds} rounds: chained {chained_ms:.3f} ms, full history {full_ms:.3f} ms, "
        f"added {chained_ms - full_ms:+.3f} ms"
    )


if __name__ == "__main__":
    main()
