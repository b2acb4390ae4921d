"""The scripting, recording and default-rule mechanism shared by the fake upstreams.

Each fake app owns one ``FakeUpstream``. It records every request it receives and answers model calls from,
in order: the queue of replies a test put there (``reply_text``, ``reply_tool_call``, ``reply_error``, ...),
then the test's own rules (``add_rule``), then the default rules, which make a real agent CLI finish a tool
round trip deterministically:

1. the last turn is a tool result → a text answer quoting the tool output;
2. the last user turn contains ``CALL: <tool name>`` and that tool is offered → a call of it with arguments
   made from its schema (``schema_instance``); ``RUN: <command>`` and a shell-like tool is offered → a call
   of that tool;
3. otherwise a deterministic text derived from the prompt (``default_text``).

Before these, the answer obeys what the request demands of it: a forced tool (``tool_choice`` any/tool/
required/function) is called, a structured-output schema gets a matching JSON text, JSON mode gets one
JSON object (an instance of a schema found in the prompt, as JSON-mode libraries write it there).

Replies are format-neutral (``Completion``, ``ErrorReply``, ``StreamErrorReply``, ``CorpusReply``,
``RawReply``); a ``ProviderFake`` subclass renders them into its wire format and ``ChunkedResponse`` plays
them (both in ``ccproxy.testing.playback``).

FakeUpstream is thread-safe: tests script it from the main thread while the app serves from the uvicorn
thread (``ccproxy.testing.server``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, Unpack

import orjson
from starlette.requests import Request

# ---------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None  # Anthropic tool_use id / Responses call_id; generated when None


@dataclass(frozen=True, kw_only=True)
class Reply:
    """Options every reply understands."""

    delay: float = 0.0  # seconds between two streamed events (once before a JSON body)
    disconnect_after: int | None = None  # drop the connection after this many events (JSON: half the body)
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers


@dataclass(frozen=True, kw_only=True)
class Completion(Reply):
    """A model answer: optional thinking/reasoning, then text, then tool calls."""

    text: str = ""
    thinking: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: str | None = None  # Anthropic vocabulary; default end_turn / tool_use
    input_tokens: int | None = None  # uncached input; default derived from the request size
    output_tokens: int | None = None  # default derived from the output size
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class ErrorReply(Reply):
    status: int
    message: str | None = None
    error_type: str | None = None
    body: Any = None  # exact JSON body; replaces the provider's envelope


@dataclass(frozen=True, kw_only=True)
class StreamErrorReply(Reply):
    """HTTP 200, a partial answer, then an in-band failure (Anthropic ``event: error``; Codex ``error`` /
    ``response.failed``). On a non-streaming Anthropic request it becomes the matching HTTP error."""

    message: str | None = None
    error_type: str | None = None
    text_before: str = ""
    codex_mode: Literal["both", "error", "failed"] = "both"


@dataclass(frozen=True, kw_only=True)
class CorpusReply(Reply):
    case_id: str


@dataclass(frozen=True, kw_only=True)
class RawReply(Reply):
    status: int = 200
    body: bytes | tuple[bytes, ...] = b""  # a tuple is sent chunk by chunk
    content_type: str = "application/json"


class ReplyOptions(TypedDict, total=False):
    delay: float
    disconnect_after: int | None
    headers: Mapping[str, str]


# ------------------------------------------------------------------------------------ requests and rules


@dataclass
class PlanUsage:
    """What a fake's plan-usage endpoint reports; each fake renders it in its upstream's own shape
    (Claude: ``five_hour`` / ``seven_day``; Codex: ``primary_window`` / ``secondary_window``)."""

    plan_type: str = "pro"
    primary_percent: float = 0.0
    primary_reset_seconds: int = 5 * 3600
    secondary_percent: float = 0.0
    secondary_reset_seconds: int = 7 * 86400
    status: int = 200  # anything else: the endpoint answers this status with an error body


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # full path as received, mount prefix included
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # parsed body, None when absent or not JSON


@dataclass(frozen=True)
class FakeLimits:
    """One fake account's subscription (by access token), sent as the upstream's rate-limit headers.

    ``used``/``weekly``: fractions of the short (Claude 5h / Codex primary) and long window. While
    ``limited_until`` (epoch seconds, on the fake's ``clock``) is ahead, model calls get a 429 whose headers
    say the short window resets then. ``overage``: answers are billed as overage (Claude's extra usage).
    """

    used: float = 0.0
    weekly: float = 0.0
    limited_until: float | None = None
    overage: bool = False

    def limited(self, now: float) -> bool:
        return self.limited_until is not None and now < self.limited_until


@dataclass(frozen=True)
class ToolSpec:
    name: str
    schema: Mapping[str, Any]  # JSON schema of the arguments


@dataclass(frozen=True)
class Conversation:
    """What the rules look at, extracted by each fake from its own wire format."""

    prompt: str  # text of the last user turn
    tool_output: str | None  # the tool result text when the last turn is a tool result
    tools: tuple[ToolSpec, ...]
    forced_tool: str | None = None  # a tool the request forces: its name, or "*" for "any tool"
    output_schema: Mapping[str, Any] | None = None  # structured output: the answer must match it
    json_mode: bool = False  # the answer must be one JSON object (schema-less JSON mode)
    system: str = ""  # system / instructions text (JSON mode looks for a schema there)


Rule = Callable[[RecordedRequest, Conversation], Reply | None]

RUN_MARKER = re.compile(r"RUN:[ \t]*(\S[^\n]*)")
# A JSON-mode instruction in the system prompt (ccproxy's own, ``formats.common.JSON_MODE_INSTRUCTION``, or a
# library's prompted-JSON template: pydantic-ai's, instructor's): the answer is one JSON object, as a model
# following the instruction would give.
JSON_INSTRUCTION = re.compile(
    r"respond with (?:a|exactly one valid) JSON object|in json that match the following json_schema",
    re.IGNORECASE,
)
CALL_MARKER = re.compile(r"CALL:[ \t]*([A-Za-z0-9_.-]+)")
# Checked in this order; the schema decides the argument shape (Codex exec_command {"cmd"}, Codex shell
# {"command": [argv]}, Claude Code Bash {"command": str}).
SHELL_TOOL_NAMES = ("exec_command", "shell", "shell_command", "bash", "local_shell")


def default_text(prompt: str) -> str:
    """The deterministic answer of rule 3: a digest plus the start of the prompt."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    snippet = " ".join(prompt.split())[:60]
    return f"Fake reply {digest}: {snippet}"


def tool_output_text(output: str) -> str:
    """The deterministic answer of rule 1."""
    return f"The tool returned:\n{output[:4000]}"


def shell_call(tools: Sequence[ToolSpec], command: str) -> ToolCall | None:
    by_name = {tool.name.lower(): tool for tool in tools}
    for name in SHELL_TOOL_NAMES:
        tool = by_name.get(name)
        if tool is None:
            continue
        props = tool.schema.get("properties") or {}
        if "cmd" in props:
            return ToolCall(tool.name, {"cmd": command})
        if "command" in props:
            if (props["command"] or {}).get("type") == "array":
                return ToolCall(tool.name, {"command": ["bash", "-lc", command]})
            return ToolCall(tool.name, {"command": command})
    return None


def default_reply(conversation: Conversation) -> Completion:
    forced = conversation.forced_tool
    if forced is not None and conversation.tools:
        # A forced tool is called whatever the turn (like a model under tool_choice any/tool). With "any
        # tool" after a tool result, the last tool (where agent libraries put their output tool) ends it.
        tools = conversation.tools
        fallback = tools[-1] if conversation.tool_output is not None else tools[0]
        tool = next((t for t in tools if t.name == forced), fallback)
        schema: Mapping[str, Any] = tool.schema
        if not schema.get("properties"):  # a free-form JSON tool: follow a schema the prompt gives
            schema = find_schema(conversation.system + "\n" + conversation.prompt) or schema
        return Completion(tool_calls=(ToolCall(tool.name, schema_instance(schema)),))
    if conversation.output_schema is not None:
        return Completion(text=orjson.dumps(schema_instance(conversation.output_schema)).decode())
    if conversation.json_mode:
        found = find_schema(conversation.system + "\n" + conversation.prompt)
        value = schema_instance(found) if found else {"answer": default_text(conversation.prompt)}
        return Completion(text=orjson.dumps(value).decode())
    if conversation.tool_output is not None:
        return Completion(text=tool_output_text(conversation.tool_output))
    called = CALL_MARKER.search(conversation.prompt)
    named = next((t for t in conversation.tools if called and t.name == called.group(1)), None)
    if named is not None:
        return Completion(tool_calls=(ToolCall(named.name, schema_instance(named.schema)),))
    marker = RUN_MARKER.search(conversation.prompt)
    if marker:
        call = shell_call(conversation.tools, marker.group(1).strip())
        if call is not None:
            return Completion(tool_calls=(call,))
    return Completion(text=default_text(conversation.prompt))


def schema_instance(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A deterministic value that validates against a (JSON-schema subset) ``schema``: every property
    filled, the first enum / const / union member, one array item."""
    root = root if root is not None else schema
    if depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return schema_instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, Mapping) and o.get("type") != "null"]
        if options:
            return schema_instance(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, Mapping):  # a malformed schema (fuzzed): an empty object, never a crash
            return {}
        return {k: schema_instance(v, root, depth + 1) for k, v in props.items() if isinstance(v, Mapping)}
    if kind == "array":
        items = schema.get("items")
        return [schema_instance(items, root, depth + 1)] if isinstance(items, Mapping) else []
    if kind == "string":
        return "text"
    minimum = schema.get("minimum", 1)
    minimum = minimum if isinstance(minimum, int | float) and not isinstance(minimum, bool) else 1
    if kind == "integer":
        return max(1, int(minimum))
    if kind == "number":
        return float(max(1, minimum))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}


def find_schema(text: str) -> Mapping[str, Any] | None:
    """The first JSON schema object (one with ``properties``) written into a prompt, as JSON-mode
    libraries put it there (instructor, langchain)."""
    import json

    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(64):
        if start < 0:
            return None
        try:
            value, _end = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("properties"), dict):
            return value
        start = text.find("{", start + 1)
    return None


# ----------------------------------------------------------------------------------------- the upstream


# How many received requests a fake remembers: a ring buffer, so the offline mode (``serve --mock``) can run
# for days; tests look at the last few.
REQUEST_MEMORY = 256


class FakeUpstream:
    """Recorder and reply queue of one fake app; it remembers the last ``keep`` requests."""

    def __init__(self, name: str, keep: int = REQUEST_MEMORY) -> None:
        self.name = name
        self.require_auth = True  # answer 401 to requests without credentials
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._rules: list[Rule] = []
        self._requests: deque[RecordedRequest] = deque(maxlen=keep)
        self._ids: dict[str, int] = {}
        self.plan_usage = PlanUsage()  # what GET of the plan-usage endpoint answers; set it to script one
        self._limits: dict[str, FakeLimits] = {}
        self.clock: Callable[[], float] = time.time  # tests move it to simulate a reset

    def set_limits(self, token: str, **limits: Any) -> FakeUpstream:
        """Script the subscription of the account whose access token is ``token`` (see ``FakeLimits``)."""
        with self._lock:
            self._limits[token] = FakeLimits(**limits)
        return self

    def limits_for(self, authorization: str | None) -> FakeLimits:
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            return self._limits.get(token) or FakeLimits()

    def reset(self) -> None:
        """Forget requests, queued replies, rules and id counters; require credentials again."""
        with self._lock:
            self._queue.clear()
            self._rules.clear()
            self._requests.clear()
            self._ids.clear()
            self._limits.clear()
            self.clock = time.time
            self.require_auth = True
            self.plan_usage = PlanUsage()

    # -- what was received

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError(f"fake {self.name}: no request recorded")
            return self._requests[-1]

    def bodies(self, path_suffix: str = "") -> list[Any]:
        """Parsed JSON bodies of the recorded requests whose path ends with ``path_suffix``."""
        return [r.json for r in self.requests if r.path.endswith(path_suffix)]

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._queue)

    # -- scripting (every method returns self, so calls chain)

    def reply(self, *replies: Reply) -> FakeUpstream:
        with self._lock:
            self._queue.extend(replies)
        return self

    def reply_text(
        self,
        text: str,
        *,
        thinking: str | None = None,
        stop_reason: str | None = None,
        **opts: Unpack[ReplyOptions],
    ) -> FakeUpstream:
        return self.reply(Completion(text=text, thinking=thinking, stop_reason=stop_reason, **opts))

    def reply_tool_call(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        text: str = "",
        thinking: str | None = None,
        call_id: str | None = None,
        **opts: Unpack[ReplyOptions],
    ) -> FakeUpstream:
        call = ToolCall(name, dict(arguments or {}), call_id)
        return self.reply(Completion(text=text, thinking=thinking, tool_calls=(call,), **opts))

    def reply_tool_calls(
        self, *calls: ToolCall, text: str = "", thinking: str | None = None, **opts: Unpack[ReplyOptions]
    ) -> FakeUpstream:
        return self.reply(Completion(text=text, thinking=thinking, tool_calls=calls, **opts))

    def reply_error(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        body: Any = None,
        **opts: Unpack[ReplyOptions],
    ) -> FakeUpstream:
        return self.reply(
            ErrorReply(status=status, message=message, error_type=error_type, body=body, **opts)
        )

    def reply_stream_error(
        self,
        message: str | None = None,
        *,
        error_type: str | None = None,
        text_before: str = "",
        codex_mode: Literal["both", "error", "failed"] = "both",
        **opts: Unpack[ReplyOptions],
    ) -> FakeUpstream:
        reply = StreamErrorReply(
            message=message, error_type=error_type, text_before=text_before, codex_mode=codex_mode, **opts
        )
        return self.reply(reply)

    def reply_corpus(self, case_id: str, **opts: Unpack[ReplyOptions]) -> FakeUpstream:
        return self.reply(CorpusReply(case_id=case_id, **opts))

    def reply_raw(
        self,
        body: bytes | tuple[bytes, ...],
        *,
        status: int = 200,
        content_type: str = "application/json",
        **opts: Unpack[ReplyOptions],
    ) -> FakeUpstream:
        return self.reply(RawReply(status=status, body=body, content_type=content_type, **opts))

    def add_rule(self, rule: Rule) -> FakeUpstream:
        """A rule consulted after the queue and before the default rules; return None to pass."""
        with self._lock:
            self._rules.append(rule)
        return self

    # -- used by the fake apps

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def next_reply(self, request: RecordedRequest, conversation: Conversation) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            rules = list(self._rules)
        for rule in rules:
            reply = rule(request, conversation)
            if reply is not None:
                return reply
        return default_reply(conversation)

    def next_id(self, prefix: str) -> str:
        """Deterministic ids: the same request sequence after ``reset()`` gives the same ids."""
        with self._lock:
            self._ids[prefix] = number = self._ids.get(prefix, 0) + 1
        return f"{prefix}{number:024d}"


async def record_request(upstream: FakeUpstream, request: Request) -> RecordedRequest:
    body = await request.body()
    encoding = request.headers.get("content-encoding", "")
    if body and encoding in ("gzip", "deflate"):
        body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
    parsed: Any = None
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
    recorded = RecordedRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        json=parsed,
    )
    upstream.record(recorded)
    return recorded


# -------------------------------------------------------------------------------------- input checks

_JSON_NAMES: dict[type, str] = {
    dict: "a valid dictionary",
    list: "a valid list",
    str: "a valid string",
    bool: "a valid boolean",
    int: "a valid integer",
    float: "a valid number",
}


def type_problem(body: Mapping[str, Any], expected: Mapping[str, tuple[type, ...]]) -> str | None:
    """The real APIs' (pydantic's) message for the first present, non-null field of the wrong JSON type,
    e.g. ``tools: Input should be a valid list``; a boolean is never taken for a number."""
    for name, types in expected.items():
        value = body.get(name)
        if value is None:
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            return f"{name}: Input should be {' or '.join(_JSON_NAMES.get(t, t.__name__) for t in types)}"
        if isinstance(value, list) and types == (list,) and name in _OBJECT_LISTS:
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    return f"{name}.{index}: Input should be a valid dictionary"
    return None


_OBJECT_LISTS = frozenset({"tools", "messages", "input"})
NUMBER = (int, float)


# ------------------------------------------------------------------------------------------ token counts


def estimate_tokens(*parts: Any) -> int:
    """Deterministic stand-in for a tokenizer: a quarter of the JSON size, at least 1."""
    return max(1, len(orjson.dumps(parts)) // 4)


def output_tokens(completion: Completion) -> tuple[int, int]:
    """(visible, thinking) output tokens of a completion."""
    size = len(completion.text) + sum(len(orjson.dumps(dict(c.arguments))) for c in completion.tool_calls)
    thinking = max(1, len(completion.thinking) // 4) if completion.thinking else 0
    return max(1, size // 4), thinking


def split_text(text: str, target: int = 16) -> list[str]:
    """Word-aligned pieces of roughly ``target`` characters; their concatenation is ``text``."""
    pieces: list[str] = []
    current = ""
    for word in re.findall(r"\s*\S+|\s+", text):
        current += word
        if len(current) >= target:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def split_json(text: str, parts: int = 3) -> list[str]:
    """Argument JSON as it streams: several fragments (a tool without arguments sends none)."""
    if text in ("", "{}"):
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def signature(seed: str) -> str:
    """An opaque, deterministic stand-in for a thinking signature / encrypted reasoning blob."""
    digest = hashlib.sha256(seed.encode()).digest()
    return base64.b64encode(digest * 3).decode()
