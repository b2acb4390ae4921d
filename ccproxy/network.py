"""How ccproxy reaches its upstreams on a user's network: proxies, trusted CAs, compressed bodies.

One place for both HTTP paths: the hot-path client (``ccproxy.upstream``) and the OAuth cold path
(aiohttp, ``ccproxy.auth.oauth``), so a token refresh goes out the same way as the requests it serves.

- Proxies come from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` (lower-case forms
  win, as in curl and requests). Only ``http://`` proxies are supported: https targets are tunnelled with
  ``CONNECT``, http targets are sent in absolute form; credentials in the proxy URL become
  ``Proxy-Authorization: Basic``. A ``socks*://`` or ``https://`` proxy is refused at start with a clear
  error rather than silently bypassed.
- Trusted CAs: a per-provider ``ca_bundle`` (file or directory), else ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``,
  else the OS trust store through ``truststore`` when it is installed, else OpenSSL's default paths.
- Response bodies: we ask only for the encodings we can decode (``gzip``, ``deflate``, ``br`` with
  ``brotli``, ``zstd`` with ``zstandard``) and decode them incrementally, chunk by chunk.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import re
import ssl
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit


class NetworkConfigError(ValueError):
    """A proxy variable or CA setting that cannot work; the message is one line meant for the user."""


# ------------------------------------------------------------------------------------------ proxies


@dataclass(frozen=True, slots=True)
class ProxyServer:
    """An HTTP forward proxy. ``authorization`` is the ``Proxy-Authorization`` value, if any."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (safe to log, and what aiohttp is given)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(variable, value)`` of the lower-case form, else the upper-case one; empty counts as unset."""
    for key in (name.lower(), name.upper()):
        value = environ.get(key, "").strip()
        if value:
            return key, value
    return None


def parse_proxy(variable: str, value: str) -> ProxyServer:
    """``[http://][user:password@]host[:port]``; a missing port is 80 (as in requests)."""
    raw = value if "://" in value else f"http://{value}"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise NetworkConfigError(
            f"{variable}={parts.scheme}://… is a SOCKS proxy, which ccproxy does not support; "
            "use an HTTP proxy (http://host:port), or unset it"
        )
    if scheme != "http":
        raise NetworkConfigError(
            f"{variable}: proxy scheme {parts.scheme}:// is not supported; use http://host:port "
            "(https targets are tunnelled through it with CONNECT)"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise NetworkConfigError(f"{variable}: the proxy port is not a number") from None
    if not parts.hostname:
        raise NetworkConfigError(f"{variable}: no proxy host in the URL")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return ProxyServer(parts.hostname, port, authorization)


class NoProxy:
    """``NO_PROXY`` as curl and requests read it: ``*``; host names, which also match their subdomains
    (a leading ``.`` or ``*.`` is optional); IP addresses and CIDR ranges; any of them with ``:port``."""

    def __init__(self, value: str) -> None:
        self.everything = False
        self.names: list[tuple[str, int | None]] = []
        self.networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        for token in re.split(r"[\s,]+", value.strip()):
            if token == "*":
                self.everything = True
            elif token:
                self._add(token)

    def _add(self, token: str) -> None:
        host, port = token, None
        if token.startswith("["):  # [v6]:port
            host, _, rest = token[1:].partition("]")
            port = _port(rest[1:]) if rest.startswith(":") else None
        elif token.count(":") == 1:
            name, _, number = token.partition(":")
            host, port = name, _port(number)
        try:
            self.networks.append((ipaddress.ip_network(host, strict=False), port))
        except ValueError:
            name = host.lower().rstrip(".").removeprefix("*").lstrip(".")
            if name:
                self.names.append((name, port))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            name = host.lower().rstrip(".")
            return any((name == n or name.endswith("." + n)) and p in (None, port) for n, p in self.names)
        return any(address in net and p in (None, port) for net, p in self.networks)


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class ProxyConfig:
    """Which proxy (if any) to use for a target, from the environment read once at start."""

    def __init__(
        self, http: ProxyServer | None = None, https: ProxyServer | None = None, no_proxy: str = ""
    ) -> None:
        self.http = http
        self.https = https
        self.no_proxy = NoProxy(no_proxy)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProxyConfig:
        env = os.environ if environ is None else environ
        found_all = _env(env, "all_proxy")
        servers: list[ProxyServer | None] = []
        for name in ("http_proxy", "https_proxy"):
            found = _env(env, name) or found_all
            servers.append(parse_proxy(*found) if found else None)
        no_proxy = _env(env, "no_proxy")
        return cls(servers[0], servers[1], no_proxy[1] if no_proxy else "")

    @property
    def enabled(self) -> bool:
        return self.http is not None or self.https is not None

    def for_target(self, scheme: str, host: str, port: int) -> ProxyServer | None:
        server = self.https if scheme == "https" else self.http
        if server is None or self.no_proxy.matches(host, port):
            return None
        return server

    def for_url(self, url: str) -> ProxyServer | None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return self.for_target(scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))


