"""The field table (``ccproxy.formats.fields``): issue 12 item 3 (no field silently dropped) and the edge
validation of issue 10 item 2, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typing_extensions
from anthropic.types import message_count_tokens_params, message_create_params
from anthropic.types.beta import message_create_params as beta_message_create_params
from corpus_files import load_corpus
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from ccproxy.formats.base import Format, TranslationError
from ccproxy.formats.fields import (
    MAX_DEPTH,
    TABLES,
    Kind,
    depth_error,
    disposition_markdown,
    too_deep,
    validate,
)

JSON = dict[str, Any]
TOKENS = "an integer from 1 to 2147483647"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
UPSTREAMS = (Format.ANTHROPIC, Format.RESPONSES)

# The official SDKs' own request types, streaming and non-streaming, for each inbound format.
SDK_PARAMS: dict[Format, list[type]] = {
    Format.ANTHROPIC: [
        message_create_params.MessageCreateParamsNonStreaming,
        message_create_params.MessageCreateParamsStreaming,
        beta_message_create_params.MessageCreateParamsNonStreaming,
        beta_message_create_params.MessageCreateParamsStreaming,
        message_count_tokens_params.MessageCountTokensParams,
    ],
    Format.CHAT: [
        completion_create_params.CompletionCreateParamsNonStreaming,
        completion_create_params.CompletionCreateParamsStreaming,
    ],
    Format.RESPONSES: [
        response_create_params.ResponseCreateParamsNonStreaming,
        response_create_params.ResponseCreateParamsStreaming,
    ],
}


def sdk_fields(params: type) -> set[str]:
    fields: set[str] = set()
    for klass in params.__mro__:
        fields |= set(getattr(klass, "__annotations__", {}))
    assert typing_extensions.is_typeddict(params) and fields, params
    return fields


@pytest.mark.parametrize("fmt", list(SDK_PARAMS), ids=str)
def test_every_sdk_field_has_a_disposition_on_every_route(fmt: Format) -> None:
    """A field a new SDK release adds fails here until the table says what each route does with it."""
    table = TABLES[fmt]
    for params in SDK_PARAMS[fmt]:
        missing = sorted(sdk_fields(params) - set(table))
        assert not missing, f"{params.__module__}.{params.__name__}: no disposition for {missing}"
    for name, spec in table.items():
        for upstream in UPSTREAMS:
            disposition = spec.on(upstream)
            assert isinstance(disposition.kind, Kind)
            if disposition.kind in (Kind.IGNORED, Kind.REFUSED):
                assert disposition.reason, f"{fmt}.{name} on {upstream}: ignored or refused without a reason"


def test_docs_carry_the_table() -> None:
    assert disposition_markdown() in DOCS.read_text(), "docs/formats.md: paste fields.disposition_markdown()"


def _non_neutral(fmt: Format, name: str) -> Any:
    """A value that asks for the field's feature (valid in shape)."""
    values: dict[str, Any] = {
        "n": 2,
        "modalities": ["text", "audio"],
        "logprobs": True,
        "top_logprobs": 3,
        "stop": ["END"],
        "stop_sequences": ["END"],
        "background": True,
        "max_tool_calls": 3,
        "previous_response_id": "resp_1",
        "mcp_servers": [{"type": "url", "url": "https://x"}],
    }
    return values.get(name, {"x": "y"})


