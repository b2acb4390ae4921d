"""Fixtures for the dashboard tests: the fakes, shared with the end-to-end tests."""

from tests.e2e.conftest import _fresh_fakes, fakes

__all__ = ["_fresh_fakes", "fakes"]
