"""A malformed upstream answer (bad status line, bad chunk size, truncated body, broken compression) is a
clean 502 in the caller's own format, or an in-band error event once a stream has started; a compressed
upstream answer reaches the SDKs decoded."""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from .conftest import CLAUDE_TOKEN, MakeProxy

USER = [{"role": "user", "content": "hello"}]
MESSAGE = (
    b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":'
    b'[{"type":"text","text":"decoded fine"}],"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":3,"output_tokens":2}}'
)
SSE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_JSON = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNKED_SSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


ANSWERS = {
    "bad-status-line": b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "truncated-json": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n"
    + MESSAGE[:40],
    "bad-chunk-size": CHUNKED_JSON + _chunk(MESSAGE[:40]) + b"zz\r\n",
    "broken-gzip": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
    b"content-length: 12\r\n\r\nnot gzip at all"[:-3],
    "stream-bad-chunk": CHUNKED_SSE + _chunk(SSE_START) + b"zz\r\n",
    "stream-truncated": CHUNKED_SSE + _chunk(SSE_START),
    "gzip-json": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
    + b"content-length: %d\r\n\r\n" % len(gzip.compress(MESSAGE))
    + gzip.compress(MESSAGE),
    "close-delimited-json": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
    + MESSAGE,
}


class _Handler(socketserver.BaseRequestHandler):
    """Reads one request head and body, answers with the canned bytes its path names, closes."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                return
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            body += sock.recv(65536)
        path = head.split(b" ")[1].decode()
        case = path.split("/")[1]
        sock.sendall(ANSWERS[case])


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _proxy_for(make_proxy: MakeProxy, raw_upstream: str, case: str):  # type: ignore[no-untyped-def]
    return make_proxy(
        **{
            "plugins.claude_api.base_url": f"{raw_upstream}/{case}",
            "plugins.claude_api.access_token": CLAUDE_TOKEN,
        }
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad-status-line", "invalid answer from upstream claude_api: invalid HTTP"),
        ("not-http", "invalid answer from upstream claude_api: invalid HTTP"),
        ("truncated-json", "answer broke off: upstream closed the connection before the answer was complete"),
        ("bad-chunk-size", "answer broke off: invalid HTTP"),
        ("broken-gzip", "broken compressed body"),
    ],
)
def test_malformed_answer_is_a_502_in_the_callers_format(
    make_proxy: MakeProxy, raw_upstream: str, case: str, message: str
) -> None:
    with _proxy_for(make_proxy, raw_upstream, case) as url:
        claude = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as ainfo:
            claude.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        assert ainfo.value.status_code == 502
        assert ainfo.value.body["type"] == "error"  # type: ignore[index]
        assert message in ainfo.value.body["error"]["message"]  # type: ignore[index]
        chat = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as oinfo:
            chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
        assert oinfo.value.status_code == 502
        assert message in oinfo.value.message


@pytest.mark.parametrize("case", ["stream-bad-chunk", "stream-truncated"])
def test_malformed_stream_ends_with_an_in_band_error(
    make_proxy: MakeProxy, raw_upstream: str, case: str
) -> None:
    body = {"model": "sonnet", "max_tokens": 5, "messages": USER, "stream": True}
    with _proxy_for(make_proxy, raw_upstream, case) as url:
        resp = httpx.post(url + "/api/v1/messages", json=body)
        assert resp.status_code == 200
        assert resp.content.startswith(b"event: message_start\n") and b"msg_1" in resp.content  # passed on
        assert resp.content.endswith(b"\n\n") and b"event: error" in resp.content
        chat = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            list(chat.chat.completions.create(model="sonnet", messages=USER, stream=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ["gzip-json", "close-delimited-json"])
def test_compressed_and_close_delimited_answers_reach_the_sdks(
    make_proxy: MakeProxy, raw_upstream: str, case: str
) -> None:
    with _proxy_for(make_proxy, raw_upstream, case) as url:
        claude = anthropic.Anthropic(base_url=url + "/api", api_key="x", max_retries=0)
        message = claude.messages.create(model="sonnet", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        assert message.content[0].text == "decoded fine"  # type: ignore[union-attr]
        chat = openai.OpenAI(base_url=url + "/api/v1", api_key="x", max_retries=0)
        completion = chat.chat.completions.create(model="sonnet", messages=USER)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "decoded fine"
