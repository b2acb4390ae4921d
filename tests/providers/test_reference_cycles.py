"""The request path frees everything by reference counting: no cycles left for the garbage collector.

ccproxy.memory relies on this to run full collections rarely; a cycle per request would turn every
1,000-stream burst back into tens of milliseconds of collector stalls.
"""

from __future__ import annotations

import gc
import time
import types
from collections import Counter

import httpx

from .conftest import Fakes

USER = [{"role": "user", "content": "hello"}]
LONG = " ".join(f"word{i}" for i in range(400))


CALLS = [
    ("anthropic", "/api/v1/messages", {"model": "sonnet", "max_tokens": 9, "messages": USER}),
    ("anthropic", "/api/v1/chat/completions", {"model": "sonnet", "messages": USER}),
    ("anthropic", "/api/v1/responses", {"model": "sonnet", "input": "hi"}),
    ("codex", "/api/codex/v1/responses", {"model": "gpt-5.4", "input": "hi"}),
    ("codex", "/api/codex/v1/chat/completions", {"model": "gpt-5.4", "messages": USER}),
    ("codex", "/api/codex/v1/messages", {"model": "gpt-5.4", "max_tokens": 9, "messages": USER}),
]


def _traffic(url: str, fakes: Fakes) -> None:
    with httpx.Client(base_url=url, timeout=5) as http:
        for stream in (False, True):  # every translation, streaming and not
            for upstream, path, body in CALLS:
                getattr(fakes, upstream).reply_text("hi there")
                assert http.post(path, json={**body, "stream": stream}).status_code == 200, path
        fakes.anthropic.reply_error(400, "bad request", error_type="invalid_request_error")
        http.post("/api/v1/messages", json={"model": "sonnet", "max_tokens": 9, "messages": USER})
        http.post("/api/v1/messages", content=b"{not json")
        fakes.anthropic.reply_text(LONG, delay=0.02)  # the client leaves: the upstream connection is closed
        body = {"model": "sonnet", "max_tokens": 9, "messages": USER, "stream": True}
        with http.stream("POST", "/api/v1/messages", json=body) as resp:
            next(resp.iter_raw())
    time.sleep(0.3)  # let the server finish the abandoned stream


def _ours(obj: object) -> str | None:
    code = None
    if isinstance(obj, types.FrameType):
        code = obj.f_code
    elif isinstance(obj, types.CoroutineType):
        code = obj.cr_code
    elif isinstance(obj, types.AsyncGeneratorType):
        code = obj.ag_code
    if code is not None:
        path = code.co_filename
        return f"{code.co_name} ({path})" if "/ccproxy/" in path and "/testing/" not in path else None
    module = type(obj).__module__
    if module.startswith("ccproxy") and not module.startswith("ccproxy.testing"):
        return f"{module}.{type(obj).__qualname__}"
    return None


def test_requests_leave_no_reference_cycles(proxy: str, fakes: Fakes) -> None:
    _traffic(proxy, fakes)  # warm-up: first use imports modules and fills caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _traffic(proxy, fakes)
        gc.collect()
        found = Counter(name for name in map(_ours, gc.garbage) if name)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not found, f"reference cycles through ccproxy objects: {found.most_common(10)}"
