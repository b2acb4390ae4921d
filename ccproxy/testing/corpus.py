"""Read the shared conformance corpus in place and serve its cases byte for byte.

The corpus is third-party recorded data living next to the repository (``../shared/conformance/corpus``)
and is never copied into it. ``CCPROXY_CONFORMANCE_DIR`` overrides the location; it may name the
conformance folder or the corpus folder itself.

A case is served with the manifest's ``http.status``, ``http.content_type`` and ``http.headers`` and the
file's bytes exactly as stored (streams are split on frame boundaries only so a delay can be applied
between events; the concatenation is unchanged). ``create_app()`` serves ``/cases/{case_id}`` on its own;
the fakes serve cases through ``FakeUpstream.reply_corpus(case_id)``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ENV_VAR = "CCPROXY_CONFORMANCE_DIR"
DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "corpus"
# Hop-by-hop or length headers must come from the live response, not from the recording.
_SKIPPED_HEADERS = {"content-type", "content-length", "transfer-encoding", "connection", "content-encoding"}


def corpus_dir() -> Path:
    override = os.environ.get(ENV_VAR)
    if not override:
        return DEFAULT_DIR
    path = Path(override)
    return path if (path / "cases.json").is_file() else path / "corpus"


def corpus_available() -> bool:
    return (corpus_dir() / "cases.json").is_file()


@dataclass(frozen=True)
class CorpusCase:
    id: str
    kind: str  # request, response, stream, error
    format: str  # anthropic, openai_chat, openai_responses
    path: Path
    entry: dict[str, Any]  # the manifest entry as stored

    @property
    def status(self) -> int:
        return int(self.entry["http"].get("status", 200))

    @property
    def content_type(self) -> str:
        default = "text/event-stream; charset=utf-8" if self.kind == "stream" else "application/json"
        return str(self.entry["http"].get("content_type", default))

    def response_headers(self) -> dict[str, str]:
        """Headers to serve: the recorded ones (minus length/encoding) plus the recorded content type."""
        recorded = self.entry["http"].get("headers") or {}
        headers = {k.lower(): str(v) for k, v in recorded.items() if k.lower() not in _SKIPPED_HEADERS}
        headers["content-type"] = self.content_type
        return headers

    def body(self) -> bytes:
        return self.path.read_bytes()

    def json(self) -> Any:
        return orjson.loads(self.body())


@functools.cache
def _manifest(directory: Path) -> dict[str, CorpusCase]:
    data = orjson.loads((directory / "cases.json").read_bytes())
    return {
        entry["id"]: CorpusCase(entry["id"], entry["kind"], entry["format"], directory / entry["file"], entry)
        for entry in data["cases"]
    }


def all_cases(kind: str | None = None, format: str | None = None) -> list[CorpusCase]:
    cases = _manifest(corpus_dir()).values()
    return [c for c in cases if (kind is None or c.kind == kind) and (format is None or c.format == format)]


def get_case(case_id: str) -> CorpusCase:
    cases = _manifest(corpus_dir())
    if case_id not in cases:
        raise KeyError(f"no corpus case {case_id!r} in {corpus_dir()}")
    return cases[case_id]


def split_frames(data: bytes) -> list[bytes]:
    """SSE bytes cut after each blank line; joining the pieces gives ``data`` back exactly."""
    pieces: list[bytes] = []
    start = 0
    while True:
        end = data.find(b"\n\n", start)
        if end < 0:
            break
        pieces.append(data[start : end + 2])
        start = end + 2
    if start < len(data):
        pieces.append(data[start:])  # an unterminated final event stays unterminated
    return pieces


async def _serve_case(request: Request) -> Response:
    try:
        case = get_case(request.path_params["case_id"])
    except KeyError as exc:
        return Response(orjson.dumps({"detail": str(exc)}), 404, media_type="application/json")
    response = Response(case.body(), case.status)
    # Set the recorded headers verbatim; Starlette would otherwise append its own charset.
    response.raw_headers = [(b"content-length", str(len(case.body())).encode())] + [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in case.response_headers().items()
    ]
    return response


def create_app() -> Starlette:
    """``GET`` or ``POST /cases/{case_id}`` answers with that case as recorded."""
    return Starlette(routes=[Route("/cases/{case_id}", _serve_case, methods=["GET", "POST"])])
