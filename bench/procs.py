"""Processes under test: spawn pinned to a CPU, wait until healthy, read their memory, stop them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import get_status

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent  # the checkout: ``bench`` is a top-level folder, not installed


def bench_module(name: str = "") -> tuple[list[str], dict[str, str]]:
    """argv and env that run ``python -m bench[.<name>]`` from any working directory."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", f"bench.{name}" if name else "bench"], {"PYTHONPATH": path}


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass
class Pinning:
    """Which CPUs the proxy (and nginx) get, and which the upstream and the load generator get."""

    proxy: set[int] | None
    load: set[int] | None
    note: str

    @classmethod
    def plan(cls) -> Pinning:
        available = cpus()
        if len(available) >= 2:
            proxy, load = {available[0]}, set(available[1:])
            return cls(
                proxy,
                load,
                f"proxy/nginx pinned to CPU {available[0]}; upstream and load generator "
                f"on CPU {','.join(map(str, sorted(load)))}",
            )
        return cls(None, None, "only one CPU: nothing pinned, the load generator competes with the proxy")


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ccproxy_command() -> list[str]:
    script = Path(sys.executable).parent / "ccproxy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ccproxy"]


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` (and of its children, for a --workers master) in MB; 0 when gone."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live children (a --workers master's workers) in seconds."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


@dataclass
class Proc:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    cpus: set[int] | None = None
    cwd: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    log_path: str = ""

    def start(self, *, stdout: int | None = subprocess.DEVNULL) -> None:
        env = {**os.environ, **self.env}
        affinity = self.cpus

        def pin() -> None:
            os.setpgrp()
            if affinity:
                os.sched_setaffinity(0, affinity)

        # stderr goes to a file: a pipe nobody reads would stall a chatty process under load
        fd, self.log_path = tempfile.mkstemp(prefix=f"ccproxy-bench-{self.name.split()[0]}-", suffix=".log")
        self.started = time.perf_counter()
        try:
            self.popen = subprocess.Popen(
                list(self.argv), env=env, cwd=self.cwd, stdout=stdout, stderr=fd, preexec_fn=pin
            )
        finally:
            os.close(fd)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stderr_tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or not self.alive():
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)  # its own process group (workers included)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


async def wait_healthy(proc: Proc, port: int, path: str = "/health", timeout: float = 20.0) -> float:
    """Seconds from spawn to the first 200 on ``path``; raises when the process dies or times out."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.stderr_tail()}")
        if await get_status(HOST, port, path, timeout=0.5) == 200:
            return time.perf_counter() - proc.started
        await asyncio.sleep(0.002)
    raise RuntimeError(f"{proc.name} not healthy after {timeout:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def ccproxy_env(upstream_port: int, home: str) -> dict[str, str]:
    from ccproxy.testing.fake_oauth import make_unsigned_jwt

    token = make_unsigned_jwt(
        {
            "exp": 4102444800,
            "email": "bench@example.invalid",
            "https://api.openai.com/auth": {"chatgpt_account_id": "acct-bench", "chatgpt_plan_type": "pro"},
        }
    )
    base = f"http://{HOST}:{upstream_port}"
    return {
        "PLUGINS__CLAUDE_API__BASE_URL": base,
        "PLUGINS__CLAUDE_API__ACCESS_TOKEN": "sk-ant-oat01-bench",
        "PLUGINS__CODEX__ENABLED": "true",
        "PLUGINS__CODEX__BASE_URL": f"{base}/backend-api/codex",
        "PLUGINS__CODEX__ACCESS_TOKEN": token,
        "LOGGING__LEVEL": "warning",
        # isolate from the user's own config and credentials
        "HOME": home,
        "XDG_CONFIG_HOME": f"{home}/config",
        "XDG_DATA_HOME": f"{home}/data",
        "CCPROXY_CONFIG": "",
    }


# ccproxy with the observability plugins that are on by default (metrics, ledger, pricing) switched off
OBSERVE_OFF = {
    "LEDGER__ENABLED": "false",
    "PLUGINS__METRICS__ENABLED": "false",
    "PLUGINS__PRICING__ENABLED": "false",
}


def ccproxy_proc(
    port: int,
    upstream_port: int,
    home: str,
    cpus: set[int] | None,
    workers: int = 1,
    extra_env: Mapping[str, str | None] | None = None,
) -> Proc:
    """``extra_env``: a ``None`` value removes the variable."""
    argv = [*ccproxy_command(), "serve", "--host", HOST, "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    merged = {**ccproxy_env(upstream_port, home), **(extra_env or {})}
    env = {k: v for k, v in merged.items() if v is not None}
    return Proc(f"ccproxy (workers={workers})", argv, env, cpus, cwd=home)


def scratch_dir() -> str:
    return tempfile.mkdtemp(prefix="ccproxy-bench-")
