"""The upstream client on a user's network: a real forward proxy (tinyproxy, started here), CONNECT tunnels
to a TLS upstream signed by a test CA (trustme), proxy auth, NO_PROXY, CA settings, compressed and
close-delimited bodies, and the OAuth cold path through the same proxy with the same CA."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import brotli
import pytest
import trustme
import zstandard
from typer.testing import CliRunner

from ccproxy.app import create_app
from ccproxy.auth.credential import CredentialError
from ccproxy.auth.oauth import claude_oauth_settings, refresh_access_token
from ccproxy.cli import app as cli_app
from ccproxy.config import ConfigError
from ccproxy.network import (
    ACCEPT_ENCODING,
    NetworkConfigError,
    NoProxy,
    ProxyConfig,
    check_ca_bundle,
    ssl_context,
)
from ccproxy.plugins import load_plugins
from ccproxy.testing import serve_app
from ccproxy.upstream import InvalidAnswer, UpstreamClient, UpstreamError
from tests.conftest import config_for

from .upstream_servers import Handler, Server, _read_request, keep_alive_handler

TINYPROXY = shutil.which("tinyproxy")
needs_tinyproxy = pytest.mark.skipif(
    TINYPROXY is None, reason="tinyproxy is not installed (`apt-get install tinyproxy`; .ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tinyproxy:
    """A tinyproxy instance of our own on a free loopback port, with a temp config and log."""

    def __init__(self, tmp: Path, auth: tuple[str, str] | None = None) -> None:
        assert TINYPROXY is not None
        self.port = _free_port()
        self.log = tmp / "tinyproxy.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 10",
            f'LogFile "{self.log}"',
            "LogLevel Info",
            "MaxClients 50",
            "Allow 127.0.0.1",
        ]
        if auth:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        conf = tmp / "tinyproxy.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start: {conf.read_text()}") from None
                time.sleep(0.05)

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged: proof that a request went through it."""
        if not self.log.exists():
            return []
        marker = "]: Request (file descriptor "
        return [
            line.split("): ", 1)[1].strip()
            for line in self.log.read_text().splitlines()
            if marker in line and "): " in line
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Callable[..., Tinyproxy]]:
    started: list[Tinyproxy] = []

    def start(auth: tuple[str, str] | None = None) -> Tinyproxy:
        proxy = Tinyproxy(tmp_path / f"tinyproxy{len(started)}", auth)
        started.append(proxy)
        return proxy

    for path in (tmp_path / f"tinyproxy{i}" for i in range(4)):
        path.mkdir()
    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


async def _roundtrip(client: UpstreamClient, url: str, body: bytes = b"hello") -> tuple[int, bytes]:
    resp = await client.send("POST", url, {"x-test": "1"}, body)
    data = await resp.read()
    resp.release()
    return resp.status, data


# ------------------------------------------------------------------------------------- forward proxy


async def _tunnel_roundtrips(proxy: Tinyproxy, ca: trustme.CA, ca_file: Path) -> None:
    server = Server()
    await server.start(keep_alive_handler(server), tls=server_tls(ca))
    client = UpstreamClient(
        ca_bundle=str(ca_file), proxies=ProxyConfig.from_env({"HTTPS_PROXY": proxy.url()})
    )
    for _ in range(3):
        assert await _roundtrip(client, server.url + "/v1/messages?beta=true") == (200, b'{"echo": 5}')
    await client.close()
    server.server.close()
    port = server.url.rsplit(":", 1)[1]
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]  # one tunnel, kept alive
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/messages?beta=true HTTP/1.1\r\n")  # origin form inside the tunnel
    assert f"host: 127.0.0.1:{port}" in head and "proxy-authorization" not in head.lower()


@needs_tinyproxy
async def test_https_target_is_tunnelled_with_connect(
    tinyproxy: Callable[..., Tinyproxy], ca: trustme.CA, ca_file: Path
) -> None:
    await _tunnel_roundtrips(tinyproxy(), ca, ca_file)


@needs_tinyproxy
def test_connect_tunnel_on_uvloop(tinyproxy: Callable[..., Tinyproxy], ca: trustme.CA, ca_file: Path) -> None:
    """The server runs on uvloop, whose ``start_tls`` is its own implementation."""
    import uvloop

    uvloop.run(_tunnel_roundtrips(tinyproxy(), ca, ca_file))