# ------------------------------------------------------------------------------------- trusted CAs


def check_ca_bundle(ca_bundle: str | None, environ: Mapping[str, str] | None = None) -> None:
    """Fail at start, with the setting's name, when a configured CA file or directory is missing."""
    env = os.environ if environ is None else environ
    for name, path in (
        ("ca_bundle", ca_bundle),
        ("SSL_CERT_FILE", env.get("SSL_CERT_FILE")),
        ("SSL_CERT_DIR", env.get("SSL_CERT_DIR")),
    ):
        if path and not os.path.exists(path):
            raise NetworkConfigError(f"{name}={path}: no such file or directory")


def ssl_context(ca_bundle: str | None = None, environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The client TLS context for upstream connections (see the module doc for the order)."""
    env = os.environ if environ is None else environ
    return _ssl_context(ca_bundle, env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None)


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_bundle: str | None, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    check_ca_bundle(ca_bundle, {"SSL_CERT_FILE": cert_file or "", "SSL_CERT_DIR": cert_dir or ""})
    try:
        if ca_bundle:
            if os.path.isdir(ca_bundle):
                return ssl.create_default_context(capath=ca_bundle)
            return ssl.create_default_context(cafile=ca_bundle)
        if cert_file or cert_dir:
            return ssl.create_default_context(cafile=cert_file, capath=cert_dir)
    except ssl.SSLError as exc:
        source = ca_bundle or cert_file or cert_dir
        raise NetworkConfigError(f"cannot load CA certificates from {source}: {exc}") from None
    try:
        import truststore
    except ImportError:
        return ssl.create_default_context()
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


# ------------------------------------------------------------------------------- content encodings


class Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def end(self) -> bytes:
        """What is left; raises ``ValueError`` when the compressed stream was cut short."""
        ...


class _Zlib:
    __slots__ = ("_maybe_raw", "_obj")

    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)
        # "deflate" is zlib-wrapped by the RFC, raw deflate from some servers: the first bytes tell.
        self._maybe_raw = wbits == zlib.MAX_WBITS

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._obj.decompress(data)
        except zlib.error:
            if not self._maybe_raw:
                raise ValueError("invalid compressed data") from None
            self._maybe_raw = False
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data)
        if len(data) >= 2:  # the zlib header was seen and accepted
            self._maybe_raw = False
        return out

    def end(self) -> bytes:
        rest = self._obj.flush()
        if not self._obj.eof:
            raise ValueError("compressed body cut short")
        return rest


class _Library:
    """A decompressor from a library (brotli, zstandard): its step function and its end test."""

    __slots__ = ("_finished", "_name", "_step")

    def __init__(self, name: str, step: Callable[[bytes], bytes], finished: Callable[[], bool]) -> None:
        self._name, self._step, self._finished = name, step, finished

    def feed(self, data: bytes) -> bytes:
        try:
            return self._step(data)
        except Exception as exc:  # brotli.error, zstandard.ZstdError
            raise ValueError(f"invalid {self._name} data") from exc

    def end(self) -> bytes:
        if not self._finished():
            raise ValueError("compressed body cut short")
        return b""


def _brotli() -> Decoder:
    import brotli

    obj = brotli.Decompressor()
    return _Library("brotli", obj.process, obj.is_finished)


def _zstd() -> Decoder:
    import zstandard

    obj = zstandard.ZstdDecompressor().decompressobj()
    return _Library("zstd", obj.decompress, lambda: bool(obj.eof))


class _Chain:
    """``Content-Encoding: a, b`` (applied in that order): undone in reverse."""

    __slots__ = ("_decoders",)

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def feed(self, data: bytes) -> bytes:
        for decoder in self._decoders:
            data = decoder.feed(data)
        return data

    def end(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = decoder.feed(data) + decoder.end() if data else decoder.end()
        return data


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


_FACTORIES: dict[str, Any] = {
    "gzip": lambda: _Zlib(16 + zlib.MAX_WBITS),
    "x-gzip": lambda: _Zlib(16 + zlib.MAX_WBITS),
    "deflate": lambda: _Zlib(zlib.MAX_WBITS),
}
if _has("brotli"):
    _FACTORIES["br"] = _brotli
if _has("zstandard"):
    _FACTORIES["zstd"] = _zstd

# What the upstream client asks for: exactly what it can decode.
ACCEPT_ENCODING = ", ".join(name for name in _FACTORIES if name != "x-gzip")


def decoder_for(content_encoding: str) -> Decoder | None:
    """The decoder for a ``Content-Encoding`` value; None for identity. ``ValueError`` if unknown."""
    names = [n.strip().lower() for n in content_encoding.split(",")]
    names = [n for n in names if n and n != "identity"]
    if not names:
        return None
    decoders: list[Decoder] = []
    for name in reversed(names):
        factory = _FACTORIES.get(name)
        if factory is None:
            raise ValueError(f"upstream used content-encoding {name!r}, which ccproxy cannot decode")
        decoders.append(factory())
    return decoders[0] if len(decoders) == 1 else _Chain(decoders)
