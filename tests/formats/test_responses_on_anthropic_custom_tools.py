"""Responses client → Anthropic upstream: the tools Codex sends (custom/freeform, namespace, web_search,
tool_search) and the items they produce, checked against the openai SDK's models and stream accumulator."""

from __future__ import annotations

import itertools
import json
from typing import Any

import openai.types.responses as rt
import orjson
import pytest
from anthropic_upstream_support import responses_final, translate_stream, validate_anthropic_request
from corpus_files import Corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from ccproxy.formats import freeform
from ccproxy.formats.base import TranslationContext, TranslationError
from ccproxy.formats.responses_on_anthropic import ResponsesStream, convert_request, convert_response
from ccproxy.sse import frame

GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\n%import common.LF\n'
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files. This is a FREEFORM tool.",
    "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR},
}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
AGENTS = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Tools for sub-agents.",
    "tools": [
        {"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}},
        {"type": "custom", "name": "script", "description": "Free text."},
    ],
}
TOOL_SEARCH = {"type": "tool_search", "execution": "client", "parameters": {"type": "object"}}
WEB_SEARCH = {"type": "web_search", "external_web_access": True, "search_content_types": ["text", "image"]}
CODEX_TOOLS = [EXEC, APPLY_PATCH, AGENTS, TOOL_SEARCH, WEB_SEARCH]
PATCH = '*** Begin Patch\n*** Add File: a "b".txt\n+caf\u00e9 \U0001f600 \\ tab\t\n*** End Patch\n'


def _request(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "input": "hi", "tools": CODEX_TOOLS, **extra}


