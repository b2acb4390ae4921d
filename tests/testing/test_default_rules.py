"""Default rules: a deterministic tool round trip for agent CLIs, in both fakes."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import orjson

from ccproxy.testing import Completion, RunningFakes, default_text, tool_output_text
from ccproxy.testing.scripting import ToolSpec, shell_call, split_json, split_text

BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}
EXEC_COMMAND: Any = {
    "type": "function",
    "name": "exec_command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    "strict": False,
}
SHELL: Any = {
    "type": "function",
    "name": "shell",
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}},
    },
    "strict": False,
}


def test_anthropic_tool_round_trip(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Please RUN: echo hello-world"}]
    first = claude.messages.create(model="claude-opus-5-5", max_tokens=100, messages=messages, tools=[BASH])
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use" and call.name == "Bash" and call.input == {"command": "echo hello-world"}

    messages += [
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {"role": "system", "content": "mid-conversation system entry, as Claude Code sends"},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "hello-world\n"}],
        },
    ]
    with claude.messages.stream(
        model="claude-opus-5-5", max_tokens=100, messages=messages, tools=[BASH]
    ) as stream:
        second = stream.get_final_message()
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and "hello-world" in second.content[0].text
    assert second.content[0].text == tool_output_text("hello-world\n")


def test_tool_result_blocks_as_content_list(claude: anthropic.Anthropic) -> None:
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "out"}]}
    reply = claude.messages.create(
        model="claude-opus-5-5", max_tokens=10, messages=[{"role": "user", "content": [result]}]
    )
    assert reply.content[0].type == "text" and reply.content[0].text == tool_output_text("out")


def test_codex_exec_command_round_trip(codex: openai.OpenAI) -> None:
    with codex.responses.stream(
        model="gpt-5.5", input="RUN: ls -la", store=False, tools=[EXEC_COMMAND]
    ) as stream:
        first = stream.get_final_response()
    (call,) = first.output
    assert call.type == "function_call" and call.name == "exec_command"
    assert orjson.loads(call.arguments) == {"cmd": "ls -la"}

    follow_up: Any = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "RUN: ls -la"}]},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "total 0\nfile.txt\n"},
    ]
    with codex.responses.stream(
        model="gpt-5.5", input=follow_up, store=False, tools=[EXEC_COMMAND]
    ) as stream:
        second = stream.get_final_response()
    assert second.output_text == tool_output_text("total 0\nfile.txt\n")


def test_codex_shell_tool_gets_argv(codex: openai.OpenAI) -> None:
    with codex.responses.stream(model="gpt-5.5", input="RUN: pwd", store=False, tools=[SHELL]) as stream:
        (call,) = stream.get_final_response().output
    assert call.type == "function_call"
    assert orjson.loads(call.arguments) == {"command": ["bash", "-lc", "pwd"]}


def test_marker_without_shell_tool_and_plain_prompt(
    claude: anthropic.Anthropic, codex: openai.OpenAI
) -> None:
    reply = claude.messages.create(
        model="claude-opus-5-5", max_tokens=10, messages=[{"role": "user", "content": "RUN: ls"}]
    )
    assert reply.content[0].type == "text" and reply.content[0].text == default_text("RUN: ls")
    with codex.responses.stream(model="gpt-5.5", input="what is up?", store=False) as stream:
        assert stream.get_final_response().output_text == default_text("what is up?")


def test_custom_rule_runs_before_defaults(fakes: RunningFakes, claude: anthropic.Anthropic) -> None:
    fakes.anthropic.add_rule(lambda req, conv: Completion(text="ruled") if "magic" in conv.prompt else None)
    ask = {"model": "claude-opus-5-5", "max_tokens": 10}
    magic = claude.messages.create(**ask, messages=[{"role": "user", "content": "magic word"}])
    plain = claude.messages.create(**ask, messages=[{"role": "user", "content": "plain"}])
    assert [magic.content[0], plain.content[0]][0].type == "text"
    texts = [b.text for b in (magic.content[0], plain.content[0]) if b.type == "text"]
    assert texts == ["ruled", default_text("plain")]


def test_shell_call_detection() -> None:
    bash = ToolSpec("Bash", {"properties": {"command": {"type": "string"}}})
    exec_command = ToolSpec("exec_command", {"properties": {"cmd": {"type": "string"}}})
    other = ToolSpec("Read", {"properties": {"file_path": {"type": "string"}}})
    assert shell_call([other], "ls") is None
    bash_call = shell_call([other, bash], "ls")
    assert bash_call is not None and dict(bash_call.arguments) == {"command": "ls"}
    preferred = shell_call([bash, exec_command], "ls")
    assert preferred is not None and preferred.name == "exec_command"


def test_splitting_is_lossless() -> None:
    text = "The quick brown fox jumps over the lazy dog, twice over.\n  Indeed."
    assert "".join(split_text(text)) == text and len(split_text(text)) > 2
    assert split_text("") == []
    args = '{"command":"echo hello world"}'
    assert "".join(split_json(args)) == args and len(split_json(args)) >= 2
    assert split_json("{}") == []


def test_default_text_is_deterministic() -> None:
    assert default_text("hello") == default_text("hello") != default_text("hello!")
    assert "hello" in default_text("hello")
