"""Fixtures for the observability tests: the fakes, proxies aimed at them, and a real PostgreSQL server.

``postgres`` starts its own cluster (initdb + pg_ctl) in a temp dir on a free loopback port, once per
session, as the ``postgres`` user when the tests run as root; each test gets a fresh database.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from ccproxy.app import create_app
from ccproxy.config import load_config
from ccproxy.testing import RunningFakes, running_fake_upstreams, serve_app
from ccproxy.testing.fake_oauth import make_unsigned_jwt
from tests.conftest import free_port

CLAUDE_TOKEN = "sk-ant-oat01-observe-test-token-0123456789"
CODEX_TOKEN = make_unsigned_jwt(
    {
        "exp": 4102444800,
        "email": "observe@example.invalid",
        "https://api.openai.com/auth": {"chatgpt_account_id": "acct-observe", "chatgpt_plan_type": "pro"},
    }
)


@pytest.fixture(scope="session")
def fakes() -> Iterator[RunningFakes]:
    with running_fake_upstreams() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_fakes(fakes: RunningFakes) -> Iterator[None]:
    fakes.reset()
    yield
    fakes.reset()


def observe_config(fakes: RunningFakes, **cli: Any) -> Any:
    base: dict[str, Any] = {
        "plugins.claude_api.base_url": fakes.url,
        "plugins.claude_api.access_token": CLAUDE_TOKEN,
        "plugins.codex.enabled": True,
        "plugins.codex.base_url": fakes.codex_url,
        "plugins.codex.access_token": CODEX_TOKEN,
    }
    return load_config(env={"HOME": os.environ["HOME"]}, cli={**base, **cli})


MakeProxy = Callable[..., AbstractContextManager[Any]]


@pytest.fixture
def make_proxy(fakes: RunningFakes) -> MakeProxy:
    """``with make_proxy(**{"dotted.key": value}) as (url, app)``: a proxy aimed at the fakes."""

    @contextmanager
    def start(**cli: Any) -> Iterator[tuple[str, Any]]:
        app = create_app(observe_config(fakes, **cli))
        with serve_app(app) as url:
            yield url, app

    return start


# ------------------------------------------------------------------------------------------ PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import asyncpg

        self.count += 1
        name = f"ledger_{os.getpid()}_{self.count}"

        async def create() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="ccproxy-pg-"))
    data = root / "data"
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "timeout": 120}
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], **run)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"], **run
    )
    try:
        yield PostgresServer(port)
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same ledger tests on the embedded SQLite default and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger' / 'usage.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()