@needs_tinyproxy
async def test_http_target_is_sent_in_absolute_form(tinyproxy: Callable[..., Tinyproxy]) -> None:
    server = Server()
    await server.start(keep_alive_handler(server))
    proxy = tinyproxy()
    client = UpstreamClient(proxies=ProxyConfig.from_env({"http_proxy": proxy.url()}))
    assert await _roundtrip(client, server.url + "/v1/x") == (200, b'{"echo": 5}')
    await client.close()
    assert proxy.requests() == [f"POST {server.url}/v1/x HTTP/1.1"]
    assert b"tinyproxy" in server.heads[0].lower()  # its Via header: the request really came through it


@needs_tinyproxy
async def test_proxy_authorization_from_the_proxy_url(
    tinyproxy: Callable[..., Tinyproxy], ca: trustme.CA, ca_file: Path
) -> None:
    tls_server, plain_server = Server(), Server()
    await tls_server.start(keep_alive_handler(tls_server), tls=server_tls(ca))
    await plain_server.start(keep_alive_handler(plain_server))
    proxy = tinyproxy(auth=("ccproxy", "s3cret-pass"))

    def client(credentials: str) -> UpstreamClient:
        url = proxy.url(credentials)
        return UpstreamClient(
            ca_bundle=str(ca_file), proxies=ProxyConfig.from_env({"HTTPS_PROXY": url, "HTTP_PROXY": url})
        )

    good = client("ccproxy:s3cret%2Dpass")  # percent-encoded in the URL, as curl and requests accept
    assert await _roundtrip(good, tls_server.url + "/a") == (200, b'{"echo": 5}')
    assert await _roundtrip(good, plain_server.url + "/b") == (200, b'{"echo": 5}')
    await good.close()
    for credentials in ("", "ccproxy:wrong"):
        bad = client(credentials)
        with pytest.raises(UpstreamError, match=r"40[17] .*check the credentials") as info:
            await bad.send("POST", tls_server.url + "/a", {}, b"")
        assert "s3cret" not in str(info.value) and "wrong" not in str(info.value)
        resp = await bad.send("POST", plain_server.url + "/b", {}, b"")  # the proxy's own answer
        assert resp.status in (401, 407)
        resp.close()
        await bad.close()
    assert tls_server.connections == 1 and plain_server.connections == 1


@needs_tinyproxy
async def test_no_proxy_goes_direct(tinyproxy: Callable[..., Tinyproxy]) -> None:
    server = Server()
    await server.start(keep_alive_handler(server))
    proxy = tinyproxy()
    port = int(server.url.rsplit(":", 1)[1])
    for no_proxy, direct in [
        ("localhost,127.0.0.1", True),
        ("example.com, 127.0.0.0/8", True),
        ("*", True),
        (f"127.0.0.1:{port}", True),
        (f"127.0.0.1:{port + 1}", False),  # another port of the same host: still proxied
        ("example.com", False),
    ]:
        before = len(proxy.requests())
        env = {"HTTP_PROXY": proxy.url(), "NO_PROXY": no_proxy}
        client = UpstreamClient(proxies=ProxyConfig.from_env(env))
        assert await _roundtrip(client, server.url + "/") == (200, b'{"echo": 5}')
        await client.close()
        assert (len(proxy.requests()) == before) is direct, no_proxy


