"""langchain: ChatAnthropic, ChatOpenAI (Chat Completions) and ChatOpenAI with the Responses API."""

from __future__ import annotations

import json
from typing import Any

from _common import MODEL, OPENAI_BASE, PREFIX, done, expect, scenario
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel


class City(BaseModel):
    name: str
    population: int


CITY = City(name="text", population=1)


@tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def make(kind: str, **extra: Any) -> Any:
    if kind == "anthropic":
        return ChatAnthropic(model_name=MODEL, base_url=PREFIX, api_key="x", max_retries=0, **extra)  # type: ignore[call-arg]
    return ChatOpenAI(
        model=MODEL,
        base_url=OPENAI_BASE,
        api_key="x",
        max_retries=0,
        use_responses_api=kind == "responses",
        **extra,
    )


for kind in ("anthropic", "chat", "responses"):

    @scenario(f"{kind}-plain", kind)
    def _(kind: str) -> None:
        out = make(kind).invoke("Say hello").text
        expect("Fake reply" in out, out)

    @scenario(f"{kind}-streamed", kind)
    def _(kind: str) -> None:
        pieces = [chunk.text for chunk in make(kind).stream("Stream hello")]
        expect(len(pieces) > 1 and "Fake reply" in "".join(pieces), pieces)

    @scenario(f"{kind}-tools", kind)
    def _(kind: str) -> None:
        model = make(kind).bind_tools([get_weather])
        question = HumanMessage("CALL: get_weather please")
        first = model.invoke([question])
        call = first.tool_calls[0]
        expect(call["name"] == "get_weather" and call["args"] == {"city": "text"}, first.tool_calls)
        result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
        final = model.invoke([question, first, result]).text
        expect("sunny in text" in final, final)

    @scenario(f"{kind}-structured", kind)
    def _(kind: str) -> None:
        out = make(kind).with_structured_output(City).invoke("Name a city")
        expect(out == CITY, out)

    if kind != "anthropic":  # ChatAnthropic has no json_mode method

        @scenario(f"{kind}-json-mode", kind)
        def _(kind: str) -> None:
            prompt = f"Name a city. Answer in JSON per this schema: {json.dumps(City.model_json_schema())}"
            out = make(kind).with_structured_output(City, method="json_mode").invoke(prompt)
            expect(out == CITY, out)


@scenario("responses-chain")
def _() -> None:
    model = make("responses", use_previous_response_id=True)
    first = model.invoke([HumanMessage("langchain-chain-one")])
    expect(isinstance(first, AIMessage) and first.response_metadata.get("id"), first.response_metadata)
    second = model.invoke([HumanMessage("langchain-chain-one"), first, HumanMessage("langchain-chain-two")])
    expect("langchain-chain-two" in second.text, second.text)


done()