def _client_tools(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without server tools (the strict request model knows client tools only)."""
    return {**body, "tools": [t for t in body.get("tools", []) if "type" not in t]}


# --- request ---------------------------------------------------------------------------------------------


def test_codex_tool_set_maps_to_anthropic_tools() -> None:
    out = convert_request(_request())
    validate_anthropic_request(_client_tools(out))
    tools = {t["name"]: t for t in out["tools"]}
    assert list(tools) == [
        "exec_command",
        "apply_patch",
        "multi_agent_v1__spawn_agent",
        "multi_agent_v1__script",
        "web_search",
    ]
    patch = tools["apply_patch"]
    assert patch["input_schema"] == {
        "type": "object",
        "properties": {
            "input": {"type": "string", "description": "The complete free-form input of the tool."}
        },
        "required": ["input"],
        "additionalProperties": False,
    }
    description = patch["description"]
    assert description.startswith("Edit files. This is a FREEFORM tool.")
    assert "`input` string" in description and f"lark grammar:\n```lark\n{GRAMMAR}\n```" in description
    assert tools["multi_agent_v1__spawn_agent"]["description"] == (
        "(Part of the `multi_agent_v1` tools: Tools for sub-agents.)"
    )
    assert tools["multi_agent_v1__script"]["input_schema"] == patch["input_schema"]
    assert "grammar" not in tools["multi_agent_v1__script"]["description"]
    assert tools["web_search"] == {"type": "web_search_20250305", "name": "web_search"}
    assert out["tool_choice"] == {"type": "auto"}


def test_custom_tool_choice_and_allowed_tools() -> None:
    out = convert_request(_request(tool_choice={"type": "custom", "name": "apply_patch"}))
    assert out["tool_choice"] == {"type": "tool", "name": "apply_patch"}
    allowed = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}],
    }
    out = convert_request(_request(tool_choice=allowed))
    assert [t["name"] for t in out["tools"]] == ["apply_patch", "web_search"]
    with pytest.raises(TranslationError) as err:
        convert_request(_request(tool_choice={"type": "custom", "name": "web_search"}))
    assert err.value.param == "tool_choice"  # a server tool cannot be forced


def test_web_search_options() -> None:
    tool = {
        "type": "web_search",
        "filters": {"allowed_domains": ["docs.python.org"]},
        "user_location": {"type": "approximate", "city": "Berlin", "country": "DE", "region": None},
        "search_context_size": "high",
    }
    out = convert_request(_request(tools=[tool]))
    assert out["tools"] == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "allowed_domains": ["docs.python.org"],
            "user_location": {"type": "approximate", "city": "Berlin", "country": "DE"},
        }
    ]
    # cached-only search has no Anthropic counterpart: not offered rather than turned into live search
    assert "tools" not in convert_request(
        _request(tools=[{"type": "web_search", "external_web_access": False}])
    )
    assert "tools" not in convert_request(_request(tools=[TOOL_SEARCH]))


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "file_search", "vector_store_ids": []}], "tools[0].type"),
        ([{"type": "custom", "name": ""}], "tools[0].name"),
        (
            [{**APPLY_PATCH, "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"}}],
            "tools[0].format",
        ),
        ([{**APPLY_PATCH, "format": {"type": "json"}}], "tools[0].format"),
        ([{"type": "namespace", "name": "ns", "tools": [{"type": "mcp"}]}], "tools[0].tools[0].type"),
        ([APPLY_PATCH, {**EXEC, "name": "apply_patch"}], "tools"),
        ([{"type": "namespace", "name": "a", "tools": [EXEC]}, {**EXEC, "name": "a__exec_command"}], "tools"),
    ],
)
def test_refused_tools_name_the_param(tools: list[Any], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        convert_request(_request(tools=tools))
    assert err.value.param == param


def test_custom_tool_items_become_tool_use_and_tool_result() -> None:
    items = [
        {"role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": PATCH},
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "spawn_agent",
            "namespace": "multi_agent_v1",
            "arguments": "{}",
        },
        {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Success. Updated: A a.txt"},
        {"type": "function_call_output", "call_id": "call_2", "output": "spawned"},
        {
            "type": "web_search_call",
            "id": "ws_1",
            "status": "completed",
            "action": {"type": "search", "query": "q"},
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "found it"}]},
        {"role": "user", "content": "thanks"},
    ]
    out = convert_request(_request(input=items))
    validate_anthropic_request(_client_tools(out))
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "patch it"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "apply_patch", "input": {"input": PATCH}},
                {"type": "tool_use", "id": "call_2", "name": "multi_agent_v1__spawn_agent", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "Success. Updated: A a.txt"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "spawned"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "found it"}]},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]
    with pytest.raises(TranslationError) as err:
        convert_request(
            _request(input=[{"type": "custom_tool_call", "call_id": "c", "name": "x", "input": 1}])
        )
    assert err.value.param == "input[0].input"


# --- response -------------------------------------------------------------------------------------------


def _message(*content: dict[str, Any], stop_reason: str = "tool_use") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": list(content),
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 3, "output_tokens": 5},
    }


def _ctx() -> TranslationContext:
    return TranslationContext("gpt-5.5", _request())


def test_response_custom_and_namespaced_calls() -> None:
    message = _message(
        {"type": "text", "text": "Patching."},
        {"type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": {"input": PATCH}},
        {"type": "tool_use", "id": "toolu_2", "name": "multi_agent_v1__spawn_agent", "input": {"n": 1}},
        {"type": "tool_use", "id": "toolu_3", "name": "multi_agent_v1__script", "input": {"text": "abc"}},
        {"type": "tool_use", "id": "toolu_4", "name": "exec_command", "input": {"cmd": "ls"}},
    )
    response = rt.Response.model_validate(convert_response(message, _ctx()))
    kinds = [item.type for item in response.output]
    assert kinds == ["message", "custom_tool_call", "function_call", "custom_tool_call", "function_call"]
    patch, agent, script, shell = response.output[1:]
    assert isinstance(patch, rt.ResponseCustomToolCall) and patch.input == PATCH
    assert patch.call_id == "toolu_1" and patch.name == "apply_patch" and patch.namespace is None
    assert isinstance(agent, rt.ResponseFunctionToolCall)
    assert (agent.name, agent.namespace, orjson.loads(agent.arguments)) == (
        "spawn_agent",
        "multi_agent_v1",
        {"n": 1},
    )
    assert isinstance(script, rt.ResponseCustomToolCall)
    assert (script.name, script.namespace, script.input) == ("script", "multi_agent_v1", "abc")
    assert isinstance(shell, rt.ResponseFunctionToolCall) and shell.namespace is None


@pytest.mark.parametrize(
    ("tool_input", "text"),
    [
        ({"input": "x"}, "x"),
        ({"patch": "y"}, "y"),  # the model renamed the property: a lone string is still the input
        ({}, ""),
        ({"input": 3}, '{"input":3}'),  # nothing is lost: the JSON itself
        ({"a": "1", "b": "2"}, '{"a":"1","b":"2"}'),
    ],
)
def test_freeform_input_of_off_schema_tool_use(tool_input: Any, text: str) -> None:
    assert freeform.freeform_input(tool_input) == text


def test_round_trip_custom_call_back_to_the_same_tool_use() -> None:
    blocks = [
        {"type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": {"input": PATCH}},
        {"type": "tool_use", "id": "toolu_2", "name": "multi_agent_v1__spawn_agent", "input": {"n": 1}},
    ]
    output = convert_response(_message(*blocks), _ctx())["output"]
    results = [
        {"type": f"{item['type']}_output", "call_id": item["call_id"], "output": "ok"} for item in output
    ]
    out = convert_request(_request(input=[{"role": "user", "content": "go"}, *output, *results]))
    assert out["messages"][1] == {"role": "assistant", "content": blocks}
    assert [b["type"] for b in out["messages"][2]["content"]] == ["tool_result", "tool_result"]


def test_response_web_search_becomes_web_search_call() -> None:
    message = _message(
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "ccproxy"}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://example.com/a",
                    "title": "A",
                    "encrypted_content": "x",
                }
            ],
        },
        {"type": "server_tool_use", "id": "srvtoolu_2", "name": "web_search", "input": {"query": "fail"}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_2",
            "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"},
        },
        {"type": "text", "text": "Here is what I found."},
        stop_reason="end_turn",
    )
    response = rt.Response.model_validate(convert_response(message, _ctx()))
    first, second, text = response.output
    assert isinstance(first, rt.ResponseFunctionWebSearch) and first.status == "completed"
    assert first.action.type == "search" and first.action.query == "ccproxy"
    assert [s.url for s in first.action.sources or []] == ["https://example.com/a"]
    assert isinstance(second, rt.ResponseFunctionWebSearch) and second.status == "failed"
    assert isinstance(text, rt.ResponseOutputMessage) and response.output_text == "Here is what I found."


# --- stream ---------------------------------------------------------------------------------------------


def _anthropic_stream(blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]], stop: str) -> bytes:
    start = _message(stop_reason=stop)
    start["stop_reason"] = None
    out = frame("message_start", {"type": "message_start", "message": start})
    for index, (block, deltas) in enumerate(blocks):
        out += frame(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )
        for delta in deltas:
            out += frame(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            )
        out += frame("content_block_stop", {"type": "content_block_stop", "index": index})
    out += frame(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}},
    )
    return out + frame("message_stop", {"type": "message_stop"})


def _json_fragments(value: Any, cuts: list[int]) -> list[dict[str, Any]]:
    text = orjson.dumps(value).decode()
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    pieces = ["", *(text[a:b] for a, b in itertools.pairwise(points))]
    return [{"type": "input_json_delta", "partial_json": p} for p in pieces]


def _tool_block(tool_id: str, name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {}}


@pytest.mark.parametrize("chunk", [0, 7])
def test_stream_custom_tool_call_events_and_accumulator(chunk: int) -> None:
    # cuts land inside the escapes of "\"", "\\", "\t" and inside the surrogate pair of the emoji
    escaped = orjson.dumps({"input": PATCH}).decode()
    cuts = [escaped.index("\\") + 1, escaped.index("\\u") + 3 if "\\u" in escaped else 5, 11, 40, 47]
    raw = _anthropic_stream(
        [
            (_tool_block("toolu_1", "apply_patch"), _json_fragments({"input": PATCH}, cuts)),
            (_tool_block("toolu_2", "multi_agent_v1__spawn_agent"), _json_fragments({"n": 1}, [3])),
        ],
        "tool_use",
    )
    data = translate_stream(ResponsesStream(_ctx()), raw, chunk)
    events, final = responses_final(data)
    deltas = [e for e in events if e.type == "response.custom_tool_call_input.delta"]
    assert len(deltas) >= 3 and "".join(e.delta for e in deltas) == PATCH
    (done,) = [e for e in events if e.type == "response.custom_tool_call_input.done"]
    assert done.input == PATCH and done.output_index == 0
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [(i.type, getattr(i, "namespace", None)) for i in added] == [
        ("custom_tool_call", None),
        ("function_call", "multi_agent_v1"),
    ]
    assert final is not None and final.status == "completed"
    patch, agent = final.output
    assert isinstance(patch, rt.ResponseCustomToolCall)
    assert (patch.call_id, patch.name, patch.input) == ("toolu_1", "apply_patch", PATCH)
    assert isinstance(agent, rt.ResponseFunctionToolCall)
    assert (agent.name, agent.namespace, agent.arguments) == ("spawn_agent", "multi_agent_v1", '{"n":1}')
    (args_done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert args_done.name == "spawn_agent"


def test_stream_off_schema_custom_input_streams_nothing_but_completes() -> None:
    raw = _anthropic_stream(
        [(_tool_block("toolu_1", "apply_patch"), _json_fragments({"patch": "abc"}, [2, 5]))], "tool_use"
    )
    events, final = responses_final(translate_stream(ResponsesStream(_ctx()), raw))
    assert not [e for e in events if e.type == "response.custom_tool_call_input.delta"]
    assert final is not None and final.output[0].type == "custom_tool_call"
    assert isinstance(final.output[0], rt.ResponseCustomToolCall) and final.output[0].input == "abc"


def test_stream_custom_call_cut_off_by_max_tokens() -> None:
    fragments = _json_fragments({"input": "*** Begin Patch\n"}, [12])[:-1]  # the closing part never came
    raw = _anthropic_stream([(_tool_block("toolu_1", "apply_patch"), fragments)], "max_tokens")
    raw = raw.replace(frame("content_block_stop", {"type": "content_block_stop", "index": 0}), b"")
    events, final = responses_final(translate_stream(ResponsesStream(_ctx()), raw))
    assert final is None and events[-1].type == "response.incomplete"
    item = events[-1].response.output[0]
    assert isinstance(item, rt.ResponseCustomToolCall)
    streamed = "".join(e.delta for e in events if e.type == "response.custom_tool_call_input.delta")
    assert item.input.startswith(streamed) and streamed


def test_stream_web_search_events(corpus: Corpus) -> None:
    raw = corpus.bytes("anthropic-stream-web-search-citations")
    events, final = responses_final(translate_stream(ResponsesStream(_ctx()), raw, 64))
    assert final is not None
    searches = [i for i in final.output if isinstance(i, rt.ResponseFunctionWebSearch)]
    assert searches and all(s.status == "completed" and s.action.type == "search" for s in searches)
    assert all(s.action.query and s.action.sources for s in searches)  # type: ignore[union-attr]
    kinds = [e.type for e in events]
    for search in searches:
        mine = [e.type for e in events if getattr(e, "item_id", None) == search.id]
        assert mine == [
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
            "response.web_search_call.completed",
        ]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done")
    assert final.output_text  # the answer text still arrives (citations are not mapped)


# --- the incremental decoder ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=8), st.booleans())
def test_decoder_streams_exactly_the_input(text: str, cuts: list[int], ascii_only: bool) -> None:
    payload = {"input": text}
    # compact UTF-8 JSON as Anthropic sends it, or ASCII-only JSON with \u escapes and spaces in the head
    raw = json.dumps(payload, ensure_ascii=True) if ascii_only else orjson.dumps(payload).decode()
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    decoder = freeform.FreeformInputDecoder()
    streamed = "".join(decoder.feed(raw[a:b]) for a, b in itertools.pairwise(points))
    assert streamed == text and decoder.text() == text
