"""CPU instructions per answer, counted by callgrind: the regression check's steady measure.

On a shared VM, wall-clock ratios and even CPU time per request move by 20–40% between identical
back-to-back runs. Instructions executed do not: ccproxy runs under ``valgrind --tool=callgrind`` with
instrumentation switched on only around each scenario, and the same 20 requests cost the same count to
within a fraction of a percent. Timing still runs natively; only this measurement is slowed (~50x).
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import sys
from pathlib import Path

from bench import client
from bench import payloads as p
from bench.procs import HOST, Proc, ccproxy_env, free_port, wait_healthy, which

REQUESTS = 20  # per scenario, one keep-alive connection, one at a time
WARMUP = 5


def available() -> bool:
    return which("valgrind") is not None and which("callgrind_control") is not None


def _control(prefix: str, pid: int, *args: str) -> None:
    # Aimed at our own process only, through its own vgdb prefix: a callgrind_control without a pid (or
    # without the prefix) zeroes and dumps every callgrind run on the machine, so two benchmarks on a
    # shared machine would corrupt each other's counts.
    control = which("callgrind_control")
    assert control is not None
    subprocess.run(
        [control, f"--vgdb-prefix={prefix}", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _latest_total(pattern: str) -> int:
    dumps = [f for f in glob.glob(pattern) if f.rsplit(".", 1)[-1].isdigit()]
    newest = max(dumps, key=lambda f: int(f.rsplit(".", 1)[-1]))
    for line in Path(newest).read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {newest}")


async def count(
    upstream_port: int,
    home: str,
    scenarios: list[tuple[str, str, bool]],
    extra_env: dict[str, str] | None = None,
) -> dict[str, float]:
    """``{name: instructions per answer}`` for each (name, route key, stream) scenario."""
    valgrind = which("valgrind")
    assert valgrind is not None
    out_dir = Path(home) / "callgrind"
    out_dir.mkdir(exist_ok=True)
    prefix = str(out_dir / "vgdb")
    port = free_port()
    env = {
        **ccproxy_env(upstream_port, home),
        "PYTHONHASHSEED": "0",  # the same dict layouts, run after run
        "PYTHONMALLOC": "malloc",  # what `ccproxy serve` re-executes itself with (ccproxy/launch.py)
        "CCPROXY_ALLOCATOR": "malloc",
        # No ledger writes while counting: a batch written from a worker thread in some windows and not
        # others moves the counts by ~20% and splits callgrind's dumps. Rows wait for shutdown here;
        # the timed runs (make bench) include the writes.
        "LEDGER__FLUSH_SECONDS": "60",
        **(extra_env or {}),
    }
    argv = [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--vgdb-prefix={prefix}",
        f"--callgrind-out-file={out_dir}/cg.%p",
        sys.executable,
        "-m",
        "ccproxy",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    proc = Proc("ccproxy (callgrind)", argv, env, None, cwd=home)
    proc.start()
    results: dict[str, float] = {}
    try:
        await wait_healthy(proc, port, timeout=120)
        raws = {}
        for name, key, stream in scenarios:
            route = p.ROUTES[key]
            body = p.client_body(route, stream=stream, marker=p.LONG if stream else "", large=False)
            raw = p.raw_request(route.path, body, p.headers_for(route.client, f"{HOST}:{port}"))
            raws[name] = raw
            await client.closed_loop(HOST, port, raw, conns=1, duration=0, per_conn=WARMUP, timeout=60)
        await asyncio.to_thread(_control, prefix, proc.pid, "-i", "on")
        pattern = f"{out_dir}/cg.{proc.pid}.*"
        for name, raw in raws.items():
            await asyncio.to_thread(_control, prefix, proc.pid, "-z")
            result = await client.closed_loop(
                HOST, port, raw, conns=1, duration=0, per_conn=REQUESTS, timeout=60
            )
            await asyncio.to_thread(_control, prefix, proc.pid, "-d")
            failed = [a for a in result.answers if a.error or a.status != 200]
            if failed:
                raise RuntimeError(f"{name}: {failed[0].error or failed[0].status}")
            total = await asyncio.to_thread(_latest_total, pattern)
            results[name] = total / REQUESTS
    finally:
        proc.stop()
        for leftover in glob.glob(f"{out_dir}/cg.*"):
            os.unlink(leftover)
    return results
