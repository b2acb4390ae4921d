"""Load generation: ``wrk`` with a Lua body script for request/response scenarios, the asyncio client for
streams (and for request/response scenarios when ``wrk`` is absent)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import client
from bench.procs import HOST

LUA = """\
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Load:
    """One request/response measurement: latencies in ms, throughput in req/s."""

    p50: float
    p99: float
    rps: float
    requests: int
    errors: int
    tool: str


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


class Wrk:
    def __init__(self, binary: str, workdir: str, cpus: set[int] | None) -> None:
        self.binary = binary
        self.dir = Path(workdir) / "wrk"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self._scripts: dict[tuple[bytes, tuple[tuple[str, str], ...]], str] = {}

    def script(self, body: bytes, headers: list[tuple[str, str]]) -> str:
        key = (body, tuple(headers))
        if key not in self._scripts:
            n = len(self._scripts)
            body_path = self.dir / f"body{n}.json"
            body_path.write_bytes(body)
            lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers if k.lower() != "host")
            script = self.dir / f"script{n}.lua"
            script.write_text(LUA.format(body=body_path, headers=lines))
            self._scripts[key] = str(script)
        return self._scripts[key]

    async def run(
        self, port: int, path: str, body: bytes, headers: list[tuple[str, str]], conns: int, seconds: int
    ) -> Load:
        argv = [
            self.binary,
            "-t1",
            f"-c{conns}",
            f"-d{max(1, seconds)}s",
            "--timeout",
            "10s",
            "-s",
            self.script(body, headers),
            f"http://{HOST}:{port}{path}",
        ]
        affinity = self.cpus

        def pin() -> None:
            if affinity:
                os.sched_setaffinity(0, affinity)

        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pin
        )
        out, err = await proc.communicate()
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("BENCHJSON "):
                data = orjson.loads(line[len("BENCHJSON ") :])
                errors = sum(int(data[k]) for k in ("connect", "read", "write", "status", "timeout"))
                secs = data["duration_us"] / 1e6 or 1.0
                return Load(
                    data["p50"] / 1000,
                    data["p99"] / 1000,
                    data["requests"] / secs,
                    data["requests"],
                    errors,
                    "wrk",
                )
        raise RuntimeError(
            f"wrk gave no result: {out.decode(errors='replace')} {err.decode(errors='replace')}"
        )


async def python_load(port: int, raw: bytes, conns: int, seconds: float) -> Load:
    """Fallback request/response load with the asyncio client (slower than wrk; said so in the report)."""
    result = await client.closed_loop(HOST, port, raw, conns=conns, duration=seconds, keep_bodies=False)
    ok = [a for a in result.answers if not a.error and 200 <= a.status < 300]
    totals = [a.total * 1000 for a in ok]
    errors = len(result.answers) - len(ok) + result.connect_errors
    return Load(
        median(totals), percentile(totals, 99), len(ok) / result.wall, len(ok), errors, "asyncio client"
    )
