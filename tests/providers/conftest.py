"""Fixtures for the provider acceptance tests: the project's fakes and real proxies on loopback HTTP.

- ``fakes``: one combined fake-upstream server (Anthropic + Codex backend) for the whole directory, wrapped
  so it also records when a client went away mid-response (``fakes.watch``); reset before every test.
- ``oauth``: one fake OAuth server for the whole directory whose state (a fresh ``FakeOAuth``) is swapped
  per test, so the refresh counters always start at zero.
- ``proxy``: one proxy for the directory with static tokens (no credential files involved);
  ``make_proxy(**cli)`` builds a dedicated one (credentials, auth token, retry, unreachable upstream).
- every test runs with HOME, XDG_*, CLAUDE_CONFIG_DIR and CODEX_HOME in a temp dir: the real home is never
  read or written.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import FakeUpstream, RunningFakes, create_fake_upstreams, fake_oauth, serve_app
from ccproxy.testing.fake_oauth import FakeOAuth, make_unsigned_jwt

CLAUDE_TOKEN = "sk-ant-oat01-static-test-token"
CODEX_ACCOUNT = "acct-static-0001"
CODEX_TOKEN = make_unsigned_jwt(
    {
        "exp": 4102444800,
        "email": "static@example.invalid",
        "https://api.openai.com/auth": {"chatgpt_account_id": CODEX_ACCOUNT, "chatgpt_plan_type": "pro"},
    }
)
ENV_VARS = (
    "CLAUDE_SECURESTORAGE_CONFIG_DIR",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CCPROXY_CONFIG",
    "CCPROXY_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
)


HERE = Path(__file__).parent
# The SDKs warn about dated model ids (the fakes' catalog); the warning says nothing about the proxy.
_SDK_MODEL_WARNING = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(_SDK_MODEL_WARNING)


# ------------------------------------------------------------------------------------------ the fakes


@dataclass
class DisconnectWatch:
    """ASGI wrapper around the fake upstreams: when did a client drop a response before it completed?"""

    app: ASGIApp
    disconnects: list[tuple[str, float]] = field(default_factory=list)  # (path, time.monotonic())
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        done = False

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not done:
                with self._lock:
                    self.disconnects.append((path, time.monotonic()))
            return message

        async def watched_send(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True
            await send(message)

        await self.app(scope, watched_receive, watched_send)

    def reset(self) -> None:
        with self._lock:
            self.disconnects.clear()

    def wait_for(self, path_suffix: str, timeout: float = 2.0) -> float | None:
        """The monotonic time the fake saw a client leave ``…path_suffix`` early, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                hits = [t for p, t in self.disconnects if p.endswith(path_suffix)]
            if hits:
                return hits[0]
            time.sleep(0.002)
        return None


@dataclass(frozen=True)
class Fakes(RunningFakes):
    """The combined fakes (``ccproxy.testing.RunningFakes``) behind a watch for early client disconnects."""

    watch: DisconnectWatch

    def reset(self) -> None:
        super().reset()
        self.watch.reset()


@pytest.fixture(scope="session")
def fakes() -> Iterator[Fakes]:
    anthropic, codex = FakeUpstream("anthropic"), FakeUpstream("codex")
    watch = DisconnectWatch(create_fake_upstreams(anthropic, codex))
    with serve_app(watch) as url:
        yield Fakes(url, anthropic, codex, watch)


class _Swappable:
    """An ASGI app delegating to ``current``, so one server can host a fresh fake per test."""

    def __init__(self) -> None:
        self.state = FakeOAuth()
        self.current: ASGIApp = fake_oauth.create_app(self.state)

    def swap(self) -> FakeOAuth:
        self.state = FakeOAuth()
        self.current = fake_oauth.create_app(self.state)
        return self.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.current(scope, receive, send)


@dataclass(frozen=True)
class OAuthServer:
    url: str
    app: _Swappable

    @property
    def state(self) -> FakeOAuth:
        return self.app.state


@pytest.fixture(scope="session")
def _oauth_server() -> Iterator[OAuthServer]:
    app = _Swappable()
    with serve_app(app) as url:
        yield OAuthServer(url, app)


@pytest.fixture
def oauth(_oauth_server: OAuthServer) -> OAuthServer:
    """The fake OAuth server with fresh state (counters at zero, no tokens issued)."""
    _oauth_server.app.swap()
    return _oauth_server


@pytest.fixture(autouse=True)
def _fresh(fakes: Fakes) -> Iterator[None]:
    fakes.reset()
    yield
    fakes.reset()


# --------------------------------------------------------------------------------- isolated home


@dataclass(frozen=True)
class Home:
    root: Path
    claude_dir: Path  # CLAUDE_CONFIG_DIR
    codex_dir: Path  # CODEX_HOME
    data_dir: Path  # XDG_DATA_HOME

    @property
    def claude_credentials(self) -> Path:
        return self.claude_dir / ".credentials.json"

    @property
    def codex_auth(self) -> Path:
        return self.codex_dir / "auth.json"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """Every credential location in a temp dir (the credential sources read os.environ at startup)."""
    root = tmp_path / "home"
    h = Home(root, root / ".claude", root / ".codex", root / ".local" / "share")
    for d in (h.root, h.claude_dir, h.codex_dir, h.data_dir):
        d.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(h.root))
    monkeypatch.setenv("XDG_DATA_HOME", str(h.data_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h.root / ".config"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(h.claude_dir))
    monkeypatch.setenv("CODEX_HOME", str(h.codex_dir))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return h


# -------------------------------------------------------------------------------------- proxies


def proxy_config(fakes: Fakes, tmp: Path, **cli: Any) -> Any:
    """A config aimed at the fakes; ``cli`` holds dotted keys (``plugins.claude_api.retry_attempts``)."""
    base: dict[str, Any] = {
        "plugins.claude_api.base_url": fakes.url,
        "plugins.codex.enabled": True,
        "plugins.codex.base_url": fakes.codex_url,
    }
    # env is explicit and points the user config lookup at an empty temp dir
    return load_config(env={"XDG_CONFIG_HOME": str(tmp), "HOME": str(tmp)}, cli={**base, **cli})


@pytest.fixture(scope="session")
def proxy(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared proxy with static tokens for both providers."""
    config = proxy_config(
        fakes,
        tmp_path_factory.mktemp("proxy-config"),
        **{"plugins.claude_api.access_token": CLAUDE_TOKEN, "plugins.codex.access_token": CODEX_TOKEN},
    )
    with serve_app(create_app(config)) as url:
        yield url


MakeProxy = Callable[..., AbstractContextManager[str]]


@contextmanager
def start_proxy(fakes: Fakes, tmp: Path, **cli: Any) -> Iterator[str]:
    """A proxy aimed at the fakes on a free loopback port; yields its base URL."""
    with serve_app(create_app(proxy_config(fakes, tmp, **cli))) as url:
        yield url


@pytest.fixture
def make_proxy(fakes: Fakes, tmp_path: Path) -> MakeProxy:
    """``with make_proxy(**{"dotted.key": value}) as url``: a dedicated proxy for one test."""

    def start(**cli: Any) -> AbstractContextManager[str]:
        return start_proxy(fakes, tmp_path / "proxy-config", **cli)

    return start


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