@pytest.mark.parametrize(
    ("rule", "host", "port", "expected"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        (".example.com", "example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("EXAMPLE.com", "Api.Example.COM.", 443, True),
        ("example.com:8443", "example.com", 443, False),
        ("example.com:8443", "example.com", 8443, True),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("192.168.1.5", "192.168.1.5", 80, True),
        ("::1", "::1", 443, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 443, False),
        ("fd00::/8", "fd12::1", 443, True),
        ("*", "anything.example", 1, True),
        ("a.com b.com", "b.com", 1, True),  # whitespace separates too (curl)
        ("", "example.com", 443, False),
    ],
)
def test_no_proxy_rules(rule: str, host: str, port: int, expected: bool) -> None:
    assert NoProxy(rule).matches(host, port) is expected


def test_proxy_variables() -> None:
    env = {
        "https_proxy": "http://lower:1",
        "HTTPS_PROXY": "http://upper:2",
        "ALL_PROXY": "proxy.corp:3128",
        "no_proxy": "internal",
    }
    config = ProxyConfig.from_env(env)
    assert config.for_target("https", "api.anthropic.com", 443) == config.https
    assert config.https is not None and (config.https.host, config.https.port) == ("lower", 1)
    assert config.http is not None and (config.http.host, config.http.port) == ("proxy.corp", 3128)
    assert config.for_target("https", "db.internal", 443) is None
    assert ProxyConfig.from_env({"HTTP_PROXY": "http://h"}).for_target("https", "x", 443) is None
    authed = ProxyConfig.from_env({"HTTPS_PROXY": "http://me:p%40ss@h:8080"}).https
    assert authed is not None and authed.authorization == "Basic bWU6cEBzcw=="  # me:p@ss
    assert "p@ss" not in repr(authed) and authed.url == "http://h:8080"
    assert ProxyConfig.from_env({"HTTP_PROXY": "http://h"}).http.port == 80  # type: ignore[union-attr]
    for bad, message in [
        ({"ALL_PROXY": "socks5://127.0.0.1:1080"}, "ALL_PROXY=socks5://… is a SOCKS proxy"),
        ({"https_proxy": "socks5h://h:1"}, "SOCKS"),
        ({"HTTPS_PROXY": "https://h:443"}, "scheme https:// is not supported"),
        ({"HTTP_PROXY": "http://h:notaport"}, "port is not a number"),
    ]:
        with pytest.raises(NetworkConfigError, match=message):
            ProxyConfig.from_env(bad)


def test_serve_refuses_a_socks_proxy_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    result = CliRunner().invoke(cli_app, ["serve", "--port", str(_free_port())])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("ccproxy: error: ALL_PROXY=socks5://") and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ trusted CAs


async def test_ca_bundle_ssl_cert_file_and_default_trust(
    ca: trustme.CA, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    await server.start(keep_alive_handler(server), tls=server_tls(ca))
    direct = ProxyConfig()
    default = UpstreamClient(proxies=direct)  # the OS store (truststore) or OpenSSL's: no test CA there
    with pytest.raises(UpstreamError, match="certificate verify failed"):
        await default.send("POST", server.url + "/", {}, b"")
    await default.close()
    bundle = UpstreamClient(ca_bundle=str(ca_file), proxies=direct)
    assert await _roundtrip(bundle, server.url + "/") == (200, b'{"echo": 5}')
    await bundle.close()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    from_env = UpstreamClient(proxies=direct)
    assert await _roundtrip(from_env, server.url + "/") == (200, b'{"echo": 5}')
    await from_env.close()
    if shutil.which("openssl"):  # a hashed directory, as SSL_CERT_DIR and a directory ca_bundle expect
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(ca_file, certs / "test-ca.pem")
        subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.setenv("SSL_CERT_DIR", str(certs))
        from_dir = UpstreamClient(proxies=direct)
        assert await _roundtrip(from_dir, server.url + "/") == (200, b'{"echo": 5}')
        await from_dir.close()


def test_missing_ca_files_fail_at_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(NetworkConfigError, match=r"ca_bundle=.*nope\.pem: no such file"):
        check_ca_bundle(missing, {})
    with pytest.raises(NetworkConfigError, match="SSL_CERT_FILE="):
        ssl_context(None, {"SSL_CERT_FILE": missing})
    with pytest.raises((ConfigError, ValueError), match=r"nope\.pem"):
        load_plugins(config_for({"plugins.claude_api.ca_bundle": missing}))


def test_provider_ca_bundle_reaches_the_oauth_settings(ca_file: Path) -> None:
    plugins = load_plugins(config_for({"plugins.claude_api.ca_bundle": str(ca_file)}))
    entry = next(p for p in plugins.plugins if p.name == "claude_api")
    assert entry.ctx is not None
    assert entry.ctx.settings.ca_bundle == str(ca_file)
    assert entry.ctx.settings.oauth.ca_bundle == str(ca_file)


# --------------------------------------------------------------------------- compressed, close-delimited


def _encoders() -> dict[str, Callable[[bytes], bytes]]:
    return {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }


def _answer(headers: bytes, body: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + headers + b"\r\n" + body)
        await writer.drain()

    return handle


async def test_asks_only_for_what_it_can_decode() -> None:
    assert ACCEPT_ENCODING == "gzip, deflate, br, zstd"  # brotli and zstandard are dev dependencies
    server = Server()
    await server.start(keep_alive_handler(server))
    client = UpstreamClient(proxies=ProxyConfig())
    resp = await client.send("POST", server.url + "/", {"accept-encoding": "compress"}, b"x")
    await resp.read()
    resp.release()
    await client.close()
    head = server.heads[0].decode()
    assert "accept-encoding: gzip, deflate, br, zstd\r\n" in head and "compress\r\n" not in head


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "br", "zstd"])
@pytest.mark.parametrize("framing", ["content-length", "close"])
async def test_compressed_bodies_are_decoded(encoding: str, framing: str) -> None:
    payload = b'{"text": "' + b"compressible " * 2000 + b'"}'
    if encoding == "raw-deflate":  # what some servers send as "deflate"
        obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data, encoding = obj.compress(payload) + obj.flush(), "deflate"
    else:
        data = _encoders()[encoding](payload)
    framing_header = b"content-length: %d\r\n" % len(data) if framing == "content-length" else b""
    server = Server()
    await server.start(_answer(b"content-encoding: " + encoding.encode() + b"\r\n" + framing_header, data))
    client = UpstreamClient(proxies=ProxyConfig())
    resp = await client.send("GET", server.url + "/", {})
    assert await resp.read() == payload
    resp.release()
    await client.close()


