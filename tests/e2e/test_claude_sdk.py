"""SDK mode (``/claude``) end to end: the real claude-agent-sdk and its bundled ``claude`` against the fake
Anthropic upstream, driven by the official ``anthropic`` and ``openai`` SDKs and plain HTTP.

The fake records what the CLI sent, so a system prompt or a history "reaching the model" is checked on the
wire. ``RUN: <command>`` in the last user turn makes the fake model call Bash (a tool Claude Code asks
about when it writes a file), which drives the permission tests.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import RunningFakes, running_fake_upstreams, serve_app, tool_output_text

pytest.importorskip(
    "claude_agent_sdk", reason="SDK mode needs claude-agent-sdk (pip install 'ccproxy-api[sdk]')"
)

pytestmark = pytest.mark.e2e
KEY = "sk-ant-api03-ccproxy-e2e-dummy-key-0123456789"
MODEL = "claude-opus-5-5"


def sdk_cli(fakes_url: str, work: Path, **extra: Any) -> dict[str, Any]:
    return {
        "plugins.claude_sdk.base_url": fakes_url,
        "plugins.claude_sdk.api_key": KEY,
        "plugins.claude_sdk.throwaway_home": True,
        "plugins.claude_sdk.cwd": str(work),
        **extra,
    }


@pytest.fixture(scope="module")
def fakes() -> Iterator[RunningFakes]:
    with running_fake_upstreams() as running:
        yield running


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-work")


@pytest.fixture(scope="module")
def proxy(fakes: RunningFakes, work: Path) -> Iterator[str]:
    config = load_config(env={}, cli=sdk_cli(fakes.url, work, **{"permissions.timeout_seconds": 30}))
    with serve_app(create_app(config)) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh(fakes: RunningFakes) -> None:
    fakes.reset()


def model_calls(fakes: RunningFakes) -> list[Any]:
    return [r for r in fakes.anthropic.requests if r.path.endswith("/v1/messages") and r.json]


def wire_text(request: Any) -> str:
    return json.dumps({"system": request.json.get("system"), "messages": request.json.get("messages")})


def claude_pids() -> set[int]:
    """Live ``claude`` processes that are children of this test process."""
    me = os.getpid()
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == me and state != "Z" and b"claude" in cmdline:
            pids.add(int(entry.name))
    return pids


# ------------------------------------------------------------------------------------- formats, prompt


def test_anthropic_sdk_create_carries_system_and_history(fakes: RunningFakes, proxy: str) -> None:
    client = anthropic.Anthropic(base_url=proxy + "/claude", api_key="unused", max_retries=0)
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="SYSTEM-MARKER-7",
        messages=[
            {"role": "user", "content": "first question QQ1"},
            {"role": "assistant", "content": "first answer AA1"},
            {"role": "user", "content": "second question QQ2"},
            {"role": "assistant", "content": "second answer AA2"},
            {"role": "user", "content": "third question QQ3"},
        ],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Fake reply")
    assert message.model == MODEL
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    (call,) = model_calls(fakes)
    text = wire_text(call)
    for marker in ("SYSTEM-MARKER-7", "QQ1", "AA1", "QQ2", "AA2", "QQ3"):
        assert marker in text, marker
    assert text.index("QQ1") < text.index("AA1") < text.index("QQ2") < text.index("AA2") < text.index("QQ3")
    assert call.json["model"] == MODEL


def test_anthropic_sdk_stream_is_token_level(fakes: RunningFakes, proxy: str) -> None:
    client = anthropic.Anthropic(base_url=proxy + "/claude", api_key="unused", max_retries=0)
    fakes.anthropic.reply_text("alpha beta gamma delta epsilon")
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        deltas = [e for e in s if e.type == "content_block_delta"]
        final = s.get_final_message()
    assert final.content[0].text == "alpha beta gamma delta epsilon"
    assert len(deltas) > 1  # the fake streams word by word; every delta is relayed as it comes
    assert final.stop_reason == "end_turn"


def test_openai_sdk_chat_and_responses(fakes: RunningFakes, proxy: str) -> None:
    client = openai.OpenAI(base_url=proxy + "/claude/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "CHAT-SYSTEM-9"},
            {"role": "user", "content": "u1 CQ1"},
            {"role": "assistant", "content": "a1 CA1"},
            {"role": "user", "content": "u2 CQ2"},
        ],
    )
    assert (chat.choices[0].message.content or "").startswith("Fake reply")
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    text = wire_text(model_calls(fakes)[-1])
    assert all(m in text for m in ("CHAT-SYSTEM-9", "CQ1", "CA1", "CQ2"))

    fakes.anthropic.reply_text("streamed chat words here")
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == "streamed chat words here"
    assert len([p for p in pieces if p]) > 1

    response = client.responses.create(model=MODEL, input="responses hello", instructions="INSTR-MARK-3")
    assert response.output_text.startswith("Fake reply")
    assert "INSTR-MARK-3" in wire_text(model_calls(fakes)[-1])

    fakes.anthropic.reply_text("responses streamed text")
    with client.responses.stream(model=MODEL, input="stream responses") as rs:
        events = [e.type for e in rs]
        final = rs.get_final_response()
    assert final.output_text == "responses streamed text"
    assert "response.output_text.delta" in events


@pytest.mark.parametrize(
    "field", ["cwd", "permission_mode", "env", "mcp_servers", "cli_path", "allowed_tools"]
)
def test_server_options_in_a_body_are_refused(fakes: RunningFakes, proxy: str, field: str) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], field: "x"}
    resp = httpx.post(proxy + "/claude/v1/messages", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert f"'{field}'" in resp.json()["error"]["message"]
    chat = httpx.post(proxy + "/claude/v1/chat/completions", json={"model": MODEL, "messages": [], field: 1})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == field
    assert model_calls(fakes) == []  # nothing ran


# ------------------------------------------------------------------------------------------- sessions


def test_session_reuses_one_process_and_handles_edited_history(fakes: RunningFakes, proxy: str) -> None:
    client = anthropic.Anthropic(base_url=proxy + "/claude/sess-a", api_key="unused", max_retries=0)
    history: list[dict[str, Any]] = [{"role": "user", "content": "S-Q1"}]
    first = client.messages.create(model=MODEL, max_tokens=50, messages=history)  # type: ignore[arg-type]
    sessions = httpx.get(proxy + "/claude/sessions").json()["sessions"]
    (info,) = [s for s in sessions if s["id"] == "sess-a"]
    pid = info["pid"]
    history += [{"role": "assistant", "content": first.content[0].text}, {"role": "user", "content": "S-Q2"}]
    client.messages.create(model=MODEL, max_tokens=50, messages=history)  # type: ignore[arg-type]
    (info,) = [s for s in httpx.get(proxy + "/claude/sessions").json()["sessions"] if s["id"] == "sess-a"]
    assert info["pid"] == pid and info["turns"] == 2
    second = model_calls(fakes)[-1]
    text = wire_text(second)
    assert "conversation_history" not in text  # the agent had the history itself: only S-Q2 was sent
    roles = [m["role"] for m in second.json["messages"] if m["role"] != "system"]
    assert roles[:3] == ["user", "assistant", "user"]  # the CLI's own conversation

    edited = [{"role": "user", "content": "S-Q1 edited"}, history[1], {"role": "user", "content": "S-Q3"}]
    client.messages.create(model=MODEL, max_tokens=50, messages=edited)  # type: ignore[arg-type]
    (info,) = [s for s in httpx.get(proxy + "/claude/sessions").json()["sessions"] if s["id"] == "sess-a"]
    assert info["pid"] != pid  # a new conversation...
    text = wire_text(model_calls(fakes)[-1])
    assert "conversation_history" in text and "S-Q1 edited" in text  # ...that carries the history

    assert httpx.delete(proxy + "/claude/sessions/sess-a").status_code == 200
    assert httpx.delete(proxy + "/claude/sessions/sess-a").status_code == 404
    assert all(s["id"] != "sess-a" for s in httpx.get(proxy + "/claude/sessions").json()["sessions"])


def test_session_id_from_header_and_body(fakes: RunningFakes, proxy: str) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "h1"}]}
    assert httpx.post(
        proxy + "/claude/v1/messages", json=body, headers={"x-claude-code-session-id": "hdr-1"}
    ).is_success
    assert httpx.post(proxy + "/claude/v1/messages", json={**body, "session_id": "body-1"}).is_success
    ids = {s["id"] for s in httpx.get(proxy + "/claude/sessions").json()["sessions"]}
    assert {"hdr-1", "body-1"} <= ids
    for sid in ("hdr-1", "body-1"):
        httpx.delete(f"{proxy}/claude/sessions/{sid}")


def test_dead_process_is_replaced_on_the_next_request(fakes: RunningFakes, proxy: str) -> None:
    client = anthropic.Anthropic(base_url=proxy + "/claude/sess-crash", api_key="unused", max_retries=0)
    client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "c1"}])
    (info,) = [s for s in httpx.get(proxy + "/claude/sessions").json()["sessions"] if s["id"] == "sess-crash"]
    os.kill(info["pid"], 9)
    time.sleep(0.5)
    answer = client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "c2"}])
    assert answer.content[0].text.startswith("Fake reply")
    (info2,) = [
        s for s in httpx.get(proxy + "/claude/sessions").json()["sessions"] if s["id"] == "sess-crash"
    ]
    assert info2["pid"] != info["pid"]
    httpx.delete(proxy + "/claude/sessions/sess-crash")


# ---------------------------------------------------------------------------------------- permissions


def _ask_in_background(url: str, prompt: str, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        client = anthropic.Anthropic(base_url=url + "/claude", api_key="unused", max_retries=0, timeout=60)
        out["message"] = client.messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": prompt}]
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_pending(url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = httpx.get(url + "/permissions").json()["pending"]
        if pending:
            return dict(pending[0])
        time.sleep(0.05)
    raise AssertionError("no permission request appeared")


def answer_text(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_permission_allowed_over_rest_runs_the_tool(fakes: RunningFakes, proxy: str, work: Path) -> None:
    marker = work / "allowed.txt"
    out: dict[str, Any] = {}
    thread = _ask_in_background(proxy, f"RUN: touch {marker}", out)
    pending = wait_pending(proxy)
    assert pending["tool_name"] == "Bash" and str(marker) in pending["input"]["command"]
    assert {"id", "tool_name", "input", "created_at"} <= set(pending)
    assert not marker.exists()
    resp = httpx.post(f"{proxy}/permissions/{pending['id']}/respond", json={"allowed": True})
    assert resp.status_code == 200
    thread.join(60)
    assert marker.exists()
    text = answer_text(out["message"])
    assert "[tool call] Bash" in text and tool_output_text("").strip() in text
    again = httpx.post(f"{proxy}/permissions/{pending['id']}/respond", json={"allowed": False})
    assert again.status_code == 409
    assert httpx.post(f"{proxy}/permissions/perm_nope/respond", json={"allowed": True}).status_code == 404
    recent = httpx.get(proxy + "/permissions").json()["recent"]
    assert recent[0]["id"] == pending["id"] and recent[0]["decision"]["allowed"] is True


def test_permission_denied_over_rest(fakes: RunningFakes, proxy: str, work: Path) -> None:
    marker = work / "denied.txt"
    out: dict[str, Any] = {}
    thread = _ask_in_background(proxy, f"RUN: touch {marker}", out)
    pending = wait_pending(proxy)
    bad = httpx.post(f"{proxy}/permissions/{pending['id']}/respond", json={"allowed": "yes"})
    assert bad.status_code == 400 and "allowed" in bad.json()["error"]["message"]
    httpx.post(f"{proxy}/permissions/{pending['id']}/respond", json={"allowed": False, "message": "NOPE-42"})
    thread.join(60)
    assert not marker.exists()
    assert "NOPE-42" in answer_text(out["message"])
    last = model_calls(fakes)[-1]
    results = [
        b
        for m in last.json["messages"]
        for b in (m["content"] if isinstance(m["content"], list) else [])
        if b.get("type") == "tool_result"
    ]
    assert results and results[-1].get("is_error") is True and "NOPE-42" in json.dumps(results[-1])


def test_permission_unanswered_is_denied_at_the_timeout(fakes: RunningFakes, work: Path) -> None:
    marker = work / "timeout.txt"
    cli = sdk_cli(fakes.url, work, **{"permissions.timeout_seconds": 1.5})
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        out: dict[str, Any] = {}
        started = time.monotonic()
        thread = _ask_in_background(url, f"RUN: touch {marker}", out)
        thread.join(60)
        assert time.monotonic() - started >= 1.5
        assert not marker.exists()
        assert "nobody answered" in answer_text(out["message"])
        recent = httpx.get(url + "/permissions").json()["recent"]
        assert recent[0]["decision"]["by"] == "timeout"


def test_permission_stream_announces_requests(fakes: RunningFakes, proxy: str, work: Path) -> None:
    marker = work / "streamed.txt"
    seen: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", proxy + "/permissions/stream", timeout=30) as resp:
            kind = ""
            for line in resp.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    seen.append((kind, json.loads(line[6:])))
                    if kind == "resolved":
                        return

    listeners = [threading.Thread(target=listen) for _ in range(2)]
    for t in listeners:
        t.start()
    ready.wait(10)
    out: dict[str, Any] = {}
    thread = _ask_in_background(proxy, f"RUN: touch {marker}", out)
    pending = wait_pending(proxy)
    httpx.post(f"{proxy}/permissions/{pending['id']}/respond", json={"allowed": True})
    thread.join(60)
    for t in listeners:
        t.join(10)
    kinds = [k for k, data in seen if data["id"] == pending["id"]]
    assert kinds.count("pending") == 2 and kinds.count("resolved") == 2  # two listeners, both told
    assert marker.exists()


# ------------------------------------------------------------------------------------------- failures


def test_disconnects_leave_no_process_and_no_wedged_session(fakes: RunningFakes, work: Path) -> None:
    before = claude_pids()
    cli = sdk_cli(fakes.url, work)
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        body = {
            "model": MODEL,
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "d"}],
        }
        for _ in range(100):
            fakes.anthropic.reply_text("slow " * 50, delay=0.05)
            with httpx.stream("POST", url + "/claude/sess-d/v1/messages", json=body, timeout=30) as resp:
                assert resp.status_code == 200
                next(resp.iter_bytes())  # the answer started; leave mid-stream
        fakes.anthropic.reset()
        client = anthropic.Anthropic(base_url=url + "/claude/sess-d", api_key="unused", max_retries=0)
        answer = client.messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "d"}]
        )
        assert answer.content[0].text.startswith("Fake reply")  # the session still answers
        assert len(claude_pids() - before) == 1
    deadline = time.monotonic() + 10
    while claude_pids() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert claude_pids() - before == set()  # shutdown ended every claude process


def test_hang_before_the_first_event_times_out(work: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        cli = sdk_cli(f"http://127.0.0.1:{silent.getsockname()[1]}", work)
        cli["plugins.claude_sdk.first_event_timeout"] = 3
        with serve_app(create_app(load_config(env={}, cli=cli))) as url:
            client = openai.OpenAI(base_url=url + "/claude/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
            assert info.value.status_code == 504
            assert "within 3 s" in str(info.value)
    finally:
        silent.close()


def test_idle_timeout_mid_stream_is_an_error_in_the_callers_format(fakes: RunningFakes, work: Path) -> None:
    cli = sdk_cli(fakes.url, work, **{"plugins.claude_sdk.idle_timeout": 0.5})
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        fakes.anthropic.reply_text("one two three four", delay=3)
        client = anthropic.Anthropic(base_url=url + "/claude", api_key="unused", max_retries=0)
        with (
            pytest.raises(anthropic.APIStatusError) as info,
            client.messages.stream(
                model=MODEL, max_tokens=9, messages=[{"role": "user", "content": "x"}]
            ) as s,
        ):
            for _ in s:
                pass
        assert "sent nothing for 0.5 s" in str(info.value)


def test_missing_binary_is_a_clear_503(fakes: RunningFakes, work: Path) -> None:
    cli = sdk_cli(fakes.url, work, **{"plugins.claude_sdk.cli_path": str(work / "no-such-claude")})
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        resp = httpx.post(
            url + "/claude/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        )
        assert resp.status_code == 503
        assert "cli_path" in resp.json()["error"]["message"]


def test_not_logged_in_is_a_clear_401(work: Path) -> None:
    cli = {"plugins.claude_sdk.throwaway_home": True, "plugins.claude_sdk.cwd": str(work)}
    config = load_config(env={}, cli=cli)
    env_backup = {
        k: os.environ.pop(k) for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN") if k in os.environ
    }
    try:
        with serve_app(create_app(config)) as url:
            resp = httpx.post(
                url + "/claude/v1/messages",
                json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
                timeout=60,
            )
        assert resp.status_code == 401, resp.text
        assert "claude /login" in resp.json()["error"]["message"]
    finally:
        os.environ.update(env_backup)


def test_offline_mode_covers_sdk_mode(tmp_path: Path) -> None:
    """``ccproxy serve --mock``: the bundled CLI answers from the built-in fake, with a throwaway home."""
    from .helpers import free_port

    port = free_port()
    home = tmp_path / "user-home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CLAUDE_CODE_OAUTH_TOKEN": "users-own-token-must-not-be-used",
    }
    import subprocess
    import sys

    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "ccproxy", "serve", "--mock", "--port", str(port)],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        client = openai.OpenAI(base_url=url + "/claude/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "offline?"}])
        assert (chat.choices[0].message.content or "").startswith("Fake reply")
        assert not (home / ".claude").exists()  # the user's own Claude config was never touched
    finally:
        process.terminate()
        process.wait(20)
    assert "users-own-token" not in log_path.read_text()


def test_busy_session_gets_409_and_lru_eviction(fakes: RunningFakes, work: Path) -> None:
    cli = sdk_cli(
        fakes.url,
        work,
        **{"plugins.claude_sdk.session_wait_seconds": 0, "plugins.claude_sdk.max_sessions": 1},
    )
    with serve_app(create_app(load_config(env={}, cli=cli))) as url:
        fakes.anthropic.reply_text("slow " * 20, delay=0.1)
        body = {
            "model": MODEL,
            "max_tokens": 9,
            "stream": True,
            "messages": [{"role": "user", "content": "b"}],
        }
        with httpx.stream("POST", url + "/claude/busy/v1/messages", json=body, timeout=30) as resp:
            chunks = resp.iter_bytes()  # kept: a dropped iterator would close the response
            next(chunks)
            second = httpx.post(url + "/claude/busy/v1/messages", json={**body, "stream": False}, timeout=30)
            assert second.status_code == 409 and "busy" in second.json()["error"]["message"], second.text
            for _ in chunks:
                pass
        fakes.anthropic.reset()
        other = httpx.post(url + "/claude/other/v1/messages", json={**body, "stream": False}, timeout=30)
        assert other.status_code == 200
        ids = [s["id"] for s in httpx.get(url + "/claude/sessions").json()["sessions"]]
        assert ids == ["other"]  # the least recently used one was evicted


def test_lifecycle_event_has_usage_cost_and_session(fakes: RunningFakes, work: Path) -> None:
    from ccproxy.plugins import RequestEvent, hookimpl, load_plugins

    events: list[RequestEvent] = []

    class Probe:
        @hookimpl
        def ccproxy_request_finished(self, event: RequestEvent) -> None:
            events.append(event)

    config = load_config(env={}, cli=sdk_cli(fakes.url, work))
    plugins = load_plugins(config)
    plugins.hooks.register(Probe(), "probe")
    with serve_app(create_app(config, plugins=plugins)) as url:
        client = openai.OpenAI(base_url=url + "/claude/ev-1/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "usage?"}], stream=True
        )
        for _ in stream:
            pass
    (event,) = [e for e in events if e.plugin == "claude_sdk"]
    assert event.status == 200 and event.session_id == "ev-1"
    assert event.usage is not None and event.usage.input_tokens > 0 and event.usage.output_tokens > 0
    assert event.cost_usd is not None and event.cost_usd > 0


def test_image_reaches_the_model(fakes: RunningFakes, proxy: str) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    client = anthropic.Anthropic(base_url=proxy + "/claude", api_key="unused", max_retries=0)
    client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
    )
    blocks = [
        b
        for m in model_calls(fakes)[-1].json["messages"]
        for b in m["content"]
        if isinstance(m["content"], list)
    ]
    images = [b for b in blocks if b.get("type") == "image"]
    assert images and images[0]["source"]["data"] == png


def test_client_disconnect_ends_its_permission_requests(fakes: RunningFakes, proxy: str, work: Path) -> None:
    marker = work / "left.txt"
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": f"RUN: touch {marker}"}],
    }
    with httpx.stream("POST", proxy + "/claude/v1/messages", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        pending = wait_pending(proxy)
    deadline = time.monotonic() + 10
    while httpx.get(proxy + "/permissions").json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    state = httpx.get(f"{proxy}/permissions/{pending['id']}").json()
    assert state["status"] == "decided" and state["decision"]["by"] == "disconnect"
    assert not marker.exists()
