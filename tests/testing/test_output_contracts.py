"""The fakes obey what a request demands of the answer: a forced tool, a JSON schema, JSON mode."""

from __future__ import annotations

import orjson

from ccproxy.formats.common import JSON_MODE_INSTRUCTION
from ccproxy.testing.fake_anthropic import AnthropicFake
from ccproxy.testing.fake_codex import CodexFake
from ccproxy.testing.scripting import default_reply, find_schema, schema_instance

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 3},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
        "kind": {"enum": ["a", "b"]},
        "maybe": {"anyOf": [{"type": "null"}, {"type": "number"}]},
    },
    "$defs": {"Tag": {"type": "object", "properties": {"v": {"type": "boolean"}}}},
}
TOOLS = [{"name": "first", "input_schema": SCHEMA}, {"name": "second", "input_schema": {"type": "object"}}]


def test_schema_instance_fills_every_property() -> None:
    assert schema_instance(SCHEMA) == {
        "name": "text",
        "age": 3,
        "tags": [{"v": True}],
        "kind": "a",
        "maybe": 1.0,
    }


def test_find_schema_in_prompt_text() -> None:
    assert find_schema(f"Answer per this schema: {orjson.dumps(SCHEMA).decode()} thanks") == SCHEMA
    assert find_schema("no {schema} here") is None


def test_anthropic_forced_tool_schema_and_json_mode() -> None:
    fake = AnthropicFake()
    user = [{"role": "user", "content": "hi"}]
    forced = fake.conversation(
        {"messages": user, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "second"}}
    )
    assert default_reply(forced).tool_calls[0].name == "second"
    anyone = fake.conversation({"messages": user, "tools": TOOLS, "tool_choice": {"type": "any"}})
    assert default_reply(anyone).tool_calls[0].arguments == schema_instance(SCHEMA)
    structured = fake.conversation(
        {"messages": user, "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}
    )
    assert orjson.loads(default_reply(structured).text) == schema_instance(SCHEMA)
    system = [
        {"type": "text", "text": f"schema: {orjson.dumps(SCHEMA).decode()}"},
        {"type": "text", "text": JSON_MODE_INSTRUCTION},
    ]
    json_mode = fake.conversation({"messages": user, "system": system})
    assert orjson.loads(default_reply(json_mode).text) == schema_instance(SCHEMA)
    plain = fake.conversation({"messages": user, "tools": TOOLS})
    assert not default_reply(plain).tool_calls


def test_codex_forced_tool_schema_and_json_mode() -> None:
    fake = CodexFake()
    tools = [{"type": "function", "name": t["name"], "parameters": t["input_schema"]} for t in TOOLS]
    forced = fake.conversation(
        {"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "first"}}
    )
    assert default_reply(forced).tool_calls[0].arguments == schema_instance(SCHEMA)
    required = fake.conversation({"input": "hi", "tools": tools, "tool_choice": "required"})
    assert default_reply(required).tool_calls[0].name == "first"
    structured = fake.conversation(
        {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA}}}
    )
    assert orjson.loads(default_reply(structured).text) == schema_instance(SCHEMA)
    json_mode = fake.conversation({"input": "hi", "text": {"format": {"type": "json_object"}}})
    assert isinstance(orjson.loads(default_reply(json_mode).text), dict)
