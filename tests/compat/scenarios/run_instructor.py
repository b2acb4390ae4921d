"""instructor: OpenAI chat (Mode.TOOLS, Mode.JSON, Mode.JSON_SCHEMA, partial streaming), OpenAI Responses
(Mode.RESPONSES_TOOLS) and Anthropic (Mode.ANTHROPIC_TOOLS, Mode.ANTHROPIC_JSON)."""

from __future__ import annotations

from typing import Any

import anthropic
import instructor
import openai
from _common import MODEL, OPENAI_BASE, PREFIX, done, expect, scenario
from pydantic import BaseModel


class City(BaseModel):
    name: str
    population: int


CITY = City(name="text", population=1)
ASK = [{"role": "user", "content": "Name a city"}]


def oai(mode: instructor.Mode) -> Any:
    return instructor.from_openai(openai.OpenAI(base_url=OPENAI_BASE, api_key="x", max_retries=0), mode=mode)


def claude(mode: instructor.Mode) -> Any:
    client = anthropic.Anthropic(base_url=PREFIX, api_key="x", max_retries=0)
    return instructor.from_anthropic(client, mode=mode)


for label, mode in (
    ("chat-structured", instructor.Mode.TOOLS),
    ("chat-json-mode", instructor.Mode.JSON),
    ("chat-json-schema", instructor.Mode.JSON_SCHEMA),
):

    @scenario(label, mode)
    def _(mode: instructor.Mode) -> None:
        out = oai(mode).chat.completions.create(model=MODEL, response_model=City, messages=ASK, max_retries=0)
        expect(out.model_dump() == CITY.model_dump(), out)


@scenario("chat-streamed")
def _() -> None:
    client = oai(instructor.Mode.TOOLS)
    partials = list(
        client.chat.completions.create_partial(model=MODEL, response_model=City, messages=ASK, max_retries=0)
    )
    expect(len(partials) > 1 and partials[-1].model_dump() == CITY.model_dump(), partials)


@scenario("chat-plain")
def _() -> None:
    out = oai(instructor.Mode.TOOLS).chat.completions.create(model=MODEL, response_model=None, messages=ASK)
    expect("Fake reply" in out.choices[0].message.content, out)


@scenario("responses-structured")
def _() -> None:
    client = oai(instructor.Mode.RESPONSES_TOOLS)
    out = client.responses.create(model=MODEL, response_model=City, input="Name a city", max_retries=0)
    expect(out.model_dump() == CITY.model_dump(), out)


for label, mode in (
    ("anthropic-structured", instructor.Mode.ANTHROPIC_TOOLS),
    ("anthropic-json-mode", instructor.Mode.ANTHROPIC_JSON),
):

    @scenario(label, mode)
    def _(mode: instructor.Mode) -> None:
        out = claude(mode).messages.create(
            model=MODEL, max_tokens=256, response_model=City, messages=ASK, max_retries=0
        )
        expect(out.model_dump() == CITY.model_dump(), out)


done()
