"""SDK-mode rows of ``make bench``: what ``/claude`` adds on top of ``claude-agent-sdk`` itself.

    python -m bench.sdk [--turns N] [--json FILE]

The fake Anthropic upstream and ``ccproxy serve`` run as their own processes; this process is the client.
Rows (medians over ``--turns``):

- warm session: time to the first text token and to the end of the answer, through
  ``/claude/{session}/v1/messages`` (streaming, the whole history sent each time, as a client does) versus
  the same turns on one connected ``ClaudeSDKClient``; the difference is what ccproxy adds;
- cold start: the first token of a one-shot request (a new ``claude`` process) versus ``connect()`` plus the
  first token directly.

Targets (issue 13): a warm session adds at most 20 ms to the first token; a cold one adds no more than the
CLI's own start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

MODEL = "claude-opus-5-5"
COLD_RUNS = 5
KEY = "sk-ant-api03-ccproxy-bench-dummy-key-000000"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def _agent_env(base_url: str, home: Path) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": KEY,
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


async def _measure(fake: str, proxy: str, work: Path, turns: int) -> dict[str, Any]:
    """Direct and proxied turns interleaved, so load on a shared machine hits both alike."""
    from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, StreamEvent

    home = Path(tempfile.mkdtemp(prefix="bench-sdk-home-"))
    options = ClaudeAgentOptions(
        env=_agent_env(fake, home),
        cwd=str(work),
        include_partial_messages=True,
        system_prompt={"type": "preset", "preset": "claude_code"},
        model=MODEL,
    )
    # One client for every request: building one costs ~40 ms (its TLS context).
    http = httpx.AsyncClient(base_url=proxy, timeout=120)

    async def direct(client: Any, text: str, started: float | None = None) -> tuple[float, float]:
        started = time.perf_counter() if started is None else started
        first = 0.0
        await client.query(text)
        async for message in client.receive_response():
            delta = message.event.get("delta") or {} if isinstance(message, StreamEvent) else {}
            if not first and delta.get("type") == "text_delta":
                first = time.perf_counter() - started
            if isinstance(message, ResultMessage):
                break
        return first, time.perf_counter() - started

    async def proxied(path: str, messages: list[dict[str, Any]]) -> tuple[float, float, str]:
        body = {"model": MODEL, "max_tokens": 200, "stream": True, "messages": messages}
        started = time.perf_counter()
        first = 0.0
        text = ""
        async with http.stream("POST", path, json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and '"text_delta"' in line:
                    if not first:
                        first = time.perf_counter() - started
                    text += orjson.loads(line[6:])["delta"]["text"]
        return first, time.perf_counter() - started, text

    out: dict[str, Any] = {k: {"ttft": [], "total": [], "cold": []} for k in ("direct", "proxy")}
    for _ in range(COLD_RUNS):  # a new claude process each: ccproxy's one-shot vs connect() + query()
        cold_started = time.perf_counter()
        client = ClaudeSDKClient(options)
        await client.connect()
        out["direct"]["cold"].append((await direct(client, "cold question", cold_started))[0])
        await client.disconnect()
        ttft, _, _ = await proxied("/claude/v1/messages", [{"role": "user", "content": "cold question"}])
        out["proxy"]["cold"].append(ttft)
    client = ClaudeSDKClient(options)
    await client.connect()
    history: list[dict[str, Any]] = []
    for i in range(turns + 1):
        history.append({"role": "user", "content": f"warm question {i}"})
        f, t, text = await proxied("/claude/bench/v1/messages", history)
        history.append({"role": "assistant", "content": text})
        if not i:
            continue  # the first proxied turn starts the session's process
        out["proxy"]["ttft"].append(f)
        out["proxy"]["total"].append(t)
        f, t = await direct(client, f"warm question {i}")
        out["direct"]["ttft"].append(f)
        out["direct"]["total"].append(t)
    await client.disconnect()
    await http.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk", description=__doc__)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("bench/latest-sdk.json"))
    args = parser.parse_args(argv)
    try:
        import claude_agent_sdk  # noqa: F401
    except ImportError:
        print("SDK rows skipped: claude-agent-sdk is not installed (pip install 'ccproxy-api[sdk]')")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-sdk-work-"))
    fake_port, proxy_port = _port(), _port()
    fake_url, proxy_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{proxy_port}"
    env = {
        **os.environ,
        "PLUGINS__CLAUDE_SDK__BASE_URL": fake_url,
        "PLUGINS__CLAUDE_SDK__API_KEY": KEY,
        "PLUGINS__CLAUDE_SDK__THROWAWAY_HOME": "true",
        "PLUGINS__CLAUDE_SDK__CWD": str(work),
        "LOGGING__LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "ccproxy"]
    quiet = subprocess.DEVNULL
    fake = subprocess.Popen(
        [*cmd, "dev", "fake-upstream", "--port", str(fake_port)], stdout=quiet, stderr=quiet
    )
    proxy = subprocess.Popen(
        [*cmd, "serve", "--port", str(proxy_port)], env=env, cwd=work, stdout=quiet, stderr=quiet
    )
    try:
        _wait(fake_url + "/v1/models", fake)
        _wait(proxy_url + "/health", proxy)
        measured = asyncio.run(_measure(fake_url, proxy_url, work, args.turns))
        direct, via = measured["direct"], measured["proxy"]
    finally:
        for proc in (proxy, fake):
            proc.terminate()
            proc.wait(30)
    med = statistics.median
    rows = {
        "warm_ttft_direct_ms": med(direct["ttft"]) * 1000,
        "warm_ttft_proxy_ms": med(via["ttft"]) * 1000,
        "warm_total_direct_ms": med(direct["total"]) * 1000,
        "warm_total_proxy_ms": med(via["total"]) * 1000,
        "cold_ttft_direct_ms": med(direct["cold"]) * 1000,
        "cold_ttft_proxy_ms": med(via["cold"]) * 1000,
    }
    rows["warm_ttft_added_ms"] = rows["warm_ttft_proxy_ms"] - rows["warm_ttft_direct_ms"]
    rows["warm_total_added_ms"] = rows["warm_total_proxy_ms"] - rows["warm_total_direct_ms"]
    rows["cold_ttft_added_ms"] = rows["cold_ttft_proxy_ms"] - rows["cold_ttft_direct_ms"]
    print(f"SDK mode (medians of {args.turns} warm turns and {COLD_RUNS} cold starts)")
    print(f"{'row':<28}{'direct':>10}{'ccproxy':>10}{'added':>10}")
    for name, key in (("warm: first token (ms)", "warm_ttft"), ("warm: whole answer (ms)", "warm_total")):
        d, p = rows[f"{key}_direct_ms"], rows[f"{key}_proxy_ms"]
        print(f"{name:<28}{d:>10.1f}{p:>10.1f}{p - d:>10.1f}")
    d, p = rows["cold_ttft_direct_ms"], rows["cold_ttft_proxy_ms"]
    print(f"{'cold: first token (ms)':<28}{d:>10.1f}{p:>10.1f}{p - d:>10.1f}")
    target = rows["warm_ttft_added_ms"] <= 20
    print(f"target warm first-token added <= 20 ms: {'met' if target else 'MISSED'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(
        orjson.dumps({"rows": rows, "raw": {"direct": direct, "proxy": via}}, option=orjson.OPT_INDENT_2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
