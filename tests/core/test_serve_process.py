"""`ccproxy serve` as a real process: graceful shutdown with a stream in flight, several workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ccproxy.launch import MARKER, wants_glibc_malloc
from ccproxy.testing import running_fake_upstreams
from tests.conftest import free_port, wait_healthy


def test_sigterm_lets_a_stream_in_flight_finish() -> None:
    with running_fake_upstreams() as fakes:
        words = " ".join(f"w{i}" for i in range(30))
        fakes.anthropic.reply_text(words, delay=0.05)  # about 1.5 s of stream
        port = free_port()
        env = {
            **os.environ,
            "PLUGINS__CLAUDE_API__BASE_URL": fakes.url,
            "PLUGINS__CLAUDE_API__ACCESS_TOKEN": "sk-ant-oat01-test",
            "SERVER__GRACEFUL_SHUTDOWN_SECONDS": "10",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "ccproxy", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            body = {
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            with httpx.stream("POST", url + "/api/v1/messages", json=body, timeout=10) as resp:
                chunks = resp.iter_bytes()
                received = next(chunks)
                proc.send_signal(signal.SIGTERM)  # shutdown starts with the answer half sent
                received += b"".join(chunks)
            assert received.rstrip().endswith(b'data: {"type":"message_stop"}')
            assert b'"w29' in received or b"w29" in received
            # uvicorn re-raises the signal once the graceful shutdown is done: "terminated by SIGTERM"
            assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
            # no new connections once shutting down
            try:
                httpx.get(url + "/health", timeout=0.5)
                raise AssertionError("server still accepting after shutdown")
            except httpx.TransportError:
                pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextmanager
def serve_process(*args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``ccproxy serve ARGS`` on a free port with extra environment; yields its URL once healthy."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccproxy", "serve", "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_several_workers_serve() -> None:
    with serve_process("--workers", "2", "--mock") as (url, _):
        for _ in range(6):
            resp = httpx.post(
                url + "/api/v1/chat/completions",
                timeout=10,
                json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["choices"][0]["message"]["content"]


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.skipif(not wants_glibc_malloc(["ccproxy", "serve"], {}), reason="glibc Linux only")
@pytest.mark.parametrize("preset", [None, "pymalloc"])
def test_serve_runs_on_glibc_malloc_in_the_same_process(preset: str | None) -> None:
    """The re-exec keeps the PID (service managers and signals still reach it); a user's choice wins."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", MARKER)}
    if preset:
        env["PYTHONMALLOC"] = preset
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ccproxy"), "serve", "--port", str(port), "--mock"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert _environ(proc.pid).get("PYTHONMALLOC") == (preset or "malloc")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)


def test_only_serve_is_re_executed() -> None:
    glibc = wants_glibc_malloc(["ccproxy", "serve"], {})
    assert wants_glibc_malloc(["ccproxy", "serve", "--port", "1"], {}) == glibc
    for argv in (
        ["ccproxy"],
        ["ccproxy", "--help"],
        ["ccproxy", "serve", "--help"],
        ["ccproxy", "config", "show"],
    ):
        assert not wants_glibc_malloc(argv, {})
    assert not wants_glibc_malloc(["ccproxy", "serve"], {"PYTHONMALLOC": "pymalloc"})
    assert not wants_glibc_malloc(["ccproxy", "serve"], {MARKER: "malloc"})  # never twice
