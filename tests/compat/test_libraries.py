"""Issue 12: every client library just works, through ccproxy, on ``/api`` and ``/api/codex``.

One test per library and provider runs all of that library's scenarios (plain, streamed, tool-calling,
JSON mode, structured output, a previous_response_id chain where the library has one); the row tests below
are the issue's table, each through the libraries named in it."""

from __future__ import annotations

import json

import pytest

from ccproxy.formats.common import JSON_MODE_INSTRUCTION

from .conftest import Compat

pytestmark = pytest.mark.e2e
PROVIDERS = ["claude", "codex"]
_MODELS = ("plain", "streamed", "tools")
SCENARIOS: dict[str, set[str]] = {
    "openai_agents": {f"{m}-{s}" for m in ("chat", "responses") for s in (*_MODELS, "structured")}
    | {"responses-chain"},
    "pydantic_ai": {
        f"{m}-{s}"
        for m in ("anthropic", "chat", "responses")
        for s in (*_MODELS, "structured-tool", "structured-native", "json-mode")
    }
    | {"chat-overloaded-midstream", "responses-overloaded-midstream", "responses-chain"},
    "langchain": {f"{m}-{s}" for m in ("anthropic", "chat", "responses") for s in (*_MODELS, "structured")}
    | {"chat-json-mode", "responses-json-mode", "responses-chain"},
    "litellm": {
        f"{m}-{s}" for m in ("anthropic", "chat") for s in (*_MODELS, "structured", "overloaded-midstream")
    }
    | {"chat-json-mode", "responses-plain", "responses-chain"},
    "instructor": {
        "chat-plain",
        "chat-streamed",
        "chat-structured",
        "chat-json-mode",
        "chat-json-schema",
        "responses-structured",
        "anthropic-structured",
        "anthropic-json-mode",
    },
    "llm": {"chat-plain", "chat-streamed", "chat-tools", "chat-json-mode", "chat-structured"},
}


def expected(library: str, provider: str) -> set[str]:
    names = set(SCENARIOS[library])
    if library == "pydantic_ai" and provider == "codex":
        names.discard("anthropic-structured-native")  # pydantic-ai offers it for Claude model names only
    return names


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("library", list(SCENARIOS))
def test_library(compat: Compat, library: str, provider: str) -> None:
    results = compat.run(library, provider)
    failed = {name: outcome for name, outcome in results.items() if outcome != "ok"}
    assert not failed, "\n\n".join(f"{library} / {provider} / {n}:\n{o}" for n, o in failed.items())
    assert set(results) == expected(library, provider)


# ------------------------------------------------------------------------------------ the table

JSON_MODE = [
    ("instructor", "chat-json-mode"),  # Mode.JSON
    ("langchain", "chat-json-mode"),  # with_structured_output(method="json_mode")
    ("langchain", "responses-json-mode"),
    ("pydantic_ai", "chat-json-mode"),  # PromptedOutput
    ("pydantic_ai", "responses-json-mode"),
    ("litellm", "chat-json-mode"),  # openai/… with response_format
    ("llm", "chat-json-mode"),  # -o json_object 1
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("library", "scenario"), JSON_MODE)
def test_row_json_mode(compat: Compat, library: str, scenario: str, provider: str) -> None:
    compat.check(library, provider, scenario)
    bodies = [b for b in compat.requests[(library, provider)] if isinstance(b, dict)]
    if provider == "claude":  # JSON mode reached Anthropic as the explicit instruction
        assert any(JSON_MODE_INSTRUCTION in json.dumps(b.get("system")) for b in bodies)
    else:  # natively, as text.format json_object
        assert any((b.get("text") or {}).get("format", {}).get("type") == "json_object" for b in bodies)


CHAINS = [
    (
        "openai_agents",
        "agents-chain-one",
        "agents-chain-two",
    ),  # previous_response_id / auto_previous_response_id
    ("langchain", "langchain-chain-one", "langchain-chain-two"),  # use_previous_response_id
    ("pydantic_ai", "pydantic-chain-one", "pydantic-chain-two"),  # openai_previous_response_id="auto"
    ("litellm", "litellm-chain-one", "litellm-chain-two"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("library", "first", "second"), CHAINS)
def test_row_previous_response_id(
    compat: Compat, library: str, first: str, second: str, provider: str
) -> None:
    compat.check(library, provider, "responses-chain")
    compat.chain_reached_upstream(library, provider, first, second)


OVERLOADED = [
    ("pydantic_ai", "chat-overloaded-midstream"),
    ("pydantic_ai", "responses-overloaded-midstream"),
    ("litellm", "chat-overloaded-midstream"),
    ("litellm", "anthropic-overloaded-midstream"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("library", "scenario"), OVERLOADED)
def test_row_overloaded_midstream(compat: Compat, library: str, scenario: str, provider: str) -> None:
    compat.check(library, provider, scenario)
