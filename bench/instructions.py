"""CPU instructions per answer, counted by callgrind: the regression check's steady measure.

On a shared VM, wall-clock ratios and even CPU time per request move by 20–40% between identical
back-to-back runs. Instructions executed do not: ccproxy runs under ``valgrind --tool=callgrind`` with
instrumentation switched on only around each scenario, and the same 20 requests cost the same count to
within a fraction of a percent. Timing still runs natively; only this measurement is slowed (~50x).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bench import client
from bench import payloads as p
from bench.procs import HOST, Proc, ccproxy_env, free_port, wait_healthy, which
from ccproxy.plugins import FINISH_WINDOW

REQUESTS = 20  # per scenario, one keep-alive connection, one at a time
# Finished requests reach their observers in a batch up to FINISH_WINDOW later: a count waits for them
# (well below the idle trim's quiet second, which would count a full collection).
_SETTLE = 4 * FINISH_WINDOW
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
    extra_env: Mapping[str, str | None] | None = None,
    client_key: str | None = None,
) -> dict[str, float]:
    """``{name: instructions per answer}`` for each (name, route key, stream) scenario.

    ``extra_env``: a ``None`` value removes the variable; ``client_key``: a key every request carries."""
    valgrind = which("valgrind")
    assert valgrind is not None
    out_dir = Path(home) / "callgrind"
    out_dir.mkdir(exist_ok=True)
    prefix = str(out_dir / "vgdb")
    port = free_port()
    merged: dict[str, str | None] = {
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
    env = {k: v for k, v in merged.items() if v is not None}
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
            headers = p.headers_for(route.client, f"{HOST}:{port}")
            if client_key is not None:  # the client key in place of the SDK's dummy API key
                bearer = f"Bearer {client_key}"
                headers = [
                    (k, client_key if k == "x-api-key" else bearer if k == "Authorization" else v)
                    for k, v in headers
                ]
            raw = p.raw_request(route.path, body, headers)
            raws[name] = raw
            await client.closed_loop(HOST, port, raw, conns=1, duration=0, per_conn=WARMUP, timeout=60)
        await asyncio.to_thread(_control, prefix, proc.pid, "-i", "on")
        pattern = f"{out_dir}/cg.{proc.pid}.*"
        for name, raw in raws.items():
            await asyncio.sleep(_SETTLE)  # the previous requests' observers ran before counting starts
            await asyncio.to_thread(_control, prefix, proc.pid, "-z")
            result = await client.closed_loop(
                HOST, port, raw, conns=1, duration=0, per_conn=REQUESTS, timeout=60
            )
            await asyncio.sleep(_SETTLE)  # ...and these requests' observers inside the count
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


def accounts_home(home: str) -> tuple[dict[str, str | None], str]:
    """A data directory with two named accounts per provider and one client key: the environment for the
    "accounts + keys" scenarios (no static tokens) and the key the requests carry."""
    from ccproxy.keys import KeyFile, create_key
    from ccproxy.testing.fake_oauth import make_unsigned_jwt

    data = Path(home) / "accounts-data"
    root = data / "ccproxy"
    far = 4102444800
    for name in ("a", "b"):
        claude = {
            "claudeAiOauth": {
                "accessToken": f"sk-ant-oat01-bench-{name}",
                "refreshToken": f"sk-ant-ort01-bench-{name}",
                "expiresAt": far * 1000,
                "scopes": ["user:inference"],
                "subscriptionType": "max",
            },
            "account": {"uuid": f"uuid-{name}", "email": None, "organization_uuid": None},
        }
        claims = {"exp": far, "https://api.openai.com/auth": {"chatgpt_account_id": f"acct-{name}"}}
        codex = {
            "tokens": {
                "access_token": make_unsigned_jwt(claims),
                "refresh_token": "rt",
                "account_id": f"acct-{name}",
            }
        }
        for provider, body in (("claude", claude), ("codex", codex)):
            path = root / "accounts" / provider / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body))
            path.chmod(0o600)
    store = KeyFile(root / "keys.json")
    store.path.unlink(missing_ok=True)  # a fresh key each run
    key = create_key(store, "bench")
    env: dict[str, str | None] = {
        "XDG_DATA_HOME": str(data),
        "PLUGINS__CLAUDE_API__ACCESS_TOKEN": None,
        "PLUGINS__CODEX__ACCESS_TOKEN": None,
    }
    return env, key
