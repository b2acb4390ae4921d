"""llm (Simon Willison's): an OpenAI-compatible model registered through extra-openai-models.yaml, for
plain, streamed, tool-calling, JSON-mode (``-o json_object 1``) and schema prompts."""

from __future__ import annotations

import json
import os
from pathlib import Path

from _common import MODEL, OPENAI_BASE, TOOL_CALLS, done, expect, get_weather, scenario

home = Path(os.environ["LLM_USER_PATH"])
home.mkdir(parents=True, exist_ok=True)
(home / "extra-openai-models.yaml").write_text(
    f"- model_id: ccproxy\n  model_name: {MODEL}\n  api_base: {OPENAI_BASE}\n  supports_tools: true\n"
    "  supports_schema: true\n"
)

import llm  # noqa: E402  (reads the model file above)

model = llm.get_model("ccproxy")
model.key = "x"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"}}}


@scenario("chat-plain")
def _() -> None:
    out = model.prompt("Say hello", stream=False).text()
    expect("Fake reply" in out, out)


@scenario("chat-streamed")
def _() -> None:
    pieces = list(model.prompt("Stream hello"))
    expect(len(pieces) > 1 and "Fake reply" in "".join(pieces), pieces)


@scenario("chat-tools")
def _() -> None:
    TOOL_CALLS.clear()
    out = model.chain("CALL: get_weather please", tools=[get_weather]).text()
    expect(TOOL_CALLS == ["text"] and "sunny in text" in out, (TOOL_CALLS, out))


@scenario("chat-json-mode")
def _() -> None:
    prompt = f"Name a city. Answer in JSON per this schema: {json.dumps(SCHEMA)}"
    out = json.loads(model.prompt(prompt, json_object=True).text())
    expect(out == {"name": "text", "population": 1}, out)


@scenario("chat-structured")
def _() -> None:
    out = json.loads(model.prompt("Name a city", schema=SCHEMA).text())
    expect(out == {"name": "text", "population": 1}, out)


done()
