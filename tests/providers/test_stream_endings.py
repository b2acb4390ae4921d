"""Issue 10 item 7: streams that end oddly, with the recorded corpus cases, through the real routes.

- A final event not followed by a blank line passes ``/api/v1/messages`` byte-identical, nothing added;
  only a stream that really ends without its terminal event gets the in-band error.
- An ``error`` after ``response.completed`` does not turn a completed answer into an error on the Codex
  route's chat (and Anthropic) clients: the terminal event closes the stream; the late error is logged.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
from structlog.testing import capture_logs

from ccproxy.testing import corpus

from .conftest import Fakes

pytestmark = pytest.mark.skipif(
    not corpus.corpus_available(), reason=f"conformance corpus not found at {corpus.corpus_dir()}"
)

# The four recorded streams whose final event has no closing blank line (SDK fixtures).
UNTERMINATED = [
    "anthropic-stream-text-basic",
    "anthropic-stream-refusal",
    "anthropic-stream-text-then-tool-use",
    "anthropic-stream-max-tokens-inside-tool-input",
]
LATE_ERROR = [
    "openai_responses-stream-error-after-completed",
    "openai_responses-stream-reasoning-summary-function-call-late-error",
]
MESSAGES = [{"role": "user", "content": "hi"}]


def test_the_corpus_cases_are_what_this_test_needs() -> None:
    for case_id in UNTERMINATED:
        body = corpus.get_case(case_id).body()
        assert not body.endswith(b"\n\n") and b"message_stop" in body.rsplit(b"\n\n", 1)[-1], case_id
    for case_id in LATE_ERROR:
        body = corpus.get_case(case_id).body()
        assert body.index(b"response.completed") < body.rindex(b"event: error"), case_id


@pytest.mark.parametrize("case_id", UNTERMINATED)
def test_unterminated_final_event_passes_byte_identical(proxy: str, fakes: Fakes, case_id: str) -> None:
    fakes.anthropic.reply_corpus(case_id)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True, "messages": MESSAGES}
    response = httpx.post(proxy + "/api/v1/messages", json=body, timeout=10)
    assert response.status_code == 200
    assert response.content == corpus.get_case(case_id).body()


@pytest.mark.parametrize("case_id", UNTERMINATED)
def test_unterminated_final_event_ends_a_translated_stream_normally(
    proxy: str, fakes: Fakes, case_id: str
) -> None:
    fakes.anthropic.reply_corpus(case_id)
    client = openai.OpenAI(base_url=proxy + "/api/v1", api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="claude-sonnet-4-5", messages=MESSAGES, stream=True))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "tool_calls", "length", "content_filter")


def test_a_stream_that_really_ends_early_gets_the_in_band_error(proxy: str, fakes: Fakes) -> None:
    whole = corpus.get_case("anthropic-stream-text-basic").body()
    cut = whole[: whole.index(b"event: message_delta")] + b'event: content_block_delta\ndata: {"ty'
    fakes.anthropic.reply_raw(cut, content_type="text/event-stream")
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True, "messages": MESSAGES}
    response = httpx.post(proxy + "/api/v1/messages", json=body, timeout=10)
    complete = cut[: cut.rindex(b"\n\n") + 2]
    assert response.content.startswith(complete)  # the frames that arrived whole, unchanged
    rest = response.content[len(complete) :]
    assert rest.startswith(b"event: error\n") and b"upstream ended the stream early" in rest
    assert rest.endswith(b"\n\n") and rest.count(b"event:") == 1  # the unfinished event is not forwarded


def _late_error_logged(logs: list[dict[str, Any]]) -> bool:
    return any(entry["event"] == "upstream error after the stream completed" for entry in logs)


@pytest.mark.parametrize("case_id", LATE_ERROR)
def test_late_error_leaves_a_complete_chat_stream(proxy: str, fakes: Fakes, case_id: str) -> None:
    fakes.codex.reply_corpus(case_id)
    body = {"model": "gpt-5.4", "messages": MESSAGES, "stream": True}
    with capture_logs() as logs:
        response = httpx.post(proxy + "/api/codex/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in response.content
    assert b'"finish_reason":"' in response.content
    assert _late_error_logged(logs)
    # and the official SDK reads it as a complete answer, without raising
    fakes.codex.reply_corpus(case_id)
    client = openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="x", max_retries=0)
    with client.chat.completions.stream(model="gpt-5.4", messages=MESSAGES) as stream:  # type: ignore[arg-type]
        completion = stream.get_final_completion()
    assert completion.choices[0].finish_reason in ("stop", "tool_calls")


@pytest.mark.parametrize("case_id", LATE_ERROR)
def test_late_error_leaves_a_complete_non_streaming_answer(proxy: str, fakes: Fakes, case_id: str) -> None:
    fakes.codex.reply_corpus(case_id)
    client = openai.OpenAI(base_url=proxy + "/api/codex/v1", api_key="x", max_retries=0)
    completion = client.chat.completions.create(model="gpt-5.4", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason in ("stop", "tool_calls")


@pytest.mark.parametrize("case_id", LATE_ERROR)
def test_late_error_leaves_a_complete_anthropic_message(proxy: str, fakes: Fakes, case_id: str) -> None:
    fakes.codex.reply_corpus(case_id)
    client = anthropic.Anthropic(base_url=proxy + "/api/codex", api_key="x", max_retries=0)
    with client.messages.stream(model="gpt-5.4", max_tokens=64, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        message = stream.get_final_message()
    assert message.stop_reason in ("end_turn", "tool_use")
