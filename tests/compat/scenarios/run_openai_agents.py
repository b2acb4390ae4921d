"""openai-agents: Responses and Chat Completions models."""

from __future__ import annotations

import asyncio

from _common import MODEL, OPENAI_BASE, TOOL_CALLS, done, expect, get_weather, scenario
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel

set_tracing_disabled(True)


def make(kind: str) -> OpenAIResponsesModel | OpenAIChatCompletionsModel:
    # A client per event loop: each scenario runs its own loop.
    client = AsyncOpenAI(base_url=OPENAI_BASE, api_key="x", max_retries=0)
    return (
        OpenAIResponsesModel(MODEL, client)
        if kind == "responses"
        else OpenAIChatCompletionsModel(MODEL, client)
    )


weather = function_tool(get_weather)


class City(BaseModel):
    name: str
    population: int


for kind in ("responses", "chat"):

    @scenario(f"{kind}-plain", kind)
    def _(kind: str) -> None:
        result = Runner.run_sync(Agent(name="a", model=make(kind)), "Say hello")
        expect("Fake reply" in result.final_output, result.final_output)

    @scenario(f"{kind}-streamed", kind)
    def _(kind: str) -> None:
        async def go() -> str:
            run = Runner.run_streamed(Agent(name="a", model=make(kind)), "Stream hello")
            async for _event in run.stream_events():
                pass
            return str(run.final_output)

        out = asyncio.run(go())
        expect("Fake reply" in out, out)

    @scenario(f"{kind}-tools", kind)
    def _(kind: str) -> None:
        TOOL_CALLS.clear()
        agent = Agent(name="a", model=make(kind), tools=[weather])
        result = Runner.run_sync(agent, "CALL: get_weather please")
        expect(
            TOOL_CALLS == ["text"] and "sunny in text" in result.final_output,
            (TOOL_CALLS, result.final_output),
        )

    @scenario(f"{kind}-structured", kind)
    def _(kind: str) -> None:
        result = Runner.run_sync(Agent(name="a", model=make(kind), output_type=City), "Name a city")
        expect(result.final_output == City(name="text", population=1), result.final_output)


@scenario("responses-chain")
def _() -> None:
    async def go() -> None:
        agent = Agent(name="a", model=make("responses"))
        first = await Runner.run(agent, "agents-chain-one")
        second = await Runner.run(
            agent,
            "agents-chain-two",
            previous_response_id=first.last_response_id,
            auto_previous_response_id=True,
        )
        expect("agents-chain-two" in second.final_output, second.final_output)

    asyncio.run(go())


done()