async def test_compressed_stream_is_decoded_as_it_arrives() -> None:
    gate = asyncio.Event()
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        writer.write(chunk(compressor.compress(b"data: 1\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH)))
        await writer.drain()
        await gate.wait()
        writer.write(chunk(compressor.compress(b"data: 2\n\n") + compressor.flush()) + b"0\r\n\r\n")
        await writer.drain()

    server = Server()
    await server.start(handle)
    client = UpstreamClient(proxies=ProxyConfig())
    resp = await client.send("POST", server.url + "/", {}, b"{}")
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == b"data: 1\n\n"  # decoded before the rest was even sent
    gate.set()
    assert b"".join([c async for c in chunks]) == b"data: 2\n\n"
    resp.release()
    await client.close()


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (b"content-encoding: gzip\r\ncontent-length: 10\r\n", gzip.compress(b"x" * 100)[:10], "cut short"),
        (b"content-encoding: gzip\r\n", gzip.compress(b"x" * 100)[:10], "cut short"),  # close-delimited
        (b"content-encoding: gzip\r\ncontent-length: 9\r\n", b"not gzip!", "broken compressed body"),
        (b"content-encoding: br\r\ncontent-length: 9\r\n", b"not brotl", "broken compressed body"),
        (
            b"content-encoding: deflate\r\ncontent-length: 4\r\n",
            b"\xff\xff\xff\xff",
            "broken compressed body",
        ),
        (b"content-encoding: zstd\r\ncontent-length: 8\r\n", b"not zstd", "broken compressed body"),
        (b"content-encoding: compress\r\ncontent-length: 1\r\n", b"x", "cannot decode"),
    ],
)
async def test_broken_compressed_bodies_are_invalid_answers(
    headers: bytes, body: bytes, message: str
) -> None:
    server = Server()
    await server.start(_answer(headers, body))
    client = UpstreamClient(proxies=ProxyConfig())
    with pytest.raises(InvalidAnswer, match=message):
        resp = await client.send("GET", server.url + "/", {})
        await resp.read()
    await client.close()


# ---------------------------------------------------------------------------------- OAuth cold path


def _token_endpoint(seen: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await _read_request(reader)
        seen.append(head + body)
        payload = b'{"access_token": "at-new", "refresh_token": "rt-new", "expires_in": 3600}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(payload), payload)
        )
        await writer.drain()

    return handle


@needs_tinyproxy
async def test_oauth_refresh_uses_the_proxy_and_the_ca_bundle(
    tinyproxy: Callable[..., Tinyproxy], ca: trustme.CA, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []
    server = Server()
    await server.start(_token_endpoint(seen), tls=server_tls(ca))
    proxy = tinyproxy(auth=("ccproxy", "s3cret"))
    port = server.url.rsplit(":", 1)[1]
    monkeypatch.setenv("HTTPS_PROXY", proxy.url("ccproxy:s3cret"))
    trusted = claude_oauth_settings(token_url=server.url + "/v1/oauth/token", ca_bundle=str(ca_file))
    async with aiohttp.ClientSession() as session:  # a plain session: proxy and CA come from ccproxy
        tokens = await refresh_access_token(session, trusted, "rt-old")
        assert tokens.access_token == "at-new" and b'"refresh_token": "rt-old"' in seen[0]
        assert proxy.requests() == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
        untrusted = claude_oauth_settings(token_url=server.url + "/v1/oauth/token")
        with pytest.raises(CredentialError, match="cannot reach"):
            await refresh_access_token(session, untrusted, "rt-old")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        await refresh_access_token(session, trusted, "rt-old")
    assert len(proxy.requests()) == 2 and len(seen) == 2  # the NO_PROXY call went direct


def test_offline_mode_ignores_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """--mock talks to fakes in this process: a (here dead) proxy from the environment must not apply."""
    import httpx

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")
    port = _free_port()
    body = {"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with serve_app(create_app(config_for({"server.port": port}), mock=True), port=port) as url:
        resp = httpx.post(url + "/api/v1/messages", json=body, trust_env=False)
    assert resp.status_code == 200, resp.text
