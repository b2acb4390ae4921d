"""One combined fake-upstream server for the whole directory; every test starts from a reset recorder."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from ccproxy.testing import RunningFakes, running_fake_upstreams

ACCOUNT_ID = "acct-fake-1"


@pytest.fixture(scope="session")
def fakes() -> Iterator[RunningFakes]:
    with running_fake_upstreams() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(fakes: RunningFakes) -> Iterator[None]:
    fakes.reset()
    yield
    fakes.reset()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    # One client for the directory: building an httpx.Client (its SSL context) costs tens of ms.
    with httpx.Client() as client:
        yield client


@pytest.fixture
def claude(fakes: RunningFakes) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fakes.url, api_key="sk-ant-test", max_retries=0)


@pytest.fixture
def codex(fakes: RunningFakes) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=fakes.codex_url,
        api_key="chatgpt-access-token",
        default_headers={"chatgpt-account-id": ACCOUNT_ID},
        max_retries=0,
    )
