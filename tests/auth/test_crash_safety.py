"""Crash safety of credentials, proven: a refresh SIGKILLed at random points, 100 times per provider and
credential file format, always leaves a valid file holding the old or the new token pair (never a mix,
never truncated), never a wedged lock nor an orphaned temp file, and the next start works.

Each refresh runs in its own process, forked from a helper process that has already imported ccproxy
(a fork takes a millisecond where a fresh interpreter takes ~300 ms), against the fake OAuth server
served by this test; the helper SIGKILLs it after a random delay spread over a refresh's whole duration.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from ccproxy.auth.codex import decode_jwt_claims
from ccproxy.auth.files import lock_path_for
from ccproxy.testing.fake_oauth import FakeOAuth, FakeProvider

from .helpers import soon, write_claude_file, write_codex_file

TRIALS = 100

# The helper: one line per trial on stdin ("<delay seconds>" or "-" for no kill), one line back:
# "<how it ended> <seconds the child ran>". A child exits 0 after a refresh (or a start) and 3 with a
# CredentialError (e.g. the refresh token was spent by a refresh that was killed before it saved).
HELPER = """
import asyncio, os, signal, sys, time
import aiohttp, ccproxy.auth.claude, ccproxy.auth.codex  # imported lazily by a refresh: import them once here
from ccproxy.auth import TokenManager, get_provider
from ccproxy.auth.credential import CredentialError
from ccproxy.testing.fake_oauth import fake_claude_settings, fake_codex_settings

provider, url = sys.argv[1], sys.argv[2]
settings = (fake_claude_settings if provider == "claude" else fake_codex_settings)(url)

async def child(mode):
    manager = TokenManager(get_provider(provider, settings), lock_timeout=5)
    try:
        await (manager.force_refresh() if mode == "refresh" else manager.get())
    except CredentialError as exc:
        print(exc.message, file=sys.stderr, flush=True)
        return 3
    return 0

for line in sys.stdin:
    mode, delay = line.split()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(asyncio.run(child(mode)))
    if delay != "-":
        time.sleep(float(delay))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    ran = time.monotonic() - started
    ended = f"signal{os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit{os.WEXITSTATUS(status)}"
    print(ended, f"{ran:.4f}", flush=True)
"""


class Format:
    """One credential file format: where it lives and how to read its token pair."""

    def __init__(self, provider: str, relative: str, top: dict[str, Any]) -> None:
        self.provider = provider
        self.relative = relative
        self.top = top  # keys the file holds besides ours: a refresh must keep them

    def seed(self, path: Path, fake: FakeProvider) -> None:
        tokens = fake.issue_tokens()
        if self.provider == "claude":
            write_claude_file(path, tokens, expires_at=soon(), **self.top)
        else:
            write_codex_file(path, tokens, **self.top)

    def pair(self, data: dict[str, Any]) -> tuple[int, int]:
        """The sequence numbers of the access and refresh token (equal for one token pair)."""
        if self.provider == "claude":
            oauth = data["claudeAiOauth"]
            return int(oauth["accessToken"].rsplit("-", 1)[1]), int(oauth["refreshToken"].rsplit("-", 1)[1])
        tokens = data["tokens"]
        jti = decode_jwt_claims(tokens["access_token"])["jti"]
        return int(jti.rsplit("-", 1)[1]), int(tokens["refresh_token"].rsplit("_", 1)[1])


FORMATS = {
    # Claude Code's own file, shared with the CLI: its other keys must survive.
    "claude-code": Format("claude", ".claude/.credentials.json", {"mcpOAuth": {"server": {"token": "m"}}}),
    # ccproxy's own stores (XDG_DATA_HOME/ccproxy), in the CLIs' shapes.
    "ccproxy-claude": Format("claude", "data/ccproxy/claude_credentials.json", {"mcpOAuth": {}}),
    "codex-cli": Format("codex", ".codex/auth.json", {"OPENAI_API_KEY": "sk-keep-me"}),
    "ccproxy-codex": Format("codex", "data/ccproxy/codex_auth.json", {"OPENAI_API_KEY": None}),
}


class Helper:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def run(self, mode: str, delay: float | None) -> tuple[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{mode} {'-' if delay is None else f'{delay:.5f}'}\n".encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        ended, ran = line.decode().split()
        return ended, float(ran)


def _lock_is_free(lock: Path) -> bool:
    if not lock.exists():
        return True
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", list(FORMATS))
async def test_sigkilled_refresh_leaves_old_or_new_pair(
    name: str, home: Path, oauth_url: str, fake: FakeOAuth
) -> None:
    fmt = FORMATS[name]
    provider = fake.provider(fmt.provider)
    path = home / fmt.relative
    fmt.seed(path, provider)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "CODEX_HOME": str(home / ".codex"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HELPER,
        fmt.provider,
        oauth_url,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    helper = Helper(proc)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    try:
        durations = []
        for _ in range(3):  # how long one whole refresh takes here, to spread the kills over it
            ended, ran = await helper.run("refresh", None)
            assert ended == "exit0"
            durations.append(ran)
        span = statistics.median(durations) * 1.6
        outcomes = {"old": 0, "new": 0, "lost-rotation": 0}
        for trial in range(TRIALS):
            before_raw = path.read_bytes()
            before = fmt.pair(json.loads(before_raw))
            issued_before = provider._seq
            delay = rng.uniform(0, span)
            ended, _ = await helper.run("refresh", delay)
            context = f"{name} trial {trial} (seed {seed}, kill after {delay * 1000:.1f} ms, {ended})"
            raw = path.read_bytes()
            data = json.loads(raw)  # valid JSON, whole: a truncated or torn file fails here
            access, refresh = fmt.pair(data)
            assert access != before[0] or raw == before_raw, f"old pair, but the file changed: {context}"
            assert access == refresh, f"mixed token pair: {context}"
            assert access == before[0] or issued_before < access <= provider._seq, context
            assert all(data[key] == value for key, value in fmt.top.items()), f"other keys lost: {context}"
            assert _lock_is_free(lock_path_for(path)), f"lock left held: {context}"
            if access != before[0]:
                outcomes["new"] += 1
            elif provider._seq > issued_before:
                # The server rotated the tokens but the process died before it could save them: the old
                # refresh token is spent (no client can close that window). The next start still works
                # cleanly: it serves the old access token while that is valid, or it says a new login is
                # needed (a CredentialError, exit 3), never a crash or a hang.
                outcomes["lost-rotation"] += 1
                ended, _ = await helper.run("start", None)
                assert ended in ("exit0", "exit3"), f"next start after a lost rotation: {context}"
                fmt.seed(path, provider)  # the user logs in again
            else:
                outcomes["old"] += 1
        # Kills landed before the server answered and after the file was replaced, not only one side.
        assert outcomes["old"] >= 3 and outcomes["new"] >= 3, outcomes
        ended, _ = await helper.run("refresh", None)
        assert ended == "exit0", "the next refresh works"
        ended, _ = await helper.run("start", None)
        assert ended == "exit0", "the next start works"
        data = json.loads(path.read_bytes())
        access, refresh = fmt.pair(data)
        assert access == refresh == provider._seq
        leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == [], "temp files of killed writers are removed by the next write"
        assert (path.stat().st_mode & 0o777) == 0o600
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
    print(name, outcomes, f"refresh ~{span / 1.6 * 1000:.0f} ms")
