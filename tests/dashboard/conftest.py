"""Fixtures for the dashboard tests: the fakes and proxies aimed at them (the observability tests' setup)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ccproxy.testing import RunningFakes, running_fake_upstreams


@pytest.fixture(scope="module")
def fakes() -> Iterator[RunningFakes]:
    with running_fake_upstreams() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    if "fakes" in request.fixturenames:
        running: RunningFakes = request.getfixturevalue("fakes")
        running.reset()