def _base(fmt: Format) -> dict[str, Any]:
    if fmt is Format.ANTHROPIC:
        return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    if fmt is Format.CHAT:
        return {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return {"model": "m", "input": "hi"}


ROUTES = [(fmt, upstream) for fmt in TABLES for upstream in UPSTREAMS]


@pytest.mark.parametrize(("fmt", "upstream"), ROUTES, ids=str)
def test_refused_fields_get_a_400_naming_them(fmt: Format, upstream: Format) -> None:
    for name, spec in TABLES[fmt].items():
        disposition = spec.on(upstream)
        if disposition.kind is not Kind.REFUSED:
            continue
        with pytest.raises(TranslationError) as err:
            validate(fmt, upstream, {**_base(fmt), name: _non_neutral(fmt, name)})
        assert err.value.param == name and err.value.status == 400
        assert disposition.reason in err.value.message
        validate(fmt, upstream, {**_base(fmt), name: None})  # the neutral value is accepted


@pytest.mark.parametrize(("fmt", "upstream"), ROUTES, ids=str)
def test_unknown_fields_pass_through_but_are_never_lost_in_translation(fmt: Format, upstream: Format) -> None:
    body = {**_base(fmt), "brand_new_field": 1}
    if fmt is upstream:
        validate(fmt, upstream, body)  # the upstream judges fields this table does not know
        return
    with pytest.raises(TranslationError) as err:
        validate(fmt, upstream, body)
    assert err.value.param == "brand_new_field"


@pytest.mark.parametrize(
    ("fmt", "patch", "message"),
    [
        (
            Format.CHAT,
            {"max_tokens": "abc"},
            "max_tokens: expected an integer from 1 to 2147483647, got a string",
        ),
        (
            Format.CHAT,
            {"max_tokens": 1e40},
            "max_tokens: expected an integer from 1 to 2147483647, got 1e+40",
        ),
        (Format.CHAT, {"stream": "yes"}, "stream: expected a boolean (true or false), got a string"),
        (Format.CHAT, {"tools": 1}, "tools: expected an array, got 1"),
        (
            Format.CHAT,
            {"messages": [{"role": ["user"]}]},
            "messages[0].role: expected a string, got an array",
        ),
        (Format.CHAT, {"seed": 2**64 - 1}, "seed: expected an integer from"),
        (Format.CHAT, {"temperature": 3}, "temperature: expected a number from 0 to 2, got 3"),
        (
            Format.ANTHROPIC,
            {"metadata": {"user_id": 5}},
            "metadata.user_id: expected a string, got 5",
        ),
        (
            Format.RESPONSES,
            {"input": [{"type": "message", "role": "user", "content": 5}]},
            "input[0].content",
        ),
    ],
)
def test_messages_name_the_field_and_what_was_expected(
    fmt: Format, patch: dict[str, Any], message: str
) -> None:
    upstream = Format.ANTHROPIC if fmt is not Format.ANTHROPIC else Format.RESPONSES
    with pytest.raises(TranslationError) as err:
        validate(fmt, upstream, {**_base(fmt), **patch})
    assert err.value.message.startswith(message), err.value.message


def test_passthrough_checks_top_level_shapes_only() -> None:
    # Nested content is the upstream's to judge on its own format's route (no walk of a large body) ...
    odd = {**_base(Format.ANTHROPIC), "messages": [{"role": 5, "content": 7}]}
    validate(Format.ANTHROPIC, Format.ANTHROPIC, odd)
    # ... but every field present is type-checked, and the stream flag is strictly boolean.
    with pytest.raises(TranslationError):
        validate(Format.ANTHROPIC, Format.ANTHROPIC, {**odd, "stream": 1})
    with pytest.raises(TranslationError):
        validate(Format.ANTHROPIC, Format.RESPONSES, odd)


def test_too_deep_names_the_place() -> None:
    value: Any = {}
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    assert too_deep({"ok": 1, "metadata": {"x": value}}) == ["metadata", "x", *[0] * (MAX_DEPTH - 2)]
    assert too_deep({"a": [[1]]}) is None
    error = depth_error({"metadata": {"x": value}})
    assert error.param == "metadata.x" + "[0]" * (MAX_DEPTH - 2)
    assert error.message.endswith(f": expected at most {MAX_DEPTH} levels of nesting, got an object")


_CORPUS = load_corpus()
# Corpus requests the table refuses on a route, and why (the rest must pass validation everywhere).
EXPECTED_REFUSALS = {
    ("anthropic-request-stop-sequences-temperature", Format.RESPONSES): "stop_sequences",
    ("openai_chat-request-stop-stream-options", Format.RESPONSES): "stop",
    ("openai_responses-request-temperature-out-of-range", Format.ANTHROPIC): "temperature",
    ("openai_responses-request-temperature-out-of-range", Format.RESPONSES): "temperature",
}


def test_recorded_client_requests_pass_validation() -> None:
    """Real client traffic (the conformance corpus) is accepted on every route, except documented refusals."""
    if _CORPUS is None:
        pytest.skip("conformance corpus not found (set CCPROXY_CONFORMANCE_DIR)")
    seen = 0
    for case in _CORPUS.cases:
        if case["kind"] != "request":
            continue
        fmt = Format(case["format"])
        body = _CORPUS.json(case["id"])
        for upstream in UPSTREAMS:
            expected = EXPECTED_REFUSALS.get((case["id"], upstream))
            if expected is None:
                validate(fmt, upstream, body)
            else:
                with pytest.raises(TranslationError) as err:
                    validate(fmt, upstream, body)
                assert err.value.param == expected
            seen += 1
    assert seen == 2 * 52
