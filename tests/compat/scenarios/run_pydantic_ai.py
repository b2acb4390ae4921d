"""pydantic-ai: Anthropic, OpenAI chat and OpenAI Responses models."""

from __future__ import annotations

import asyncio
from typing import Any

from _common import CLAUDE, MODEL, OPENAI_BASE, PREFIX, TOOL_CALLS, done, expect, get_weather, scenario
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput, PromptedOutput, ToolOutput
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel, OpenAIResponsesModelSettings
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider


class City(BaseModel):
    name: str
    population: int


CITY = City(name="text", population=1)


def make(kind: str) -> Any:
    if kind == "anthropic":
        return AnthropicModel(MODEL, provider=AnthropicProvider(base_url=PREFIX, api_key="x"))
    provider = OpenAIProvider(base_url=OPENAI_BASE, api_key="x")
    return (
        OpenAIChatModel(MODEL, provider=provider)
        if kind == "chat"
        else OpenAIResponsesModel(MODEL, provider=provider)
    )


for kind in ("anthropic", "chat", "responses"):

    @scenario(f"{kind}-plain", kind)
    def _(kind: str) -> None:
        out = Agent(make(kind)).run_sync("Say hello").output
        expect("Fake reply" in out, out)

    @scenario(f"{kind}-streamed", kind)
    def _(kind: str) -> None:
        async def go() -> str:
            async with Agent(make(kind)).run_stream("Stream hello") as run:
                return "".join([piece async for piece in run.stream_text(delta=True)])

        out = asyncio.run(go())
        expect("Fake reply" in out, out)

    @scenario(f"{kind}-tools", kind)
    def _(kind: str) -> None:
        TOOL_CALLS.clear()
        out = Agent(make(kind), tools=[get_weather]).run_sync("CALL: get_weather please").output
        expect(TOOL_CALLS == ["text"] and "sunny in text" in out, (TOOL_CALLS, out))

    @scenario(f"{kind}-structured-tool", kind)
    def _(kind: str) -> None:
        out = Agent(make(kind), output_type=ToolOutput(City)).run_sync("Name a city").output
        expect(out == CITY, out)

    if kind != "anthropic" or CLAUDE:  # pydantic-ai: native output on AnthropicModel for Claude names only

        @scenario(f"{kind}-structured-native", kind)
        def _(kind: str) -> None:
            out = Agent(make(kind), output_type=NativeOutput(City)).run_sync("Name a city").output
            expect(out == CITY, out)

    @scenario(f"{kind}-json-mode", kind)
    def _(kind: str) -> None:
        # PromptedOutput: the schema in the prompt, plus JSON mode where the model supports it.
        out = Agent(make(kind), output_type=PromptedOutput(City)).run_sync("Name a city").output
        expect(out == CITY, out)


for kind in ("chat", "responses"):

    @scenario(f"{kind}-overloaded-midstream", kind)
    def _(kind: str) -> None:
        async def go() -> None:
            async with Agent(make(kind)).run_stream("FAIL: overloaded") as run:
                async for _piece in run.stream_text(delta=True):
                    pass

        try:
            asyncio.run(go())
        except Exception as exc:
            expect(
                "server_is_overloaded" in repr(exc) + str(getattr(exc, "body", "")), (type(exc).__name__, exc)
            )
            return
        raise AssertionError("no error raised")


@scenario("responses-chain")
def _() -> None:
    settings = OpenAIResponsesModelSettings(openai_previous_response_id="auto")
    agent = Agent(make("responses"), model_settings=settings)
    first = agent.run_sync("pydantic-chain-one")
    second = agent.run_sync("pydantic-chain-two", message_history=first.all_messages())
    expect("pydantic-chain-two" in second.output, second.output)


done()
