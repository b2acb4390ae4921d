"""litellm: ``openai/…`` (Chat Completions), ``anthropic/…`` (Messages) and ``litellm.responses``."""

from __future__ import annotations

import json
from typing import Any

import litellm
from _common import MODEL, OPENAI_BASE, PREFIX, done, expect, scenario
from pydantic import BaseModel

litellm.telemetry = False
litellm.num_retries = 0
ROUTES = {"chat": (f"openai/{MODEL}", OPENAI_BASE), "anthropic": (f"anthropic/{MODEL}", PREFIX)}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class City(BaseModel):
    name: str
    population: int


def complete(kind: str, prompt: str, **extra: Any) -> Any:
    model, base = ROUTES[kind]
    return litellm.completion(
        model=model, api_base=base, api_key="x", messages=[{"role": "user", "content": prompt}], **extra
    )


for kind in ("chat", "anthropic"):

    @scenario(f"{kind}-plain", kind)
    def _(kind: str) -> None:
        out = complete(kind, "Say hello").choices[0].message.content
        expect("Fake reply" in out, out)

    @scenario(f"{kind}-streamed", kind)
    def _(kind: str) -> None:
        pieces = [c.choices[0].delta.content or "" for c in complete(kind, "Stream hello", stream=True)]
        expect("Fake reply" in "".join(pieces), pieces)

    @scenario(f"{kind}-tools", kind)
    def _(kind: str) -> None:
        message = complete(kind, "CALL: get_weather please", tools=TOOLS).choices[0].message
        call = message.tool_calls[0]
        expect(
            call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "text"},
            call,
        )

    @scenario(f"{kind}-structured", kind)
    def _(kind: str) -> None:
        out = complete(kind, "Name a city", response_format=City).choices[0].message.content
        expect(City.model_validate_json(out) == City(name="text", population=1), out)

    if kind == "chat":  # JSON mode is an OpenAI-route feature (toward Anthropic it is litellm's own)

        @scenario(f"{kind}-json-mode", kind)
        def _(kind: str) -> None:
            prompt = f"Name a city. Answer in JSON per this schema: {json.dumps(City.model_json_schema())}"
            out = complete(kind, prompt, response_format={"type": "json_object"}).choices[0].message.content
            expect(City.model_validate_json(out) == City(name="text", population=1), out)

    @scenario(f"{kind}-overloaded-midstream", kind)
    def _(kind: str) -> None:
        try:
            for _chunk in complete(kind, "FAIL: overloaded", stream=True):
                pass
        except Exception as exc:
            # The same failure, whichever upstream: litellm raises the same exception on both providers.
            wanted = "APIConnectionError" if kind == "chat" else "InternalServerError"
            text = str(exc)
            expect(
                type(exc).__name__ == "MidStreamFallbackError" and wanted in text and "Overloaded" in text,
                text,
            )
            return
        raise AssertionError("no error raised")


@scenario("responses-plain")
def _() -> None:
    out = litellm.responses(model=f"openai/{MODEL}", api_base=OPENAI_BASE, api_key="x", input="Say hello")
    expect("Fake reply" in out.output[-1].content[0].text, out)


@scenario("responses-chain")
def _() -> None:
    args = {"model": f"openai/{MODEL}", "api_base": OPENAI_BASE, "api_key": "x"}
    first = litellm.responses(input="litellm-chain-one", **args)
    second = litellm.responses(input="litellm-chain-two", previous_response_id=first.id, **args)
    expect("litellm-chain-two" in second.output[-1].content[0].text, second)


done()
