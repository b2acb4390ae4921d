"""Issue 10's probe table, socket-level rows, against `ccproxy serve --mock` as a real process: 8 MB header,
100 MB body, control characters, slow headers, an unfinished chunked body, connection shedding,
--auth-token-file with /_mock behind it, and the offline mode's memory under 5,000 requests."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.core.test_serve_process import serve_process

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
JSON = {"content-type": "application/json"}


def serve(*args: str, **env: str) -> AbstractContextManager[tuple[str, subprocess.Popen[str]]]:
    return serve_process("--mock", *args, LOGGING__LEVEL="warning", **env)


@pytest.fixture(scope="module")
def limited() -> Iterator[str]:
    env = {"LIMITS__HEADER_TIMEOUT_SECONDS": "2", "LIMITS__BODY_TIMEOUT_SECONDS": "1"}
    with serve(**env) as (url, _):
        yield url


def connect(url: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one response on a connection the server then closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send until done or until the server, having answered, closes the connection."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def request_head(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "host: 127.0.0.1", *headers]) + "\r\n\r\n").encode()


def test_8mb_header_gets_431_in_json(limited: str) -> None:
    with connect(limited) as sock:
        send_all(sock, b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * (8 << 20) + b"\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    assert "limits.max_header_bytes" in body["error"]["message"]
    too_many = [f"x-h{i}: v" for i in range(200)]
    with connect(limited) as sock:
        send_all(sock, request_head("/api/v1/messages", *too_many, "content-length: 0"))
        status, _, body = read_response(sock)
    assert status == 431 and body["type"] == "error"  # Anthropic envelope: the path is known by then
    assert "limits.max_headers" in body["error"]["message"]


def test_100mb_body_gets_413_in_the_callers_format(limited: str) -> None:
    with connect(limited) as sock:  # refused on its announced length, before a byte of the body is read
        send_all(
            sock,
            request_head("/api/v1/messages", "content-type: application/json", "content-length: 104857600"),
        )
        status, _, body = read_response(sock)
    assert status == 413 and body["type"] == "error" and body["error"]["type"] == "request_too_large"
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    with connect(limited) as sock:  # chunked: no length up front, cut off at the limit while it arrives
        send_all(
            sock,
            request_head(
                "/api/v1/chat/completions", "content-type: application/json", "transfer-encoding: chunked"
            ),
        )
        for _ in range(33):  # just past 32 MiB (what a client sends on after the answer is reset away)
            send_all(sock, chunk)
        status, _, body = read_response(sock)
    assert status == 413 and "33554432-byte limit" in body["error"]["message"]
    assert httpx.get(limited + "/health").status_code == 200


def test_protocol_errors_answer_in_json(limited: str) -> None:
    with connect(limited) as sock:
        send_all(sock, b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-bad: a\x01b\r\n\r\n")
        status, headers, body = read_response(sock)
    assert (
        status == 400
        and headers["content-type"] == "application/json"
        and "malformed" in body["error"]["message"]
    )
    with connect(limited) as sock:
        send_all(sock, b"NOT A REQUEST\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_slow_header_connections_are_cut_off(limited: str) -> None:
    socks = [connect(limited) for _ in range(200)]
    try:
        started = time.monotonic()
        line = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: " + b"a" * 60
        closed: set[int] = set()
        answers: list[bytes] = []
        for byte in line:  # one header byte a second on every connection, as the probe did
            for index, sock in enumerate(socks):
                if index not in closed:
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        closed.add(index)
            time.sleep(1)
            if len(closed) == len(socks) or time.monotonic() - started > 8:
                break
        for sock in socks:
            sock.settimeout(5)
            try:
                answers.append(sock.recv(65536))
            except OSError:
                answers.append(b"")
        assert all(a.startswith(b"HTTP/1.1 408") or a == b"" for a in answers)
        assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) >= 150
        assert time.monotonic() - started < 15
        assert httpx.get(limited + "/health", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_unfinished_chunked_body_times_out(limited: str) -> None:
    with connect(limited) as sock:
        send_all(
            sock,
            request_head("/api/v1/messages", "content-type: application/json", "transfer-encoding: chunked"),
        )
        send_all(sock, b'5\r\n{"mod\r\n')  # and never the rest
        started = time.monotonic()
        status, _, body = read_response(sock)
    assert status == 408 and "limits.body_timeout_seconds" in body["error"]["message"]
    assert time.monotonic() - started < 5


def test_connections_past_the_limit_get_503_while_health_answers() -> None:
    with serve(LIMITS__MAX_CONNECTIONS="3", LIMITS__RETRY_AFTER_SECONDS="2") as (url, _):
        held = [connect(url) for _ in range(3)]
        try:
            time.sleep(0.3)
            shed = httpx.post(url + "/api/v1/chat/completions", json=MESSAGES)
            assert shed.status_code == 503 and shed.headers["retry-after"] == "2"
            assert (
                shed.json()["error"]["type"] == "server_error"
                and "connections" in shed.json()["error"]["message"]
            )
            assert httpx.get(url + "/health").status_code == 200
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 200


def test_token_file_guards_every_route_and_the_fakes(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sk-file-token-0123456789\n")
    token_file.chmod(0o600)
    with serve("--auth-token-file", str(token_file)) as (url, proc):
        assert httpx.post(url + "/api/v1/messages", json=MESSAGES).status_code == 401
        assert httpx.get(url + "/_mock/v1/models", headers={"x-api-key": "k"}).status_code == 401
        # the proxy's own calls to its fakes carry the token
        resp = httpx.post(
            url + "/api/v1/messages", json=MESSAGES, headers={"x-api-key": "sk-file-token-0123456789"}
        )
        assert resp.status_code == 200 and resp.json()["content"][0]["type"] == "text"
        codex = httpx.post(
            url + "/api/codex/v1/responses",
            json={"model": "gpt-5.5", "input": "hi"},
            headers={"authorization": "Bearer sk-file-token-0123456789"},
        )
        assert codex.status_code == 200 and codex.json()["status"] == "completed"
    assert proc.stderr is not None and "warning" not in proc.stderr.read()


def test_token_on_the_command_line_warns(tmp_path: Path) -> None:
    with serve("--auth-token", "sk-cli-token-0123456789") as (url, proc):
        assert httpx.get(url + "/health").status_code == 200
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "visible to every local user in the process list" in err and "--auth-token-file" in err
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccproxy",
            "serve",
            "--auth-token",
            "a",
            "--auth-token-file",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "not both" in result.stderr


@pytest.mark.e2e
def test_mock_memory_stays_bounded_over_5000_requests() -> None:
    def rss_mb(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    prompt = "lorem ipsum " * 700  # ~8 KB: kept forever, 5,000 of these would be ~100 MB of records
    body = {**MESSAGES, "messages": [{"role": "user", "content": prompt}]}
    with serve() as (url, proc), httpx.Client(base_url=url, timeout=30) as client:
        post: Callable[[], httpx.Response] = lambda: client.post("/api/v1/messages", json=body)  # noqa: E731
        for _ in range(1000):  # past the fakes' ring buffer, so it is full before measuring
            assert post().status_code == 200
        before = rss_mb(proc.pid)
        for _ in range(4000):
            assert post().status_code == 200
        after = rss_mb(proc.pid)
    assert after - before < 20, f"RSS grew {before:.0f} -> {after:.0f} MB over 4,000 requests"
