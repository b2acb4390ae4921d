"""Corpus cases served through the fakes reach an httpx client byte-identical, with the recorded status
and headers. Skipped when the shared corpus folder is absent."""

from __future__ import annotations

import httpx
import pytest

from ccproxy.testing import RunningFakes, corpus

pytestmark = pytest.mark.skipif(
    not corpus.corpus_available(),
    reason=f"conformance corpus not found at {corpus.corpus_dir()} (set {corpus.ENV_VAR})",
)

SERVED_KINDS = ("stream", "response", "error")
ANTHROPIC_BODY = {
    "model": "claude-opus-5-5",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "x"}],
}
CODEX_BODY = {"model": "gpt-5.5", "input": "x", "stream": True, "store": False}


def _ids(fmt: str | None = None) -> list[str]:
    if not corpus.corpus_available():
        return []
    return [c.id for c in corpus.all_cases(format=fmt) if c.kind in SERVED_KINDS]


Fetched = tuple[httpx.Response, bytes]


def _check(fetched: Fetched, case: corpus.CorpusCase) -> None:
    response, raw = fetched
    assert response.status_code == case.status
    assert response.headers["content-type"] == case.content_type
    for name, value in case.response_headers().items():
        assert response.headers[name] == value
    assert raw == case.body()


def _fetch(
    http: httpx.Client, method: str, url: str, json: object = None, headers: dict[str, str] | None = None
) -> Fetched:
    # Raw bytes (iter_raw): no content decoding may hide a difference.
    with http.stream(method, url, json=json, headers=headers) as response:
        return response, b"".join(response.iter_raw())


@pytest.mark.parametrize("case_id", _ids("anthropic"))
def test_anthropic_fake_replays_case(http: httpx.Client, fakes: RunningFakes, case_id: str) -> None:
    fakes.anthropic.reply_corpus(case_id)
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    response = _fetch(http, "POST", fakes.url + "/v1/messages", json=ANTHROPIC_BODY, headers=headers)
    _check(response, corpus.get_case(case_id))


@pytest.mark.parametrize("case_id", _ids("openai_responses"))
def test_codex_fake_replays_case(http: httpx.Client, fakes: RunningFakes, case_id: str) -> None:
    fakes.codex.reply_corpus(case_id)
    headers = {"authorization": "Bearer t", "chatgpt-account-id": "a"}
    response = _fetch(http, "POST", fakes.codex_url + "/responses", json=CODEX_BODY, headers=headers)
    _check(response, corpus.get_case(case_id))


@pytest.mark.parametrize("case_id", _ids())
def test_corpus_endpoint_serves_every_case(http: httpx.Client, fakes: RunningFakes, case_id: str) -> None:
    _check(_fetch(http, "GET", f"{fakes.url}/corpus/cases/{case_id}"), corpus.get_case(case_id))


def test_delayed_replay_is_still_byte_identical(http: httpx.Client, fakes: RunningFakes) -> None:
    case = corpus.get_case("anthropic-stream-text-basic")  # its final event is deliberately unterminated
    fakes.anthropic.reply_corpus(case.id, delay=0.001)
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    response = _fetch(http, "POST", fakes.url + "/v1/messages", json=ANTHROPIC_BODY, headers=headers)
    _check(response, case)
    assert not case.body().endswith(b"\n\n")


def test_split_frames_is_lossless() -> None:
    for case in corpus.all_cases(kind="stream"):
        data = case.body()
        assert b"".join(corpus.split_frames(data)) == data


def test_unknown_case(http: httpx.Client, fakes: RunningFakes) -> None:
    assert http.get(fakes.url + "/corpus/cases/nope").status_code == 404
    with pytest.raises(KeyError):
        corpus.get_case("nope")


def test_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    conformance = corpus.corpus_dir().parent
    monkeypatch.setenv(corpus.ENV_VAR, str(conformance))
    assert corpus.corpus_dir() == conformance / "corpus"
    monkeypatch.setenv(corpus.ENV_VAR, str(conformance / "corpus"))
    assert corpus.corpus_available()
    monkeypatch.setenv(corpus.ENV_VAR, str(tmp_path))
    assert not corpus.corpus_available()
