"""Shared by the scenario scripts (run by the compat venv's Python, not by pytest).

``python run_<library>.py <proxy base URL> <claude|codex>`` runs every scenario of one library against one
provider and prints one JSON object: scenario name → "ok" or the failure. Prompts carry the fakes' markers
(``CALL: <tool>`` makes the fake call that tool) and per-scenario words the test finds in the upstream's
recorded requests (the previous_response_id chains)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

BASE, PROVIDER = sys.argv[1], sys.argv[2]
CLAUDE = PROVIDER == "claude"
PREFIX = BASE + ("/api" if CLAUDE else "/api/codex")  # Anthropic-style base URL (the SDK adds /v1/...)
OPENAI_BASE = PREFIX + "/v1"  # OpenAI-style base URL
MODEL = "claude-sonnet-4-5" if CLAUDE else "gpt-5.5"
RESULTS: dict[str, str] = {}
TOOL_CALLS: list[Any] = []


def scenario(name: str, *args: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Runs the decorated function at once with ``args`` and records the outcome under ``name``."""

    def run(fn: Callable[..., Any]) -> Callable[..., Any]:
        try:
            fn(*args)
            RESULTS[name] = "ok"
        except BaseException as exc:
            RESULTS[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
        return fn

    return run


def get_weather(city: str) -> str:
    """Weather for a city."""
    TOOL_CALLS.append(city)
    return f"sunny in {city}"


def expect(condition: bool, what: Any) -> None:
    if not condition:
        raise AssertionError(repr(what)[:1500])


def done() -> None:
    print(json.dumps(RESULTS))
