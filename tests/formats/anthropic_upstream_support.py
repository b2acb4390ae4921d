"""Test support for clients on an Anthropic upstream: run a translator over an Anthropic stream, hand the
output to the official openai SDK parsers through a mock transport, and validate Anthropic request bodies."""

from __future__ import annotations

import re
from typing import Any, Literal

import anthropic
import httpx
import httpx2
import openai
import orjson
from anthropic.lib.streaming import MessageStream  # noqa: F401  (documents which accumulator is used)
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ccproxy.formats.base import StreamTranslator
from ccproxy.sse import SSEParser


def translate_stream(translator: StreamTranslator, raw: bytes, chunk: int = 0) -> bytes:
    """Feed ``raw`` upstream SSE bytes (optionally in ``chunk``-sized pieces) and return the client bytes."""
    parser = SSEParser()
    out = bytearray()
    pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] if chunk else [raw]
    for piece in pieces:
        for event in parser.feed(piece):
            out += translator.feed(event.event, orjson.loads(event.data))
    out += translator.finish()
    return bytes(out)


def _client(body: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://proxy.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def chat_final(stream_bytes: bytes) -> Any:
    """``client.chat.completions.stream(...).get_final_completion()`` over ``stream_bytes``."""
    client = _client(stream_bytes, "text/event-stream")
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as stream:
        return stream.get_final_completion()


def chat_chunks(stream_bytes: bytes) -> list[Any]:
    """Raw iteration (``create(stream=True)``) over ``stream_bytes``."""
    client = _client(stream_bytes, "text/event-stream")
    messages: Any = [{"role": "user", "content": "hi"}]
    return list(client.chat.completions.create(model="m", messages=messages, stream=True))


def responses_final(stream_bytes: bytes) -> tuple[list[Any], Any]:
    """``(events, final)`` of ``client.responses.stream(...)``; ``final`` is None when the stream ended
    ``incomplete`` (the SDK's ``get_final_response()`` only accepts ``response.completed``)."""
    client = _client(stream_bytes, "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        events = list(stream)
        try:
            return events, stream.get_final_response()
        except RuntimeError:
            return events, None


def anthropic_final(raw: bytes) -> anthropic.types.Message:
    """What the official Anthropic SDK accumulates from the upstream stream: the source of truth."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    # anthropic 2.13 runs on httpx2, openai 3.57 on httpx.
    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://up.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    with client.messages.stream(model="m", max_tokens=10, messages=messages) as stream:
        for _ in stream:
            pass
        return stream.current_message_snapshot


def source_content(message: anthropic.types.Message) -> tuple[str, list[tuple[str, str, Any]]]:
    """``(text, [(tool id, name, input)])`` of an Anthropic message."""
    text = "".join(b.text for b in message.content if b.type == "text")
    tools = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    return text, tools


# --- Anthropic request validation ---------------------------------------------------------------------
# anthropic's TypedDict params validate lazily (Iterable → generator) and accept anything, so the request
# shape Anthropic enforces is restated here, strictly (unknown keys are errors).

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextBlock(_Strict):
    type: Literal["text"]
    text: str = Field(min_length=1)
    cache_control: dict[str, Any] | None = None


class Base64Source(_Strict):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(_Strict):
    type: Literal["url"]
    url: str


class TextSource(_Strict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ImageBlock(_Strict):
    type: Literal["image"]
    source: Base64Source | UrlSource

    @model_validator(mode="after")
    def _image_type(self) -> ImageBlock:
        if isinstance(self.source, Base64Source):
            assert self.source.media_type in {"image/png", "image/jpeg", "image/gif", "image/webp"}
        return self


class DocumentBlock(_Strict):
    type: Literal["document"]
    source: Base64Source | UrlSource | TextSource


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: str = Field(pattern=_TOOL_ID.pattern)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(pattern=_TOOL_ID.pattern)
    content: str | list[TextBlock | ImageBlock | DocumentBlock] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str = Field(min_length=1)


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str = Field(min_length=1)


Block = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block] = Field(min_length=1)


class Tool(_Strict):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]

    @model_validator(mode="after")
    def _object(self) -> Tool:
        assert self.input_schema.get("type") == "object"
        return self


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)


class OutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    format: OutputFormat | None = None
    effort: str | None = None


class AnthropicRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _semantics(self) -> AnthropicRequest:
        check_conversation(self)
        return self


def check_conversation(req: AnthropicRequest) -> None:
    """The cross-field rules Anthropic enforces (NOTES §4.8, §4.9, §4.11)."""
    if req.thinking is not None:
        assert req.thinking.budget_tokens < req.max_tokens
        assert req.tool_choice is None or req.tool_choice.type in {"auto", "none"}
        assert req.temperature in (None, 1.0) and req.top_k is None
    if req.tool_choice is not None:
        assert req.tools, "tool_choice without tools"
        if req.tool_choice.type == "tool":
            assert req.tool_choice.name in {t.name for t in req.tools}
    for s in req.stop_sequences or []:
        assert s.strip()
    previous: Message | None = None
    for message in req.messages:
        assert previous is None or previous.role != message.role, "roles must alternate"
        blocks = message.content if isinstance(message.content, list) else []
        results = [b for b in blocks if isinstance(b, ToolResultBlock)]
        if results:
            assert message.role == "user"
            assert blocks[: len(results)] == results, "tool_result blocks come first"
            assert previous is not None
            prior = previous.content if isinstance(previous.content, list) else []
            uses = {b.id for b in prior if isinstance(b, ToolUseBlock)}
            assert {r.tool_use_id for r in results} <= uses, "tool_result without a matching tool_use"
        if message.role == "user":
            assistant_only = ToolUseBlock | ThinkingBlock | RedactedThinkingBlock
            assert not any(isinstance(b, assistant_only) for b in blocks)
        else:
            assert not any(isinstance(b, ToolResultBlock | ImageBlock) for b in blocks)
        previous = message


def validate_anthropic_request(body: dict[str, Any]) -> AnthropicRequest:
    return AnthropicRequest.model_validate(body)
